"""MSLS validation (Warburg et al., CVPR 2020), in the two protocols tables use.

- ``msls_val``, as MixVPR, BoQ and SALAD report it (R@1 88.2 for MixVPR-4096): the ground truth the MixVPR
  authors publish in their repository's ``datasets/msls_val/`` (amaralibey/MixVPR; the same files in
  serizba/salad): ``msls_val_dbImages.npy`` (18,871 paths relative to the MSLS root,
  ``train_val/{cph,sf}/database/images/<key>.jpg``, one merged database), ``msls_val_qImages.npy`` (747
  query paths), ``msls_val_qIdx.npy`` (the 740 indices into qImages of queries with a positive) and
  ``msls_val_pIdx.npy`` (object array: per qIdx entry, the database indices within 25 m). These are what
  the official code (mapillary_sls ``MSLS(mode='val', task='im2im', subtask='all', posDistThr=25)``,
  panoramas excluded) computes; the files hold them so nothing is recomputed.
- ``msls_val_all``: every non-panorama val query against every non-panorama val database image, positives
  within 25 m: what VPR-datasets-downloader's ``format_mapillary.py`` makes of the release (about 11k
  queries; the CosPlace/EigenPlaces tables' MSLS-val) and what SelaVPR's README warns is not the 740-query
  set. Read from the MSLS release's CSVs (``train_val/<city>/{query,database}/postprocessed.csv``: key,
  easting, northing; ``raw.csv``: key, lon, lat, ca, captured_at, pano) or from the downloader's
  ``images/val/{database,queries}`` folders (under ``--data.benchmarks_root``: ``msls``).
"""
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from utils.errors import DataError, NotFoundError

from ..image_io import check_files_exist
from .base import EvalDataset, Protocol, check_positives, check_set, positives_within
from .folder import folder_format
from .npy import as_index_lists, as_paths, read_npy
from .registry import Benchmark, Format, register_benchmark

GT_FILES = ("msls_val_dbImages.npy", "msls_val_qImages.npy", "msls_val_qIdx.npy", "msls_val_pIdx.npy")
LAYOUT = ("<root>/msls_val_{dbImages,qImages,qIdx,pIdx}.npy with image paths relative to <root> "
          "(e.g. train_val/cph/database/images/<key>.jpg)")


class MSLSValDataset(EvalDataset):
    """MSLS-val: the merged database, then the queries listed in ``qIdx`` (those that have a positive).

    Evaluating every val query instead gives a different, lower number; this is the 740-query protocol.
    """

    def __init__(self, root: str | Path, transform: Optional[Callable] = None, name: str = "msls_val"):
        root = Path(root)
        missing = [f for f in GT_FILES if not (root / f).is_file()]
        if missing:
            raise NotFoundError(f"msls_val: ground-truth file(s) {missing} not found in {root}. Expected layout: "
                                f"{LAYOUT}. Set --data.msls_root or the MSLS_ROOT environment variable.")
        files = [root / f for f in GT_FILES]
        read = lambda path: read_npy(path, "msls_val", "the MSLS release (or the MixVPR authors' datasets/msls_val/)",
                                     LAYOUT)
        db_images = as_paths(read(files[0]), files[0], "msls_val", LAYOUT)
        q_images = as_paths(read(files[1]), files[1], "msls_val", LAYOUT)
        q_idx, p_idx = read(files[2]), read(files[3])
        if q_idx.ndim != 1 or q_idx.dtype.kind not in "iu":
            raise DataError(f"msls_val: {files[2]} should hold a 1-D array of integer indices into {GT_FILES[1]}, "
                            f"not a {q_idx.dtype} array of shape {q_idx.shape}")
        q_idx = q_idx.astype(np.int64)
        wrong = q_idx[(q_idx < 0) | (q_idx >= len(q_images))]
        if len(wrong):
            raise DataError(f"msls_val: {files[2]} holds {len(wrong)} index(es) outside 0..{len(q_images) - 1} "
                            f"(the {len(q_images)} queries of {GT_FILES[1]}), e.g. {int(wrong[0])}: the two files do "
                            f"not belong together; restore them from the same MSLS release")
        gt = as_index_lists(p_idx, files[3], len(q_idx), len(db_images), "msls_val",
                            f"{GT_FILES[2]} and {GT_FILES[0]} must come from the same MSLS release; restore them")
        db_paths = [root / p for p in db_images]
        q_paths = [root / q_images[i] for i in q_idx]
        check_set("msls_val", db_images, [q_images[i] for i in q_idx], gt, f"{root}/msls_val_*.npy",
                  "Restore the msls_val_*.npy files from the MSLS release.")
        check_files_exist(db_paths + q_paths, "msls_val", LAYOUT)
        protocol = Protocol(f"the database images {GT_FILES[3]} lists for each of the {len(q_idx)} queries of "
                            f"{GT_FILES[2]} (MixVPR's protocol: the queries with a positive, 740 on the real "
                            f"set; the merged cph + sf database)", str(files[3]))
        super().__init__(name, db_paths, q_paths, gt, transform, protocol=protocol)


VAL_CITIES = ("cph", "sf")
RELEASE_LAYOUT = ("the MSLS release: <root>/train_val/<city>/{query,database}/images/<key>.jpg with postprocessed.csv "
                  "(key, easting, northing, ...) and raw.csv (key, lon, lat, ca, captured_at, pano) per folder")


def read_city_part(folder: Path, what: str) -> tuple[list[Path], np.ndarray]:
    """(image paths, (N, 2) easting/northing) of one MSLS folder (``<city>/query`` or ``<city>/database``), the
    panoramas of raw.csv left out as the official evaluation and VPR-datasets-downloader leave them out."""
    try:
        meta = pd.read_csv(folder / "postprocessed.csv", index_col=0, dtype={"key": str})
        raw = pd.read_csv(folder / "raw.csv", index_col=0, dtype={"key": str})
    except (OSError, ValueError) as err:
        raise DataError(f"{what}: cannot read the CSVs of {folder} ({type(err).__name__}: {err}). Expected layout: "
                        f"{RELEASE_LAYOUT}") from None
    missing = [c for c, df in (("key", meta), ("easting", meta), ("northing", meta), ("key", raw), ("pano", raw))
               if c not in df.columns]
    if missing or len(meta) != len(raw) or not (meta["key"].values == raw["key"].values).all():
        raise DataError(f"{what}: {folder}/postprocessed.csv and raw.csv should list the same keys in the same order "
                        f"with columns key, easting, northing and key, pano{f' (missing {missing})' if missing else ''}. "
                        f"Restore them from the MSLS release.")
    keep = ~raw["pano"].astype(str).str.lower().eq("true").values
    utm = meta[["easting", "northing"]].to_numpy(dtype=np.float64)[keep]
    return [folder / "images" / f"{key}.jpg" for key in meta["key"].values[keep]], utm


class MSLSAllQueriesDataset(EvalDataset):
    """MSLS-val with every non-panorama query (``msls_val_all``): per city, the queries of
    ``train_val/<city>/query`` against the merged database of ``train_val/<city>/database``, positives within
    ``radius`` metres of the CSVs' easting/northing and only in the query's own city (cph and sf lie in
    different UTM zones). Queries without a positive stay in the denominator as misses."""

    def __init__(self, root: str | Path, transform: Optional[Callable] = None, cities=VAL_CITIES,
                 radius: float = 25.0, name: str = "msls_val_all"):
        root = Path(root)
        db_paths, q_paths, db_utm, q_utm, db_city, q_city = [], [], [], [], [], []
        for c, city in enumerate(cities):
            for part, paths, utms, owner in (("database", db_paths, db_utm, db_city), ("query", q_paths, q_utm, q_city)):
                folder = root / "train_val" / city / part
                if not folder.is_dir():
                    raise NotFoundError(f"{name}: {folder} not found. Expected layout: {RELEASE_LAYOUT}. Set "
                                        f"--data.msls_root or MSLS_ROOT to the MSLS root.")
                found, utm = read_city_part(folder, name)
                paths += found
                utms.append(utm)
                owner += [c] * len(found)
        db_utm, q_utm = np.concatenate(db_utm), np.concatenate(q_utm)
        # each city moved 10,000 km from the others: eastings of two UTM zones cannot be compared
        shift = lambda utm, city: utm + np.stack([np.asarray(city) * 1e7, np.zeros(len(city))], axis=1)
        gt = positives_within(shift(db_utm, db_city), shift(q_utm, q_city), radius)
        check_set(name, db_paths, q_paths, gt, f"the CSVs under {root}/train_val", "Restore them from the MSLS release.")
        check_positives(name, gt, len(db_paths), radius, f"the CSVs under {root}/train_val")
        check_files_exist(db_paths + q_paths, name, RELEASE_LAYOUT)
        protocol = Protocol(f"database images within {radius:g} m (easting/northing of postprocessed.csv, the query's "
                            f"city only), every non-panorama query of {', '.join(cities)}", str(root / "train_val"),
                            float(radius))
        super().__init__(name, db_paths, q_paths, gt, transform,
                         utm=np.concatenate([db_utm, q_utm]), protocol=protocol)


MSLS_CITATION = ("Warburg et al., Mapillary Street-Level Sequences: A Dataset for Lifelong Place Recognition, "
                 "CVPR 2020")
register_benchmark(Benchmark(
    name="msls_val", title="MSLS-val", citation=MSLS_CITATION + "; ground truth files of MixVPR (Ali-bey et al., "
    "WACV 2023, github.com/amaralibey/MixVPR datasets/msls_val)",
    protocol="the 740 val queries that have a positive (of 747, panoramas excluded) against the merged cph + sf "
             "database; positives within 25 m, listed in msls_val_pIdx.npy",
    root="msls_root", env="MSLS_ROOT", subfolders=("mapillary_sls",),
    formats=(Format(LAYOUT, lambda root: (root / GT_FILES[0]).is_file(), lambda root, tf: MSLSValDataset(root, tf)),),
    counts=(18_871, 740), counts_source="msls_val_dbImages.npy and msls_val_qIdx.npy of the MixVPR repository",
    variants=(((18_871, 747), "every query of msls_val_qImages.npy instead of the 740 of msls_val_qIdx.npy"),)))
register_benchmark(Benchmark(
    name="msls_val_all", title="MSLS-val (all queries)", citation=MSLS_CITATION + "; the version of "
    "VPR-datasets-downloader's format_mapillary.py (Berton et al., CVPR 2022)",
    protocol="every non-panorama val query (cph + sf, about 11k) against every non-panorama val database image, "
             "positives within 25 m: a different, lower number than msls_val's 740 queries",
    root="msls_root", env="MSLS_ROOT", subfolders=("msls", "mapillary_sls"),
    formats=(Format(RELEASE_LAYOUT, lambda root: (root / "train_val" / VAL_CITIES[0] / "query").is_dir(),
                    lambda root, tf: MSLSAllQueriesDataset(root, tf)),
             folder_format("msls_val_all", ("images/val/database", "images/val/queries"))),
    counts_source="not published exactly (about 11k queries): the counts found are written into the results"))
