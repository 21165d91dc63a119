"""Pittsburgh 30k/250k (Torii et al., CVPR 2013; splits of NetVLAD, Arandjelovic et al., CVPR 2016).

Formats, tried in this order in the root:
- NetVLAD's release: ``<root>/datasets/<split>.mat`` (or ``<root>/<split>.mat``), a dbStruct with fields
  whichSet, dbImageFns, utmDb, qImageFns, utmQ, numImages, numQueries, posDistThr (25), posDistSqThr,
  nonTrivPosDistSqThr; database images under ``<root>/`` (``000/000000_pitch1_yaw1.jpg``), queries under
  ``<root>/queries_real/``. Positives: database images within posDistThr (25 m) of the query, read from
  the file, not the 10 m nonTrivPosDistSqThr of training.
- VPR-datasets-downloader's layout (``format_pitts30k.py`` / ``format_pitts250k.py``, which move the
  images of each ``.mat`` split to ``images/{val,test}/{database,queries}`` named @UTM@...): positives
  within 25 m of the UTM coordinates in the names. Under ``--data.benchmarks_root`` these are the
  ``pitts30k`` and ``pitts250k`` folders.

Published counts (database / queries; the NetVLAD release's .mat files): pitts30k_val 10,000 / 7,608,
pitts30k_test 10,000 / 6,816, pitts250k_val 78,648 / 7,608, pitts250k_test 83,952 / 8,280.
"""
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from utils.errors import ConfigError, DataError, NotFoundError

from ..image_io import check_files_exist
from .base import EvalDataset, Protocol, check_positives, check_set, positives_within
from .folder import folder_format
from .registry import Benchmark, Format, register_benchmark

PITTSBURGH_SETS = ("pitts30k_val", "pitts30k_test", "pitts250k_val", "pitts250k_test")
LAYOUT = ("<root>/datasets/<name>.mat (NetVLAD dbStruct; or <root>/<name>.mat), database images under <root>/ "
          "(e.g. 000/000000_pitch1_yaw1.jpg) and queries under <root>/queries_real/")
FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
          "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")


def read_db_struct(mat_path: Path) -> dict:
    """The dbStruct of a NetVLAD ``.mat`` as a dict: file names as str lists, utm as (N, 2) arrays."""
    restore = f"Restore {mat_path.name} from the NetVLAD release (the datasets/ folder of Pittsburgh)."
    try:
        struct = loadmat(str(mat_path))["dbStruct"][0, 0]
    except (MatReadError, KeyError, ValueError, TypeError, IndexError, OSError, EOFError) as err:
        raise DataError(f"{mat_path} ({mat_path.stat().st_size} bytes) is not a NetVLAD dbStruct .mat file "
                        f"({type(err).__name__}: {err}); expected a dbStruct with fields {FIELDS}. {restore}") from None
    missing = [f for f in FIELDS if f not in (struct.dtype.names or ())]
    if missing:
        raise DataError(f"{mat_path}: dbStruct lacks fields {missing}; expected {FIELDS}. {restore}")
    names = lambda cell: [str(c[0]) for c in np.asarray(cell).ravel()]
    try:
        db = {
            "db_images": names(struct["dbImageFns"]),
            "utm_db": np.asarray(struct["utmDb"], dtype=np.float64).T,
            "q_images": names(struct["qImageFns"]),
            "utm_q": np.asarray(struct["utmQ"], dtype=np.float64).T,
            "pos_dist_thr": float(np.asarray(struct["posDistThr"]).ravel()[0]),
        }
    except (ValueError, TypeError, IndexError) as err:
        raise DataError(f"{mat_path}: malformed dbStruct ({type(err).__name__}: {err}). {restore}") from None
    for part, images in (("utm_db", "db_images"), ("utm_q", "q_images")):
        utm = db[part]
        if utm.shape != (len(db[images]), 2) or not np.isfinite(utm).all():
            raise DataError(f"{mat_path}: {'utmDb' if part == 'utm_db' else 'utmQ'} should hold 2 finite UTM "
                            f"coordinates per image ({len(db[images])} images), got shape {utm.shape[::-1]}"
                            f"{'' if np.isfinite(utm).all() else ' with NaN or infinite values'}. {restore}")
    return db


def find_mat(root: Path, name: str) -> Path:
    """The ``.mat`` of set ``name`` under ``root``, with an error naming the paths tried."""
    tried = [root / "datasets" / f"{name}.mat", root / f"{name}.mat"]
    for path in tried:
        if path.is_file():
            return path
    raise NotFoundError(f"{name}: ground truth not found, tried {[str(p) for p in tried]}. Expected layout: "
                            f"{LAYOUT}. Set --data.pitts_root or the PITTSBURGH_ROOT environment variable.")


class PittsburghDataset(EvalDataset):
    """A Pittsburgh split; positives are database images within ``posDistThr`` (25 m) of the query, read from
    the split's ``.mat`` (or ``pos_dist_thr`` when given) and stated in the set's protocol record."""

    def __init__(self, root: str | Path, name: str = "pitts30k_test", transform: Optional[Callable] = None,
                 pos_dist_thr: Optional[float] = None):
        root = Path(root)
        if name not in PITTSBURGH_SETS:
            raise ConfigError(f"unknown Pittsburgh split {name!r}; choose one of {PITTSBURGH_SETS}")
        if not root.is_dir():
            raise NotFoundError(f"{name}: Pittsburgh root {root} is not a folder. Expected layout: {LAYOUT}. "
                                    f"Set --data.pitts_root or the PITTSBURGH_ROOT environment variable.")
        mat = find_mat(root, name)
        db = read_db_struct(mat)
        # the paper's positives: posDistThr (25 m), not the 10 m nonTrivPosDistSqThr used in training
        if pos_dist_thr is None:
            radius, origin = db["pos_dist_thr"], f"posDistThr of {mat}"
            if not (np.isfinite(radius) and radius > 0):
                raise DataError(f"{name}: {mat} gives posDistThr = {radius:g}: the positive radius must be a positive "
                                f"number of metres (NetVLAD's files give 25); with it every recall would be 0 %. "
                                f"Restore {mat.name} from the NetVLAD release (the datasets/ folder of Pittsburgh).")
        else:
            radius, origin = float(pos_dist_thr), f"given pos_dist_thr; the file's posDistThr is {db['pos_dist_thr']:g}"
            if not (np.isfinite(radius) and radius > 0):
                raise ConfigError(f"{name}: pos_dist_thr={pos_dist_thr}: a positive number of metres")
        db_paths = [root / p for p in db["db_images"]]
        q_paths = [root / "queries_real" / p for p in db["q_images"]]
        restore = f"Restore {mat.name} from the NetVLAD release (the datasets/ folder of Pittsburgh)."
        check_set(name, db["db_images"], db["q_images"], [], str(mat), restore)
        check_files_exist(db_paths + q_paths, name, LAYOUT)
        ground_truth = positives_within(db["utm_db"], db["utm_q"], radius)
        check_set(name, [], [], ground_truth, f"{mat} (positives within {radius:g} m)", restore)
        check_positives(name, ground_truth, len(db_paths), radius, f"the utmDb/utmQ coordinates of {mat}")
        protocol = Protocol(f"database images within {radius:g} m ({origin})", str(mat), float(radius))
        super().__init__(name, db_paths, q_paths, ground_truth, transform,
                         utm=np.concatenate([db["utm_db"], db["utm_q"]]), protocol=protocol)


# split -> (title, published (database, queries) counts, downloader folder)
_SPLITS = {"pitts30k_val": ("Pitts30k-val", (10_000, 7_608), "pitts30k"),
           "pitts30k_test": ("Pitts30k-test", (10_000, 6_816), "pitts30k"),
           "pitts250k_val": ("Pitts250k-val", (78_648, 7_608), "pitts250k"),
           "pitts250k_test": ("Pitts250k-test", (83_952, 8_280), "pitts250k")}
for _name, (_title, _counts, _folder) in _SPLITS.items():
    _part = "val" if _name.endswith("_val") else "test"
    _variants = tuple((counts, f"the {other} split (--benchmarks {other})") for other, (_, counts, _) in _SPLITS.items()
                      if other != _name and counts != _counts)
    register_benchmark(Benchmark(
        name=_name, title=_title,
        citation="Torii et al., Visual Place Recognition with Repetitive Structures, CVPR 2013 / TPAMI 2015; "
                 "splits and .mat files of NetVLAD (Arandjelovic et al., CVPR 2016)",
        protocol="database images within 25 m (UTM) of the query: posDistThr of the split's .mat",
        root="pitts_root", env="PITTSBURGH_ROOT", subfolders=(_folder,),
        formats=(Format(LAYOUT, lambda root, n=_name: (root / "datasets" / f"{n}.mat").is_file() or (root / f"{n}.mat").is_file(),
                        lambda root, tf, n=_name: PittsburghDataset(root, n, tf)),
                 folder_format(_name, (f"images/{_part}/database", f"images/{_part}/queries"))),
        counts=_counts, counts_source="the NetVLAD release's dbStruct of the split", variants=_variants,
        # pitts250k_val's counts are from the NetVLAD paper, not yet compared with its .mat here
        counts_verified=_name != "pitts250k_val"))
