"""The evaluation-set contract shared by all benchmarks: database first, then queries."""
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree

from utils.errors import DataError

from ..image_list import ImageList


class EvalDataset(ImageList):
    """Database images then query images, never shuffled.

    ``ground_truth[i]`` holds the database indices that are positives of query i; items are
    ``(image, index, readable)`` (see ``ImageList``: the decoded uint8 image through ``transform``, or with
    ``encoded`` the file's bytes) so descriptors can be put back in order after distribution. ``utm``:
    (east, north) metres of every image (database then queries) where the set records them (Pittsburgh,
    folder sets), else None; pictures show distances with it.
    """

    def __init__(self, name: str, db_paths: Sequence[Path], q_paths: Sequence[Path],
                 ground_truth: Sequence[np.ndarray], transform: Optional[Callable] = None,
                 skip_unreadable: bool = False, image_size: Optional[Sequence[int]] = None,
                 utm: Optional[np.ndarray] = None, encoded: bool = False):
        if len(ground_truth) != len(q_paths):
            raise DataError(f"{name}: {len(q_paths)} queries but ground truth for {len(ground_truth)}")
        if utm is not None and len(utm) != len(db_paths) + len(q_paths):
            raise DataError(f"{name}: {len(utm)} coordinates for {len(db_paths) + len(q_paths)} images")
        self.utm = None if utm is None else np.asarray(utm, dtype=np.float64)
        super().__init__([*db_paths, *q_paths], transform, skip_unreadable, image_size, encoded)
        self.name = name
        self.num_references = len(db_paths)
        self.num_queries = len(q_paths)
        self.ground_truth = list(ground_truth)

    @property
    def database_paths(self) -> list[str]:
        """Paths of the database images, in index order."""
        return self.images[: self.num_references]

    @property
    def query_paths(self) -> list[str]:
        """Paths of the query images, in query order."""
        return self.images[self.num_references:]


def positives_within(db_xy: np.ndarray, q_xy: np.ndarray, radius: float) -> np.ndarray:
    """Object array: for each query (M, 2) the database indices (of (N, 2)) within ``radius`` metres
    (inclusive), nearest first (ties by index)."""
    db_xy, q_xy = np.asarray(db_xy, dtype=np.float64), np.asarray(q_xy, dtype=np.float64)
    found = cKDTree(db_xy).query_ball_point(q_xy, r=radius)
    counts = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
    flat = np.fromiter((i for row in found for i in row), dtype=np.int64, count=int(counts.sum()))
    query = np.repeat(np.arange(len(found)), counts)
    distance = np.linalg.norm(db_xy[flat] - q_xy[query], axis=1)
    order = np.lexsort((flat, distance, query))
    out = np.empty(len(found), dtype=object)
    # element by element: a list of equal-length arrays would be broadcast as one 2-D array
    for i, positives in enumerate(np.split(flat[order], np.cumsum(counts)[:-1]) if len(found) else []):
        out[i] = positives
    return out
