"""CosPlace head: L2-norm, GeM, linear projection, L2-norm (Berton et al., CVPR 2022)."""
import torch.nn.functional as F
from torch import Tensor, nn

from .gem import GeMPool


class CosPlace(nn.Module):
    """(B, in_channels, H, W) map -> (B, out_dim) L2-normalised descriptor."""

    def __init__(self, in_channels: int = 1024, out_dim: int = 512):
        super().__init__()
        self.gem = GeMPool(in_channels)
        self.fc = nn.Linear(in_channels, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out_dim)."""
        x = self.gem(F.normalize(x, p=2, dim=1))
        return F.normalize(self.fc(x), p=2, dim=-1)
