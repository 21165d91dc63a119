"""MSLS validation (Warburg et al., CVPR 2020) as reported by MixVPR: 740 queries, cph + sf database."""
import pickle
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from utils.errors import DataError, NotFoundError

from ..image_io import check_files_exist
from .base import EvalDataset, Protocol, check_set

GT_FILES = ("msls_val_dbImages.npy", "msls_val_qImages.npy", "msls_val_qIdx.npy", "msls_val_pIdx.npy")
LAYOUT = ("<root>/msls_val_{dbImages,qImages,qIdx,pIdx}.npy with image paths relative to <root> "
          "(e.g. train_val/cph/database/images/<key>.jpg)")
# what a pickled object array of index arrays (pIdx) may name: numpy's array reconstruction, nothing else
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


def read_npy(path: Path) -> np.ndarray:
    """The array in the ``.npy`` file ``path``. Object arrays (MSLS's pIdx: one index array per query) are
    unpickled with numpy's array types only, so a file cannot run code. A truncated or foreign file
    raises DataError naming it."""
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
        raise DataError(f"msls_val: {path} holds pickled objects other than numpy arrays ({err}): loading it would run "
                        f"code, so it is not loaded. Restore {path.name} from the MSLS release.") from None
    except (ValueError, EOFError, OSError, pickle.UnpicklingError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"msls_val: {path} ({path.stat().st_size} bytes) is not a readable .npy file: truncated, "
                        f"still being written or another kind of file ({type(err).__name__}: {err}). Restore "
                        f"{path.name} from the MSLS release. Expected layout: {LAYOUT}") from None


def _as_strings(array: np.ndarray, path: Path) -> list[str]:
    """A 1-D array of image paths as strings; another shape or type raises DataError naming ``path``."""
    if array.ndim != 1 or array.dtype.kind not in "USO":
        raise DataError(f"msls_val: {path} should hold a 1-D array of image paths, not a {array.dtype} array of "
                        f"shape {array.shape}. Expected layout: {LAYOUT}")
    return [str(p) for p in array]


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
        db_images, q_images = _as_strings(read_npy(files[0]), files[0]), _as_strings(read_npy(files[1]), files[1])
        q_idx, p_idx = read_npy(files[2]), read_npy(files[3])
        if q_idx.ndim != 1 or q_idx.dtype.kind not in "iu":
            raise DataError(f"msls_val: {files[2]} should hold a 1-D array of integer indices into {GT_FILES[1]}, "
                            f"not a {q_idx.dtype} array of shape {q_idx.shape}")
        q_idx = q_idx.astype(np.int64)
        wrong = q_idx[(q_idx < 0) | (q_idx >= len(q_images))]
        if len(wrong):
            raise DataError(f"msls_val: {files[2]} holds {len(wrong)} index(es) outside 0..{len(q_images) - 1} "
                            f"(the {len(q_images)} queries of {GT_FILES[1]}), e.g. {int(wrong[0])}: the two files do "
                            f"not belong together; restore them from the same MSLS release")
        if len(p_idx) != len(q_idx):
            raise DataError(f"msls_val: {files[3]} has {len(p_idx)} entries but {GT_FILES[2]} has {len(q_idx)}: "
                            f"one list of positives per query is expected")
        gt = []
        for i, positives in enumerate(p_idx):
            positives = np.asarray(positives).ravel()
            if positives.size and (positives.dtype.kind not in "iu" or positives.min() < 0
                                   or positives.max() >= len(db_images)):
                raise DataError(f"msls_val: {files[3]} entry {i} holds {positives[:5].tolist()}, not indices into "
                                f"the {len(db_images)} database images of {GT_FILES[0]}: the files do not belong "
                                f"together; restore them from the same MSLS release")
            gt.append(positives.astype(np.int64))
        db_paths = [root / p for p in db_images]
        q_paths = [root / q_images[i] for i in q_idx]
        check_set("msls_val", db_images, [q_images[i] for i in q_idx], gt, f"{root}/msls_val_*.npy",
                  "Restore the msls_val_*.npy files from the MSLS release.")
        check_files_exist(db_paths + q_paths, "msls_val", LAYOUT)
        protocol = Protocol(f"the database images {GT_FILES[3]} lists for each of the {len(q_idx)} queries of "
                            f"{GT_FILES[2]} (MixVPR's protocol: the queries with a positive, 740 on the real "
                            f"set; the merged cph + sf database)", str(files[3]))
        super().__init__(name, db_paths, q_paths, gt, transform, protocol=protocol)
