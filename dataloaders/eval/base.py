"""The evaluation-set contract shared by all benchmarks: database first, then queries."""
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from sklearn.neighbors import NearestNeighbors
from torch.utils.data import Dataset

from ..image_io import decode_rgb, read_bytes


class EvalDataset(Dataset):
    """Database images then query images, never shuffled.

    ``ground_truth[i]`` holds the database indices that are positives of query i;
    items are ``(image, index)`` so descriptors can be put back in order after distribution.
    The image is the decoded uint8 (3, h, w) file passed through ``transform`` (e.g.
    ``transforms.EvalTransform``: uint8 (3, H, W)); with ``encoded`` set, the file's bytes as a 1-D uint8
    tensor, for decoding on the device (``transforms.EncodedCollate``).
    """

    def __init__(self, name: str, db_paths: Sequence[Path], q_paths: Sequence[Path],
                 ground_truth: Sequence[np.ndarray], transform: Optional[Callable] = None, encoded: bool = False):
        if len(ground_truth) != len(q_paths):
            raise ValueError(f"{name}: {len(q_paths)} queries but ground truth for {len(ground_truth)}")
        self.name = name
        self.images = [*map(str, db_paths), *map(str, q_paths)]
        self.num_references = len(db_paths)
        self.num_queries = len(q_paths)
        self.ground_truth = list(ground_truth)
        self.transform = transform
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        path = self.images[index]
        if self.encoded:
            return read_bytes(path), index
        img = decode_rgb(read_bytes(path), path)
        if self.transform is not None:
            img = self.transform(img)
        return img, index

    @property
    def database_paths(self) -> list[str]:
        """Paths of the database images, in index order."""
        return self.images[: self.num_references]

    @property
    def query_paths(self) -> list[str]:
        """Paths of the query images, in query order."""
        return self.images[self.num_references:]


def positives_within(db_xy: np.ndarray, q_xy: np.ndarray, radius: float) -> np.ndarray:
    """Object array: for each query (M, 2) the database indices (of (N, 2)) within ``radius`` metres, nearest first."""
    knn = NearestNeighbors(n_jobs=-1).fit(db_xy)
    _, idx = knn.radius_neighbors(q_xy, radius=radius, sort_results=True)
    out = np.empty(len(idx), dtype=object)
    out[:] = [np.asarray(i, dtype=np.int64) for i in idx]
    return out
