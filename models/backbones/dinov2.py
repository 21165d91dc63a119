"""DINOv2 vision transformers (Oquab et al., TMLR 2024) as VPR backbones, with the official state_dict keys.

Our own implementation of the architecture of the official torch.hub models (facebookresearch/dinov2,
``dinov2_vit{s,b,l,g}14``: patch 14, layer scale, no register tokens, blocks not chunked), so that the
official weights and the releases built on them (SALAD's ``backbone.model.*``) load strictly.

Layout of a model with width D, depth L and FFN hidden width H (all float32)::

    cls_token              (1, 1, D)
    pos_embed              (1, 1 + 37 * 37, D)     the grid of a 518 x 518 image (37 = 518 / 14)
    mask_token             (1, D)                  masked-image pre-training only; unused here
    patch_embed.proj       weight (D, 3, 14, 14), bias (D,)   conv, kernel = stride = 14
    blocks.<i>.norm1       weight, bias (D,)       LayerNorm, eps 1e-6 (as every norm here)
    blocks.<i>.attn.qkv    weight (3D, D), bias (3D,)   q, k, v stacked in that order, heads of D / heads
    blocks.<i>.attn.proj   weight (D, D), bias (D,)
    blocks.<i>.ls1.gamma   (D,)                    layer scale of the attention branch
    blocks.<i>.norm2       weight, bias (D,)
    blocks.<i>.mlp.fc1     weight (4D, D), bias    MLP (GELU, exact erf) ...
    blocks.<i>.mlp.fc2     weight (D, 4D), bias
    blocks.<i>.mlp.w12     weight (2H, D), bias    ... or SwiGLU (ViT-g): silu(first half) * second half,
    blocks.<i>.mlp.w3      weight (D, H), bias         H = (int(4D * 2 / 3) + 7) // 8 * 8 (4096 for D=1536)
    blocks.<i>.ls2.gamma   (D,)
    norm                   weight, bias (D,)

Block: ``x + ls1 * attn(norm1(x))`` then ``x + ls2 * mlp(norm2(x))``. Tokens: [class, patches row-major].
Sizes (D, L, heads, FFN): vits14 (384, 12, 6, MLP), vitb14 (768, 12, 12, MLP), vitl14 (1024, 24, 16, MLP),
vitg14 (1536, 40, 24, SwiGLU). Weights: ``https://dl.fbaipublicfiles.com/dinov2/<name>/<name>_pretrain.pth``.

Position embeddings at another grid (rows x cols patches): the 37 x 37 patch part is resized bicubically
(no antialiasing, align_corners False) with the scale factors ``(rows + 0.1) / 37`` and
``(cols + 0.1) / 37``, as the official implementation does; the 0.1 moves the sampling positions, so
asking for the output size instead gives other values. The embedding is used as stored only for a
37 x 37 grid. The class token's embedding is never resized.
"""
import contextlib
import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from utils.errors import ConfigError

from .imagenet_weights import load_pretrained_weights

PATCH_SIZE = 14
POS_GRID = 37  # the position embedding's grid: 518 x 518 pre-training images
# 23 x 23 patches: the size SALAD and BoQ evaluate their releases at (320, the CNNs' default, does not divide by 14)
DEFAULT_IMAGE_SIZE = (322, 322)
WEIGHTS_URL = "https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth"


def patch_multiple(side: int) -> int:
    """The multiple of the patch size nearest to ``side`` (Python's round: a half rounds to the even multiple)."""
    return round(side / PATCH_SIZE) * PATCH_SIZE


class ViTSize(NamedTuple):
    """Width, depth, attention heads and feed-forward kind of a DINOv2 model."""
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"  # "mlp" or "swiglu"


DINOV2_ARCHS = {
    "dinov2_vits14": ViTSize(384, 12, 6),
    "dinov2_vitb14": ViTSize(768, 12, 12),
    "dinov2_vitl14": ViTSize(1024, 24, 16),
    "dinov2_vitg14": ViTSize(1536, 40, 24, "swiglu"),
}


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch."""

    def __init__(self, dim: int, init: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with one stacked q/k/v projection."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)               # (B, heads, N, D / heads)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer feed-forward network with GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """Gated feed-forward network: w3(silu(a) * b) with a, b the two halves of w12(x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        # DINOv2's rule: two thirds of the MLP width, rounded up to a multiple of 8
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Block(nn.Module):
    """Pre-norm transformer block with layer scale on both residual branches."""

    def __init__(self, dim: int, num_heads: int, ffn: str = "mlp", mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = (SwiGLU if ffn == "swiglu" else Mlp)(dim, mlp_ratio * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens."""

    def __init__(self, dim: int, patch_size: int = PATCH_SIZE):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, H/14 * W/14, D), row-major."""
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """The DINOv2 ViT trunk; attribute names give the official state_dict keys (see the module docstring)."""

    def __init__(self, size: ViTSize, pos_grid: int = POS_GRID):
        super().__init__()
        d = size.embed_dim
        self.embed_dim, self.depth, self.pos_grid = d, size.depth, pos_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, d))
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.patch_embed = PatchEmbed(d)
        self.blocks = nn.ModuleList(Block(d, size.num_heads, size.ffn) for _ in range(size.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        # the official initialisation, so that pretrained=False starts from a comparable random model
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def position_embedding(self, rows: int, cols: int, dtype: torch.dtype) -> Tensor:
        """(1, 1 + rows * cols, D) position embedding for a rows x cols patch grid (class token first)."""
        g = self.pos_grid
        if rows == cols == g:
            return self.pos_embed
        pos = self.pos_embed.float()
        patch_pos = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        # scale factors, not sizes: the official offset of 0.1 changes the bicubic sampling positions
        patch_pos = F.interpolate(patch_pos, scale_factor=((rows + 0.1) / g, (cols + 0.1) / g),
                                  mode="bicubic", antialias=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([pos[:, :1], patch_pos], dim=1).to(dtype)

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) image -> (B, 1 + H/14 * W/14, D) class and patch tokens with position embedding."""
        rows, cols = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.position_embedding(rows, cols, tokens.dtype)


class DINOv2(nn.Module):
    """DINOv2 ViT backbone: (B, 3, H, W) image -> (B, D, H/14, W/14) patch-token map [, (B, D) class token].

    H and W must be multiples of 14. Settings (SALAD's names):
      num_trainable_blocks: the last N of the model's blocks train (0 .. depth). The patch embedding and
        the other blocks are frozen and run under ``torch.no_grad``, storing no activations; with
        N = depth everything trains.
      return_token: also return the class token, as ``(map, token)`` (SALAD uses it).
      norm_layer: apply the final LayerNorm to the tokens (SALAD: yes; BoQ: no).
      resize_to_patches: an image whose sides are not multiples of 14 is first resized to the nearest
        multiples (Python's ``round(side / 14) * 14``), bilinear and antialiased, as MegaLoc's own forward
        does (after the normalisation); otherwise such an image is an error.
    Parameters the forward never uses (``mask_token``; ``norm`` without norm_layer) are frozen, so that
    distributed training needs no unused-parameter search. ``out_channels`` = D, ``stride`` = 14;
    ``default_image_size`` (322 x 322) is the size of a model built without one.
    """

    FIRST_KEY = "model.cls_token"  # in every state_dict of this class: how weights are matched to it
    default_image_size = DEFAULT_IMAGE_SIZE

    def __init__(self, model_name: str = "dinov2_vitb14", pretrained: bool = False, num_trainable_blocks: int = 2,
                 return_token: bool = False, norm_layer: bool = False, resize_to_patches: bool = False):
        super().__init__()
        size = DINOV2_ARCHS[model_name]
        if not (isinstance(num_trainable_blocks, int) and 0 <= num_trainable_blocks <= size.depth):
            raise ConfigError(f"num_trainable_blocks={num_trainable_blocks!r} for {model_name}: use 0..{size.depth} "
                             f"(the last N of its {size.depth} blocks train; 0 freezes all)")
        self.model_name = model_name
        self.model = VisionTransformer(size)
        if pretrained:
            self.load_pretrained()
        self.num_trainable_blocks = num_trainable_blocks
        self.return_token = return_token
        self.norm_layer = norm_layer
        self.resize_to_patches = resize_to_patches
        self.out_channels = size.embed_dim
        self.stride = PATCH_SIZE
        self.num_frozen_blocks = size.depth - num_trainable_blocks
        # activation checkpointing (``enable_activation_checkpointing``): trainable blocks recomputed in backward
        self.checkpoint_blocks = False
        self.model.mask_token.requires_grad_(False)
        self.model.norm.requires_grad_(norm_layer)
        if self.num_frozen_blocks:
            for frozen in (self.model.cls_token, self.model.pos_embed, self.model.patch_embed,
                           *self.model.blocks[:self.num_frozen_blocks]):
                frozen.requires_grad_(False)

    def load_pretrained(self) -> None:
        """Load the official DINOv2 weights (torch.hub's cache, else downloaded once)."""
        load_pretrained_weights(self.model, WEIGHTS_URL.format(name=self.model_name), self.model_name,
                                kind="DINOv2 (LVD-142M) weights")

    def feature_map_shape(self, image_size: Sequence[int]) -> tuple[int, int, int]:
        """(D, H/14, W/14) for an image of ``image_size`` = (H, W); raises unless both divide by 14 (with
        resize_to_patches: the nearest multiples of 14)."""
        h, w = (int(s) for s in image_size)
        if self.resize_to_patches:
            h, w = patch_multiple(h), patch_multiple(w)
        if h % PATCH_SIZE or w % PATCH_SIZE:
            fit = lambda n: sorted({max(PATCH_SIZE, n // PATCH_SIZE * PATCH_SIZE),
                                    math.ceil(n / PATCH_SIZE) * PATCH_SIZE})
            raise ConfigError(f"{self.model_name} needs image sizes divisible by its patch size {PATCH_SIZE}; got "
                             f"{h} x {w}. Use a height of {' or '.join(map(str, fit(h)))} and a width of "
                             f"{' or '.join(map(str, fit(w)))} (e.g. 224 x 224 or 322 x 322)")
        return self.out_channels, h // PATCH_SIZE, w // PATCH_SIZE

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> (B, D, H/14, W/14) map, or (map, (B, D) class token) with return_token."""
        _, rows, cols = self.feature_map_shape(x.shape[-2:])
        if tuple(x.shape[-2:]) != (rows * PATCH_SIZE, cols * PATCH_SIZE):  # resize_to_patches
            x = F.interpolate(x, size=(rows * PATCH_SIZE, cols * PATCH_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)
        frozen = self.model.blocks[:self.num_frozen_blocks]
        with torch.no_grad() if self.num_frozen_blocks else contextlib.nullcontext():
            tokens = self.model.prepare_tokens(x)
            for block in frozen:
                tokens = block(tokens)
        for block in self.model.blocks[self.num_frozen_blocks:]:
            if self.checkpoint_blocks and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
        if self.norm_layer:
            tokens = self.model.norm(tokens)
        feature_map = tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, rows, cols)
        return (feature_map, tokens[:, 0]) if self.return_token else feature_map
