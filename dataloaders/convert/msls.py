"""MSLS's CSVs to the ground-truth files benchmark ``msls_val`` reads, for the val cities or any others.

Raw: the MSLS release (github.com/mapillary/mapillary_sls README, "Package structure"):
``<raw>/train_val/<city>/{query,database}/`` with ``images/<key>.jpg``, ``postprocessed.csv`` (key, easting,
northing, ...), ``raw.csv`` (key, lon, lat, ca, captured_at, pano), ``seq_info.csv`` (key, sequence_key,
frame_number) and ``subtask_index.csv`` (a True/False column per subtask: all, s2w, w2s, o2n, n2o, d2n, n2d),
all indexed by their first column.

Out: what the official code computes for image-to-image evaluation, ``MSLS(root, cities, mode='val',
task='im2im', subtask=<subtask>, posDistThr=25)`` of mapillary_sls/datasets/msls.py, written as the MixVPR
authors' files: per city in turn, the query frames whose row is in the subtask and not a panorama (raw.csv
``pano``), their image path ``train_val/<city>/query/images/<key>.jpg`` with the key of ``seq_info.csv``'s row;
the database frames likewise; positives the database images within 25 m of the query's easting/northing
(same city), in index order; only the queries with a positive in ``qIdx``.
``msls_val_dbImages.npy`` and ``msls_val_qImages.npy`` (str arrays), ``msls_val_qIdx.npy`` (int64) and
``msls_val_pIdx.npy`` (object array of int64 arrays) go into ``<out>``, with ``<out>/train_val`` a link to
the release's, so ``<out>`` is an MSLS root for ``--data.msls_root``. For other cities than cph and sf the
counts are not the published ones: evaluate them with ``--data.check_counts false``.

The MSLS test split (``msls_test``) is not converted: its image lists are the SALAD authors' files.
"""
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from utils.errors import DataError, NotFoundError

from ..eval.base import positives_within
from ..eval.msls import VAL_CITIES
from .links import prepare_output

SUBTASKS = ("all", "s2w", "w2s", "o2n", "n2o", "d2n", "n2d")
CSVS = ("postprocessed.csv", "raw.csv", "seq_info.csv", "subtask_index.csv")


def read_folder(raw: Path, city: str, part: str, subtask: str) -> tuple[list[str], np.ndarray]:
    """(image paths relative to ``raw``, (N, 2) easting/northing) of the frames of one city's ``part``
    (query or database) that the official val code keeps: in ``subtask``, not panoramas."""
    folder = raw / "train_val" / city / part
    missing = [f for f in CSVS if not (folder / f).is_file()]
    if missing:
        raise NotFoundError(f"msls_val: {missing} not found in {folder}: expected the MSLS release's train_val/<city>/"
                            f"{{query,database}}/ with {', '.join(CSVS)}")
    meta, info, seq, index = (pd.read_csv(folder / f, index_col=0) for f in CSVS)
    if subtask not in index.columns:
        raise DataError(f"msls_val: {folder}/subtask_index.csv has no column {subtask!r} (columns: {list(index.columns)})")
    if not (len(meta) == len(info) == len(seq) == len(index)):
        raise DataError(f"msls_val: the CSVs of {folder} list different numbers of images "
                        f"({len(meta)}, {len(info)}, {len(seq)}, {len(index)})")
    allowed = set(np.flatnonzero(index[subtask].astype(bool).values)) & set(
        np.flatnonzero(~info["pano"].astype(str).str.lower().eq("true").values))
    kept = [i for i in meta.index if i in allowed]
    keys = seq["key"].astype(str).values
    paths = [f"train_val/{city}/{part}/images/{keys[i]}.jpg" for i in kept]
    return paths, meta.loc[kept, ["easting", "northing"]].to_numpy(dtype=np.float64)


def convert(raw: Path, out: Path, link: str = "hard", cities: Sequence[str] = VAL_CITIES, subtask: str = "all",
            radius: float = 25.0) -> dict:
    """Write the msls_val_*.npy of ``cities`` (and the ``train_val`` link) into ``out``; returns the counts."""
    raw = Path(raw)
    if subtask not in SUBTASKS:
        raise DataError(f"msls_val: subtask {subtask!r}: choose one of {SUBTASKS}")
    db_images, q_images, q_idx, p_idx = [], [], [], []
    for city in cities:
        db, db_utm = read_folder(raw, city, "database", subtask)
        queries, q_utm = read_folder(raw, city, "query", subtask)
        for i, positives in enumerate(positives_within(db_utm, q_utm, radius) if len(db) and len(queries) else []):
            if len(positives):
                q_idx.append(len(q_images) + i)
                p_idx.append(np.sort(positives) + len(db_images))
        db_images += db
        q_images += queries
    out = prepare_output(out)
    (out / "train_val").symlink_to((raw / "train_val").resolve(), target_is_directory=True)
    pidx = np.empty(len(p_idx), dtype=object)
    for i, positives in enumerate(p_idx):
        pidx[i] = positives.astype(np.int64)
    np.save(out / "msls_val_dbImages.npy", np.array(db_images))
    np.save(out / "msls_val_qImages.npy", np.array(q_images))
    np.save(out / "msls_val_qIdx.npy", np.array(q_idx, dtype=np.int64))
    np.save(out / "msls_val_pIdx.npy", pidx, allow_pickle=True)
    return {"database": len(db_images), "queries": len(q_idx), "queries_without_positive": len(q_images) - len(q_idx)}
