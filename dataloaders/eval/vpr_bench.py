"""Sets in VPR-Bench's layout with the ground-truth files the SALAD authors publish (Nordland, SPED).

VPR-Bench (Zaffar et al., IJCV 2021) distributes each set as ``<root>/ref/`` (database) and
``<root>/query/`` images numbered ``0000000.jpg``...; the SALAD authors (serizba/salad, ``datasets/<Set>/``)
publish, per set, the image lists and the positives they evaluate with, "exactly the same as if you use
VPR-Bench" (their loaders' note):

- ``<Set>_dbImages.npy``: 1-D str array of database paths relative to the set's root (``ref/0000000.jpg``);
- ``<Set>_qImages.npy``: 1-D str array of query paths (``query/0000000.jpg``);
- ``<Set>_gt.npy``: per query, the database indices that are positives: an object array of int64 arrays
  (Nordland) or a 2-D int64 array with one row per query (SPED: (607, 1), the exact match).

Here those three files sit in the set's root next to ``ref/`` and ``query/``; the database is the
dbImages list in order, then the queries of qImages, and the positives are the gt file's, read as numpy
arrays only (``npy.read_npy``).
"""
from pathlib import Path
from typing import Callable, Optional

from utils.errors import NotFoundError

from ..image_io import check_files_exist
from .base import EvalDataset, Protocol, check_set
from .npy import as_index_lists, as_paths, read_npy
from .registry import Format

SALAD_FILES = "github.com/serizba/salad, datasets/{prefix}/"


def layout(prefix: str) -> str:
    """The VPR-Bench layout of a set whose ground-truth files start with ``prefix`` ('Nordland'), in words."""
    return (f"<root>/ref/*.jpg (database), <root>/query/*.jpg (queries) and the SALAD authors' {prefix}_dbImages.npy, "
            f"{prefix}_qImages.npy, {prefix}_gt.npy in <root> (from {SALAD_FILES.format(prefix=prefix)})")


def gt_files(root: Path, prefix: str) -> list[Path]:
    """The three ground-truth files of set ``prefix`` under ``root``: database list, query list, positives."""
    return [root / f"{prefix}_{part}.npy" for part in ("dbImages", "qImages", "gt")]


class VPRBenchDataset(EvalDataset):
    """A VPR-Bench-layout set (``ref/``, ``query/``) with the published ``<prefix>_{dbImages,qImages,gt}.npy``.

    ``rule`` describes the positives the files hold (written into the protocol with the file's path)."""

    def __init__(self, root: str | Path, prefix: str, name: str, rule: str, setting: str,
                 transform: Optional[Callable] = None):
        root = Path(root)
        where = layout(prefix)
        files = gt_files(root, prefix)
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise NotFoundError(f"{name}: ground-truth file(s) {missing} not found in {root}. Expected layout: {where}. "
                                f"Set --data.{setting} to the folder holding ref/, query/ and the files.")
        restore = f"the SALAD authors' {SALAD_FILES.format(prefix=prefix)}"
        read = lambda path: read_npy(path, name, restore, where)
        db_images = as_paths(read(files[0]), files[0], name, where)
        q_images = as_paths(read(files[1]), files[1], name, where)
        fix = f"Restore the three {prefix}_*.npy files together from {restore}."
        gt = as_index_lists(read(files[2]), files[2], len(q_images), len(db_images), name, fix)
        check_set(name, db_images, q_images, gt, str(files[2]), fix)
        db_paths, q_paths = [root / p for p in db_images], [root / p for p in q_images]
        check_files_exist(db_paths + q_paths, name, where)
        super().__init__(name, db_paths, q_paths, gt, transform,
                         protocol=Protocol(f"the database images {files[2].name} lists for each query ({rule})",
                                           str(files[2])))


def vpr_bench_format(prefix: str, name: str, rule: str, setting: str) -> Format:
    """The VPR-Bench layout as a registry ``Format``: present when ``<prefix>_gt.npy`` is in the root."""
    return Format(layout(prefix), lambda root: gt_files(root, prefix)[2].is_file(),
                  lambda root, transform: VPRBenchDataset(root, prefix, name, rule, setting, transform))
