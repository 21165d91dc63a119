"""MixVPR: feature-mixer aggregation (Ali-bey et al., WACV 2023)."""
import torch.nn.functional as F
from torch import Tensor, nn


class FeatureMixerLayer(nn.Module):
    """Residual MLP over the flattened spatial axis: x + MLP(LayerNorm(x))."""

    def __init__(self, in_dim: int, mlp_ratio: float = 1):
        super().__init__()
        hidden = int(in_dim * mlp_ratio)
        self.mix = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, in_dim))
        for m in self.mix.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H*W) -> (B, C, H*W)."""
        return x + self.mix(x)


class MixVPR(nn.Module):
    """(B, in_channels, in_h, in_w) map -> (B, out_channels * out_rows) L2-normalised descriptor."""

    def __init__(self, in_channels: int = 1024, in_h: int = 20, in_w: int = 20, out_channels: int = 512,
                 mix_depth: int = 1, mlp_ratio: float = 1, out_rows: int = 4):
        super().__init__()
        self.in_h, self.in_w = in_h, in_w
        hw = in_h * in_w
        self.mix = nn.Sequential(*[FeatureMixerLayer(hw, mlp_ratio) for _ in range(mix_depth)])
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(hw, out_rows)
        self.out_dim = out_channels * out_rows

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) feature map -> (B, out_rows * out_channels) L2-normalised descriptor."""
        if x.shape[-2:] != (self.in_h, self.in_w):
            raise ValueError(f"MixVPR was built for a {self.in_h} x {self.in_w} feature map but got "
                             f"{x.shape[-2]} x {x.shape[-1]}: feed images of the size the model was built for")
        x = self.mix(x.flatten(2))                      # (B, C, H*W)
        x = self.channel_proj(x.permute(0, 2, 1))        # (B, H*W, out_channels)
        x = self.row_proj(x.permute(0, 2, 1))            # (B, out_channels, out_rows)
        return F.normalize(x.flatten(1), p=2, dim=-1)
