"""How alike two models see the same images: agreement of their pairwise similarities (for distillation)."""
import numpy as np
from scipy.stats import rankdata

from .errors import ConfigError


def similarity_agreement(student: np.ndarray, teacher: np.ndarray, k: int = 10) -> dict[str, float]:
    """How alike two descriptor sets of the same N images rank and score the pairs of images.

    (N, Ds) and (N, Dt) descriptors (any sizes; L2-normalised here) -> ``mse``: mean squared difference of
    the off-diagonal entries of the two N x N cosine-similarity matrices (0 when identical); ``pearson``
    and ``spearman``: their correlation over the N (N - 1) / 2 pairs (1 when identical, ~0 for unrelated
    descriptors); ``topk_overlap``: mean over images of |top-k neighbours by the student ∩ by the teacher|
    / k, the image itself excluded (1 when identical, ~k / N by chance).
    """
    if student.ndim != 2 or teacher.ndim != 2 or len(student) != len(teacher):
        raise ConfigError(f"need descriptors of the same images, got {student.shape} and {teacher.shape}")
    n = len(student)
    if n < k + 2:
        raise ConfigError(f"need more than {k + 1} images for top-{k} neighbour overlap, got {n}")
    sims = []
    for d in (student, teacher):
        d = np.asarray(d, dtype=np.float64)
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        sims.append(d @ d.T)
    upper = np.triu_indices(n, k=1)
    a, b = sims[0][upper], sims[1][upper]
    mse = float(np.mean((a - b) ** 2))
    pearson = float(np.corrcoef(a, b)[0, 1])
    spearman = float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])
    neighbours = []
    for s in sims:
        s = s.copy()
        np.fill_diagonal(s, -np.inf)
        neighbours.append(np.argpartition(-s, k, axis=1)[:, :k])
    # one integer key per (image, neighbour) pair turns the per-row set intersection into one np.isin
    keys = [np.arange(n)[:, None] * n + nb for nb in neighbours]
    overlap = float(np.isin(keys[0], keys[1]).sum() / (n * k))
    return {"mse": mse, "pearson": pearson, "spearman": spearman, "topk_overlap": overlap}
