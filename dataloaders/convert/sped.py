"""SPED from its raw release to the layout benchmark ``sped`` reads.

Raw (the ``SPEDTEST.zip`` of VPR-Bench's share, as VPR-datasets-downloader's ``download_sped.py`` unpacks it):
``<raw>/ref/*.jpg`` and ``<raw>/query/*.jpg``, one database and one query image per place, the same file
name in both folders (download_sped.py asserts it). Out: VPR-Bench's layout with the ground-truth files in
the SALAD authors' format (``dataloaders.eval.vpr_bench``): ``<out>/ref/``, ``<out>/query/`` (links),
``SPED_dbImages.npy`` and ``SPED_qImages.npy`` (the ``ref/<name>`` and ``query/<name>`` paths in sorted
order, str arrays) and ``SPED_gt.npy`` ((N, 1) int64: query i's positive is database image i).
"""
from pathlib import Path

import numpy as np

from utils.errors import DataError, NotFoundError

from ..image_io import IMAGE_EXTENSIONS
from .links import link_files, prepare_output


def convert(raw: Path, out: Path, link: str = "hard") -> dict:
    """Convert ``raw`` (ref/, query/) into ``out``; returns {'database': N, 'queries': N}."""
    raw = Path(raw)
    names = {}
    for part in ("ref", "query"):
        folder = raw / part
        if not folder.is_dir():
            raise NotFoundError(f"sped: {folder} not found: expected the SPEDTEST release's ref/ and query/ folders")
        names[part] = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if names["ref"] != names["query"] or not names["ref"]:
        only = sorted(set(names["ref"]) ^ set(names["query"]))[:3]
        raise DataError(f"sped: {raw}/ref and {raw}/query should hold the same file names (one pair per place); "
                        f"{'they differ, e.g. ' + str(only) if only else 'they are empty'}")
    out = prepare_output(out)
    link_files(((raw / part / n, out / part / n) for part in ("ref", "query") for n in names[part]), link)
    np.save(out / "SPED_dbImages.npy", np.array([f"ref/{n}" for n in names["ref"]]))
    np.save(out / "SPED_qImages.npy", np.array([f"query/{n}" for n in names["query"]]))
    np.save(out / "SPED_gt.npy", np.arange(len(names["ref"]), dtype=np.int64).reshape(-1, 1))
    return {"database": len(names["ref"]), "queries": len(names["query"])}
