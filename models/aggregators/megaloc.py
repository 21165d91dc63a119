"""MegaLoc's head (Berton & Masone, CVPR Workshops 2025): SALAD, then a linear layer and an L2-norm.

As the authors build it (gmberton/MegaLoc at 1af071c, ``megaloc_model.py``: ``MegaLoc.aggregator =
Aggregator(FeatureAggregator, nn.Linear)``, then ``l2norm``; the same at 3f6e01c, the first release)::

    agg     SALAD (models/aggregators/salad.py) with num_channels 768, 64 clusters of 256, a 256-d global token,
            hidden width 512, 3 Sinkhorn iterations: 64 * 256 + 256 = 16640 values, L2-normalised
    linear  Linear(16640, 8448)
            L2-norm

so it differs from SALAD's release (serizba/salad, 64 x 128 + 256 = 8448 values) in the clusters' width and the
final projection back to 8448. Its backbone is DINOv2 ViT-B/14 with its final norm and class token, all 12
blocks, and an image whose sides are not multiples of 14 is resized to the nearest multiples inside the forward
pass (``models.backbones.dinov2`` resize_to_patches). Layout: ``agg.<SALAD keys>``, ``linear.weight``,
``linear.bias``: the release's ``aggregator.*`` keys.
"""
from torch import Tensor, nn
from torch.nn import functional as F

from .salad import SALAD


class MegaLoc(nn.Module):
    """(B, C, H, W) map + (B, C) class token -> (B, out_dim) L2-normalised descriptor."""

    accepts_token = True  # takes the backbone's (map, class token), as SALAD

    def __init__(self, num_channels: int = 768, num_clusters: int = 64, cluster_dim: int = 256, token_dim: int = 256,
                 out_dim: int = 8448, dropout: float = 0.3):
        super().__init__()
        self.agg = SALAD(num_channels, num_clusters, cluster_dim, token_dim, dropout)
        self.linear = nn.Linear(self.agg.out_dim, out_dim)
        self.out_dim = out_dim

    def check_input(self, channels: int, height: int, width: int) -> None:
        """SALAD's check: more local features than clusters."""
        self.agg.check_input(channels, height, width)

    def forward(self, x: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        """(map, token) -> (B, out_dim)."""
        return F.normalize(self.linear(self.agg(x)), p=2, dim=-1)
