"""MSLS test and the MSLS challenge (Warburg et al., CVPR 2020): no public labels, predictions only.

Set: the six test cities (miami, athens, buenosaires, stockholm, bengaluru, kampala) as the SALAD authors
evaluate them (github.com/serizba/salad ``datasets/msls_test/``, read by its ``MSLSTest`` dataset):
``msls_test_dbImages.npy`` (36,565 database paths, ``test/<city>/database/images/<key>.jpg``, relative to the
MSLS root) and ``msls_test_qImages.npy`` (1,135 query paths, ``test/<city>/query/images/<key>.jpg``), object
arrays of str, both in the MSLS root.

Result: the prediction file the challenge server and the MSLS authors' ``evaluate.py``
(github.com/mapillary/mapillary_sls) read with ``np.loadtxt(path, ndmin=2, dtype=str)``: one line per query,
its key (the file name without ``.jpg``) then the keys of its ranked database images, separated by single
spaces, every query once, no key twice on a line; lines starting with ``#`` are comments. SALAD's writer
gives the top 25 (its eval.py's largest K); so does ``write_challenge_file``.
"""
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from utils.errors import DataError, NotFoundError
from utils.files import atomic_write_text

from ..image_io import check_files_exist
from .base import EvalDataset, Protocol, check_set
from .msls import MSLS_CITATION
from .npy import as_paths, read_npy
from .registry import Benchmark, Format, register_benchmark

FILES = ("msls_test_dbImages.npy", "msls_test_qImages.npy")
LAYOUT = ("<root>/msls_test_dbImages.npy and msls_test_qImages.npy (the SALAD authors' datasets/msls_test/) with "
          "image paths relative to the MSLS root <root> (test/<city>/{database,query}/images/<key>.jpg)")
CHALLENGE_TOP = 25  # predictions per query in the file: SALAD's writer (its eval.py's largest K)


class MSLSTestDataset(EvalDataset):
    """MSLS test: the database of ``msls_test_dbImages.npy``, then the queries of ``msls_test_qImages.npy``;
    no positives (``labelled`` is False): eval.py writes predictions and the challenge file, no recall."""

    def __init__(self, root: str | Path, transform: Optional[Callable] = None, name: str = "msls_test"):
        root = Path(root)
        missing = [f for f in FILES if not (root / f).is_file()]
        if missing:
            raise NotFoundError(f"{name}: file(s) {missing} not found in {root}. Expected layout: {LAYOUT}. Set "
                                f"--data.msls_root or the MSLS_ROOT environment variable.")
        restore = "the SALAD authors' datasets/msls_test/ (github.com/serizba/salad)"
        db_images, q_images = (as_paths(read_npy(root / f, name, restore, LAYOUT), root / f, name, LAYOUT)
                               for f in FILES)
        no_labels = [np.zeros(0, dtype=np.int64) for _ in q_images]
        check_set(name, db_images, q_images, [], f"{root}/msls_test_*.npy", f"Restore them from {restore}.")
        keys = challenge_keys(db_images), challenge_keys(q_images)
        for part, k in zip(("database", "queries"), keys):
            if len(set(k)) != len(k):
                raise DataError(f"{name}: two {part} images share a key (file name) in {root}: the challenge file "
                                f"names images by key. Restore the files from {restore}.")
        db_paths, q_paths = [root / p for p in db_images], [root / p for p in q_images]
        check_files_exist(db_paths + q_paths, name, LAYOUT)
        super().__init__(name, db_paths, q_paths, no_labels, transform,
                         protocol=Protocol("none public: the challenge server scores the predictions",
                                           str(root / FILES[1]), scoring="predictions"))


def challenge_keys(paths: Sequence[str]) -> list[str]:
    """The MSLS keys of image paths: the file names without their extension."""
    return [Path(p).stem for p in paths]


def write_challenge_file(dataset: EvalDataset, predictions: np.ndarray, path: Path) -> Path:
    """The MSLS challenge prediction file of ``dataset``'s queries: line i is query i's key, then the keys of
    its ranked predictions (``predictions``: (M, K) database indices, best first), space separated."""
    predictions = np.asarray(predictions)
    if predictions.shape[0] != dataset.num_queries:
        raise ValueError(f"{len(predictions)} prediction rows for {dataset.num_queries} queries")
    db_keys = np.array(challenge_keys(dataset.database_paths))
    lines = [f"{q} {' '.join(db_keys[row])}\n" for q, row in zip(challenge_keys(dataset.query_paths), predictions)]
    atomic_write_text(path, "".join(lines))
    return path


def check_challenge_file(path: Path, query_keys: Sequence[str], database_keys: Sequence[str]) -> np.ndarray:
    """The predictions of a challenge file, read as the MSLS authors' evaluate.py reads it
    (``np.loadtxt(ndmin=2, dtype=str)``); ValueError unless every query is there once, every prediction is a
    database key and no line repeats a key: what that script asserts before scoring."""
    rows = np.loadtxt(path, ndmin=2, dtype=str)
    queries = set(query_keys)
    if sorted(rows[:, 0]) != sorted(queries) or len(set(rows[:, 0])) != len(rows):
        raise ValueError(f"{path}: the first column should hold every query key once")
    if not np.isin(rows[:, 1:], np.asarray(list(database_keys))).all():
        raise ValueError(f"{path}: predictions that are not database keys")
    if any(len(set(r[1:])) != len(r) - 1 for r in rows):
        raise ValueError(f"{path}: a line names a database key twice")
    return rows


register_benchmark(Benchmark(
    name="msls_test", title="MSLS-challenge",
    citation=MSLS_CITATION + "; image lists of SALAD (Izquierdo and Civera, CVPR 2024, github.com/serizba/salad "
             "datasets/msls_test)",
    protocol="the MSLS test cities' queries against their database, labels not public: the challenge server "
             "scores the prediction file (top 25 per query)",
    root="msls_root", env="MSLS_ROOT", subfolders=("mapillary_sls",),
    formats=(Format(LAYOUT, lambda root: (root / FILES[0]).is_file(), lambda root, tf: MSLSTestDataset(root, tf)),),
    counts=(36_565, 1_135), counts_source="msls_test_dbImages.npy and msls_test_qImages.npy of the SALAD repository",
    scoring="predictions"))
