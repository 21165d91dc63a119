"""BoQ: Bag-of-Queries (Ali-bey, Chaib-draa & Giguère, CVPR 2024).

A 3x3 convolution projects the C-channel map to D = proj_channels, the H*W positions become tokens
(LayerNorm). Each of L blocks refines the tokens with a transformer encoder layer and probes them with
its own Q learned queries: the queries attend to each other (residual + LayerNorm), then cross-attend
to the tokens (LayerNorm on the result). The L x Q query outputs are concatenated, a linear layer maps
the L*Q axis to row_dim, and the (D x row_dim) result is flattened channel-major and L2-normalised:
D * row_dim values. Attention uses heads of 64 channels (D // 64 heads).

State-dict layout (torch's modules: post-norm encoder, ReLU, feed-forward 4D, no dropout)::

    proj_c                      Conv2d(C, D, 3, padding=1)
    norm_input                  LayerNorm(D)
    boqs.<i>.encoder.*          TransformerEncoderLayer: self_attn.{in_proj_weight (3D, D), in_proj_bias,
                                out_proj}, linear1 (4D, D), linear2 (D, 4D), norm1, norm2
    boqs.<i>.queries            (1, Q, D)
    boqs.<i>.self_attn.*        MultiheadAttention(D): in_proj_weight, in_proj_bias, out_proj
    boqs.<i>.norm_q             LayerNorm(D)
    boqs.<i>.cross_attn.*       MultiheadAttention(D)
    boqs.<i>.norm_out           LayerNorm(D)
    fc                          Linear(L * Q, row_dim)

Releases: ResNet50 (cropped after layer3, C=1024) with D=512, Q=64, L=2, row_dim=32 (16384-d), and
DINOv2 ViT-B/14 (C=768, no final norm, no class token) with D=384, Q=64, L=2, row_dim=32 (12288-d).
``attention_maps`` gives each block's cross-attention (the authors' visualisation); ``forward`` does
not compute it.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utils.errors import ConfigError

HEAD_DIM = 64


class BoQBlock(nn.Module):
    """Encoder layer over the tokens, then Q learned queries that self-attend and cross-attend to them."""

    def __init__(self, dim: int, num_queries: int, num_heads: int):
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=4 * dim, dropout=0.0,
                                                  batch_first=True)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim))
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """(B, N, D) tokens -> (refined tokens (B, N, D), query outputs (B, Q, D), cross-attention
        (B, Q, N) averaged over heads, or None without need_weights)."""
        x = self.encoder(x)
        q = self.queries.expand(x.shape[0], -1, -1)
        q = self.norm_q(q + self.self_attn(q, q, q, need_weights=False)[0])
        out, attention = self.cross_attn(q, x, x, need_weights=need_weights)
        return x, self.norm_out(out), attention


class BoQ(nn.Module):
    """(B, in_channels, H, W) map -> (B, proj_channels * row_dim) L2-normalised descriptor."""

    def __init__(self, in_channels: int = 1024, proj_channels: int = 512, num_queries: int = 32,
                 num_layers: int = 2, row_dim: int = 32):
        super().__init__()
        num_heads = proj_channels // HEAD_DIM
        if num_heads < 1 or proj_channels % num_heads:
            fit = max(HEAD_DIM, round(proj_channels / HEAD_DIM) * HEAD_DIM)
            raise ConfigError(f"BoQ proj_channels={proj_channels}: attention uses proj_channels // {HEAD_DIM} heads, "
                             f"so it must be at least {HEAD_DIM} and divisible by that head count; use e.g. {fit} "
                             f"(the releases use 384 and 512)")
        self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        self.boqs = nn.ModuleList(BoQBlock(proj_channels, num_queries, num_heads) for _ in range(num_layers))
        self.fc = nn.Linear(num_layers * num_queries, row_dim)
        self.out_dim = proj_channels * row_dim

    def _aggregate(self, x: Tensor, need_weights: bool) -> tuple[Tensor, list]:
        tokens = self.norm_input(self.proj_c(x).flatten(2).transpose(1, 2))      # (B, H*W, D)
        outs, attentions = [], []
        for block in self.boqs:
            tokens, out, attention = block(tokens, need_weights)
            outs.append(out)
            attentions.append(attention)
        rows = self.fc(torch.cat(outs, dim=1).transpose(1, 2))                 # (B, D, row_dim)
        return F.normalize(rows.flatten(1), p=2, dim=-1), attentions

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, proj_channels * row_dim)."""
        return self._aggregate(x, need_weights=False)[0]

    @torch.no_grad()
    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """Cross-attention of each block's queries over the map: num_layers tensors of (B, num_queries, H, W),
        averaged over heads; each query's map sums to 1."""
        _, attentions = self._aggregate(x, need_weights=True)
        return [a.unflatten(-1, x.shape[-2:]) for a in attentions]
