"""Swin Transformer V2 as the Lightweight-MixVPR project builds it: timm's model, last stage as a map.

That project builds ``timm.create_model('swinv2_base_window12to16_192to256_22kft1k', pretrained,
num_classes=0)`` (its helper maps every name containing 'swin' to this one), sets ``head`` to None and
turns ``forward_features`` into a (B, C, H, W) map: embed_dim 128, depths (2, 2, 18, 2), heads
(4, 8, 16, 32), window 16 (pretrained at 12), 256 x 256 input only (fixed-size windows and masks),
1024 channels at stride 32 (8 x 8), the last stage's tokens after the final LayerNorm.

It assumed timm 0.6.12, whose ``forward_features`` returned (B, H*W, C) tokens and whose code reshaped
them with ``x.view(B, sqrt(L), sqrt(L), C).permute(0, 3, 1, 2)``; timm 0.9 and later return (B, H, W, C),
so that code no longer runs. Ours permutes timm's (B, H, W, C) output: the same map.

Weights: timm 0.6.12's ``swinv2_base_window12to16_192to256_22kft1k`` file is today's
``swinv2_base_window12to16_192to256.ms_in22k_ft_in1k``. The saved keys (under ``backbone.model.``) differ
from today's timm in two ways, which ``models.layouts.lightweight.to_ours`` maps:

- patch merging sat at the END of stages 0-2 (``layers.<i>.downsample.{reduction.weight, norm.weight,
  norm.bias}``, i = 0, 1, 2); timm now puts it at the START of stages 1-3 (``layers.<i+1>.downsample.*``);
- the shifted-window attention masks were saved (``layers.0.blocks.1.attn_mask`` (16, 256, 256),
  ``layers.1.blocks.1.attn_mask`` (4, 256, 256)); timm now recomputes them (not in the state_dict).

Everything else (``patch_embed.*``, ``layers.<i>.blocks.<j>.*`` with ``attn.logit_scale``,
``attn.q_bias``, ``attn.v_bias``, ``attn.cpb_mlp.*``, ``norm.*``) has the same names and shapes.

``layers_to_freeze`` (applied with ``pretrained`` there) freezes ``patch_embed``, stages 0 and 1 with
the two patch mergings that followed them, and the first ``5 * k`` of the 18 blocks of stage 2; in
today's layout: patch_embed, ``layers.0``, ``layers.1``, ``layers.2.downsample`` and
``layers.2.blocks[:5k]``. As for our other backbones, ``-1`` freezes nothing and freezing applies with or
without ``pretrained``; ``k`` goes up to 3 (15 blocks; 4 would ask for 20). ``layers_to_crop``: ``[]`` or
``[4]``, nothing is cropped.
"""
from typing import Sequence

from torch import Tensor, nn

from utils.errors import ConfigError

from .imagenet_weights import create_timm_model
from .stages import check_uncropped

# our name (that project's) -> (timm name with the tag of the same weights, timm keyword arguments)
SWINS = {
    "swinv2_base_window12to16_192to256_22kft1k": ("swinv2_base_window12to16_192to256.ms_in22k_ft_in1k", {}),
}
BLOCKS_PER_FREEZE_STEP = 5


class SwinV2(nn.Module):
    """timm Swin-V2 whose last stage's tokens come out as a (B, C, H, W) map; see the module docstring."""

    FIRST_KEY = "model.patch_embed.proj.weight"  # in every state_dict of this class: how weights are matched to it

    def __init__(self, model_name: str = "swinv2_base_window12to16_192to256_22kft1k", pretrained: bool = True,
                 layers_to_freeze: int = 2, layers_to_crop: Sequence[int] = ()):
        super().__init__()
        check_uncropped(model_name, layers_to_crop)
        timm_name, timm_kwargs = SWINS[model_name]
        self.model = create_timm_model(timm_name, pretrained, model_name, num_classes=0, **timm_kwargs)
        stage2 = self.model.layers[2]
        steps = len(stage2.blocks) // BLOCKS_PER_FREEZE_STEP
        if not -1 <= layers_to_freeze <= steps:
            raise ConfigError(f"layers_to_freeze={layers_to_freeze}: use -1 (train all) or 0..{steps} (patch_embed, "
                             f"stages 0-1 and the first 5 x k of the {len(stage2.blocks)} blocks of stage 2)")
        self.out_channels = self.model.num_features
        self.stride = self.model.patch_embed.patch_size[0] * 2 ** (len(self.model.layers) - 1)
        self.image_size = tuple(self.model.patch_embed.img_size)
        self.model_name = model_name
        if layers_to_freeze >= 0:
            for part in (self.model.patch_embed, self.model.layers[0], self.model.layers[1], stage2.downsample):
                part.requires_grad_(False)
            stage2.blocks[: BLOCKS_PER_FREEZE_STEP * layers_to_freeze].requires_grad_(False)

    def load_pretrained(self) -> None:
        """Load timm's pretrained weights of this network (the Hugging Face cache, else downloaded once)."""
        timm_name, timm_kwargs = SWINS[self.model_name]
        pretrained = create_timm_model(timm_name, True, self.model_name, num_classes=0, **timm_kwargs)
        self.model.load_state_dict(pretrained.state_dict())

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, 256, 256) image -> (B, out_channels, 8, 8) map of the last stage (sizes for the base model)."""
        if tuple(x.shape[-2:]) != self.image_size:
            raise ConfigError(f"{self.model_name} takes {self.image_size[0]} x {self.image_size[1]} images (its "
                             f"windows and masks are fixed), got {x.shape[-2]} x {x.shape[-1]}: set image_size to "
                             f"{list(self.image_size)}")
        return self.model.forward_features(x).permute(0, 3, 1, 2)
