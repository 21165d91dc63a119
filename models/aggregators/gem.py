"""GeM: generalised-mean pooling (Radenovic et al., TPAMI 2018)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GeMPool(nn.Module):
    """(B, C, H, W) map -> (B, C) L2-normalised descriptor; the exponent p is learned."""

    def __init__(self, in_channels: int = 1024, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps
        self.out_dim = in_channels

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C)."""
        x = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)
        return F.normalize(x, p=2, dim=-1)
