"""MSLS validation (Warburg et al., CVPR 2020) as reported by MixVPR: 740 queries, cph + sf database."""
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..image_io import check_files_exist
from .base import EvalDataset

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
            raise FileNotFoundError(f"msls_val: ground-truth file(s) {missing} not found in {root}. Expected layout: "
                                    f"{LAYOUT}. Set --data.msls_root or the MSLS_ROOT environment variable.")
        db_images = np.load(root / GT_FILES[0])
        q_images = np.load(root / GT_FILES[1])
        q_idx = np.load(root / GT_FILES[2]).astype(np.int64)
        p_idx = np.load(root / GT_FILES[3], allow_pickle=True)
        if len(p_idx) != len(q_idx):
            raise ValueError(f"msls_val: {GT_FILES[3]} has {len(p_idx)} entries but {GT_FILES[2]} has {len(q_idx)}")
        db_paths = [root / str(p) for p in db_images]
        q_paths = [root / str(q_images[i]) for i in q_idx]
        check_files_exist(db_paths + q_paths, "msls_val", LAYOUT)
        gt = [np.asarray(p, dtype=np.int64).ravel() for p in p_idx]
        super().__init__(name, db_paths, q_paths, gt, transform)
