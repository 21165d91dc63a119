"""GeM: generalised-mean pooling (Radenovic et al., TPAMI 2018)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gem(x: Tensor, p: Tensor, eps: float = 1e-6) -> Tensor:
    """(B, C, H, W) -> (B, C): the spatial mean of ``x`` clamped at ``eps``, to the power ``p``, to the 1 / p."""
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class GeM(nn.Module):
    """(B, C, H, W) map -> (B, C) generalised mean, not normalised; the exponent ``p`` is learned (starts at 3)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C)."""
        return gem(x, self.p, self.eps)


class GeMPool(nn.Module):
    """(B, C, H, W) map -> (B, C) L2-normalised descriptor; the exponent p is learned."""

    def __init__(self, in_channels: int = 1024, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps
        self.out_dim = in_channels

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C)."""
        return F.normalize(gem(x, self.p, self.eps), p=2, dim=-1)
