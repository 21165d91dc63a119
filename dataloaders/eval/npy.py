"""Ground truth published as ``.npy`` files (MSLS-val by the MixVPR authors; Nordland, SPED and MSLS-test by the
SALAD authors), read as numpy arrays only: an object array (one index array per query, or one path per image)
is unpickled with numpy's array types and nothing else, so a file cannot run code."""
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.errors import DataError

# what a pickled object array may name: numpy's array reconstruction, nothing else
ARRAY_GLOBALS = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct",)} | {
    ("numpy", "ndarray"), ("numpy", "dtype")}


class _Refused(pickle.UnpicklingError):
    """A pickled object that is not a numpy array: it would run code when loaded."""


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and refuses every other global: no pickled code runs."""

    def find_class(self, module: str, name: str):
        if (module, name) in ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name} is not a numpy array")


def read_npy(path: Path, what: str = "msls_val", restore: str = "the MSLS release", layout: str = "") -> np.ndarray:
    """The array in the ``.npy`` file ``path``. Object arrays (MSLS's pIdx: one index array per query; SALAD's
    msls_test image lists) are unpickled with numpy's array types only, so a file cannot run code. A truncated
    or foreign file raises DataError naming it, the set (``what``) and where to restore it from."""
    path = Path(path)
    hint = f" Expected layout: {layout}" if layout else ""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                return np.load(path)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(f)
            if not dtype.hasobject:
                return np.load(path)
            array = _ArraysOnly(f).load()
        if not isinstance(array, np.ndarray):
            raise ValueError(f"it holds a {type(array).__name__}, not an array")
        return array
    except _Refused as err:
        raise DataError(f"{what}: {path} holds pickled objects other than numpy arrays ({err}): loading it would run "
                        f"code, so it is not loaded. Restore {path.name} from {restore}.") from None
    except (ValueError, EOFError, OSError, pickle.UnpicklingError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"{what}: {path} ({path.stat().st_size} bytes) is not a readable .npy file: truncated, "
                        f"still being written or another kind of file ({type(err).__name__}: {err}). Restore "
                        f"{path.name} from {restore}.{hint}") from None


def as_paths(array: np.ndarray, path: Path, what: str, layout: str) -> list[str]:
    """A 1-D array of image paths as strings; another shape or type raises DataError naming ``path``."""
    if array.ndim != 1 or array.dtype.kind not in "USO":
        raise DataError(f"{what}: {path} should hold a 1-D array of image paths, not a {array.dtype} array of "
                        f"shape {array.shape}. Expected layout: {layout}")
    return [str(p) for p in array]


def as_index_lists(array: np.ndarray, path: Path, num_queries: int, num_references: int, what: str,
                   fix: str) -> list[np.ndarray]:
    """One int64 array of database indices per query from a published ground truth: an object array of index
    arrays (MSLS's pIdx, Nordland_gt.npy) or a 2-D integer array, one row per query (SPED_gt.npy). A wrong
    number of entries or an index outside the database raises DataError naming ``path``."""
    if array.dtype.kind in "iu" and array.ndim == 2:
        rows: Sequence = list(array)
    elif array.dtype == object and array.ndim == 1:
        rows = list(array)
    else:
        raise DataError(f"{what}: {path} should hold one array of database indices per query (an object array, or "
                        f"a 2-D integer array), not a {array.dtype} array of shape {array.shape}. {fix}")
    if len(rows) != num_queries:
        raise DataError(f"{what}: {path} has {len(rows)} entries but there are {num_queries} queries: one list of "
                        f"positives per query is expected. {fix}")
    out = []
    for i, positives in enumerate(rows):
        positives = np.asarray(positives).ravel()
        if positives.size and (positives.dtype.kind not in "iu" or positives.min() < 0
                               or positives.max() >= num_references):
            raise DataError(f"{what}: {path} entry {i} holds {positives[:5].tolist()}, not indices into the "
                            f"{num_references} database images: the files do not belong together. {fix}")
        out.append(positives.astype(np.int64))
    return out
