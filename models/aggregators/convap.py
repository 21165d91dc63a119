"""Conv-AP: 1x1 channel projection then adaptive average pooling (Ali-bey et al., GSV-Cities 2022)."""
import torch.nn.functional as F
from torch import Tensor, nn


class ConvAP(nn.Module):
    """(B, in_channels, H, W) map -> (B, out_channels * s1 * s2) L2-normalised descriptor."""

    def __init__(self, in_channels: int = 1024, out_channels: int = 512, s1: int = 2, s2: int = 2):
        super().__init__()
        self.channel_proj = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d((s1, s2))
        self.out_dim = out_channels * s1 * s2

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out_channels * s1 * s2)."""
        return F.normalize(self.pool(self.channel_proj(x)).flatten(1), p=2, dim=-1)
