"""SALAD: Sinkhorn Algorithm for Locally Aggregated Descriptors (Izquierdo & Civera, CVPR 2024).

Local features f_i (n of them, C channels) are scored against m clusters; an optimal-transport plan with
an extra "dustbin" row (a learned constant score z) assigns each feature's mass to clusters or discards
it. The plan comes from Sinkhorn iterations in log space (3 iterations, as the authors' model calls it,
regularisation 1): row masses 1/(n+m) for each cluster and (n-m)/(n+m) for the dustbin, column masses
1/(n+m) for each feature. The descriptor concatenates the L2-normalised global token (g channels) and
the m x l aggregated cluster features, each cluster's vector (over l) L2-normalised, flattened
channel-major (index = channel * m + cluster), and is L2-normalised as a whole: m * l + g values.

State-dict layout (hidden width 512 fixed by the authors)::

    token_features.0    Linear(C, 512)            .1 ReLU   .2 Linear(512, g)
    cluster_features.0  Conv2d(C, 512, 1)         .1 Dropout .2 ReLU .3 Conv2d(512, l, 1)
    score.0             Conv2d(C, 512, 1)         .1 Dropout .2 ReLU .3 Conv2d(512, m, 1)
    dust_bin            scalar, starts at 1

Input: a DINOv2 backbone's ``(map, class token)`` with ``return_token=True``; on a backbone without a
token (a CNN) the global token is the feature map's spatial mean (our choice; the authors pair SALAD
with DINOv2 only).
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utils.errors import ConfigError

SINKHORN_ITERATIONS = 3
HIDDEN = 512


def log_optimal_transport(scores: Tensor, dustbin: Tensor, num_iters: int = SINKHORN_ITERATIONS) -> Tensor:
    """(B, m, n) cluster-feature scores -> (B, m + 1, n) log of the transport plan scaled by n + m (so a
    feature's column sums to 1), the last row being the dustbin. Needs n > m."""
    b, m, n = scores.shape
    couplings = torch.cat([scores, dustbin.to(scores.dtype).expand(b, 1, n)], dim=1)
    log_norm = -math.log(n + m)
    log_rows = torch.full((m + 1,), log_norm, dtype=scores.dtype, device=scores.device)
    log_rows[-1] += math.log(n - m)
    log_cols = torch.full((n,), log_norm, dtype=scores.dtype, device=scores.device)
    u = torch.zeros(b, m + 1, dtype=scores.dtype, device=scores.device)
    v = torch.zeros(b, n, dtype=scores.dtype, device=scores.device)
    for _ in range(num_iters):
        u = log_rows - torch.logsumexp(couplings + v[:, None, :], dim=2)
        v = log_cols - torch.logsumexp(couplings + u[:, :, None], dim=1)
    return couplings + u[:, :, None] + v[:, None, :] - log_norm


class SALAD(nn.Module):
    """(B, C, H, W) map [+ (B, C) token] -> (B, num_clusters * cluster_dim + token_dim) L2-normalised descriptor."""

    accepts_token = True  # takes the backbone's (map, class token)

    def __init__(self, num_channels: int = 1536, num_clusters: int = 64, cluster_dim: int = 128,
                 token_dim: int = 256, dropout: float = 0.3):
        super().__init__()
        self.num_channels, self.num_clusters, self.cluster_dim, self.token_dim = (
            num_channels, num_clusters, cluster_dim, token_dim)
        drop = lambda: nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.token_features = nn.Sequential(nn.Linear(num_channels, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, token_dim))
        self.cluster_features = nn.Sequential(nn.Conv2d(num_channels, HIDDEN, 1), drop(), nn.ReLU(),
                                              nn.Conv2d(HIDDEN, cluster_dim, 1))
        self.score = nn.Sequential(nn.Conv2d(num_channels, HIDDEN, 1), drop(), nn.ReLU(),
                                   nn.Conv2d(HIDDEN, num_clusters, 1))
        self.dust_bin = nn.Parameter(torch.tensor(1.0))
        self.out_dim = num_clusters * cluster_dim + token_dim

    def check_input(self, channels: int, height: int, width: int) -> None:
        """Raise unless a (channels, height, width) map has more local features than clusters (the
        dustbin takes the remaining n - m of the mass)."""
        n = height * width
        if n <= self.num_clusters:
            raise ConfigError(
                f"SALAD with num_clusters={self.num_clusters} needs more local features than clusters, but a "
                f"{height} x {width} map has {n}: use larger images (more than {self.num_clusters} patches, "
                f"e.g. 224 x 224 for a DINOv2 backbone: 16 x 16 = 256) or num_clusters below {n}")

    def forward(self, x: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        """(B, C, H, W) map, or (map, (B, C) token) -> (B, num_clusters * cluster_dim + token_dim)."""
        feature_map, token = x if isinstance(x, (tuple, list)) else (x, x.mean(dim=(2, 3)))
        self.check_input(*feature_map.shape[1:])
        local = self.cluster_features(feature_map).flatten(2)             # (B, l, n)
        scores = self.score(feature_map).flatten(2)                       # (B, m, n)
        assignment = log_optimal_transport(scores, self.dust_bin).exp()[:, :-1]   # (B, m, n), dustbin dropped
        clusters = torch.einsum("bln,bmn->blm", local, assignment)        # (B, l, m)
        return F.normalize(torch.cat([
            F.normalize(self.token_features(token), p=2, dim=-1),
            F.normalize(clusters, p=2, dim=1).flatten(1),
        ], dim=-1), p=2, dim=-1)
