"""NetVLAD: soft-assignment residual aggregation (Arandjelovic et al., CVPR 2016)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class NetVLAD(nn.Module):
    """(B, in_channels, H, W) map -> (B, num_clusters * in_channels) L2-normalised descriptor.

    Centroids start random; ``init_from_features`` sets them (and the assignment conv) from
    sampled local features the way the paper initialises them, with k-means centres.
    """

    def __init__(self, in_channels: int = 1024, num_clusters: int = 64, alpha: float = 100.0):
        super().__init__()
        self.alpha = alpha
        self.conv = nn.Conv2d(in_channels, num_clusters, kernel_size=1, bias=True)
        self.centroids = nn.Parameter(torch.rand(num_clusters, in_channels))
        self.out_dim = num_clusters * in_channels
        self._init_assignment()

    def _init_assignment(self) -> None:
        c = F.normalize(self.centroids.data, dim=1)
        self.conv.weight.data.copy_((2.0 * self.alpha * c)[..., None, None])
        self.conv.bias.data.copy_(-self.alpha * c.norm(dim=1))

    @torch.no_grad()
    def init_from_features(self, centroids: Tensor) -> None:
        """Set the (num_clusters, in_channels) centroids, e.g. k-means centres of local features."""
        self.centroids.data.copy_(centroids)
        self._init_assignment()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, K * C)."""
        x = F.normalize(x, p=2, dim=1)
        soft = F.softmax(self.conv(x).flatten(2), dim=1)                 # (B, K, N)
        feats = x.flatten(2)                                             # (B, C, N)
        # sum_n a_kn (x_n - c_k) = (A X^T)_k - (sum_n a_kn) c_k
        vlad = torch.bmm(soft, feats.transpose(1, 2)) - soft.sum(-1, keepdim=True) * self.centroids
        vlad = F.normalize(vlad, p=2, dim=2)                             # intra-normalisation
        return F.normalize(vlad.flatten(1), p=2, dim=-1)
