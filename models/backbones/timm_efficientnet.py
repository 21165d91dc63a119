"""EfficientNet-B0..B4 as the Lightweight-MixVPR project builds them: timm's whole trunk.

That project (github nadhiranoor/Lightweight-MixVPR, pinned timm 0.6.12) builds
``timm.create_model(name, pretrained)`` and uses ``forward_features``: conv_stem, bn1, blocks 0..6,
conv_head, bn2, i.e. the whole network up to its global pooling, at stride 32 (10 x 10 at 320 x 320):

================ ============ ==================================== ==========================
name             out_channels its timm 0.6.12 weights file          our timm name (same file)
================ ============ ==================================== ==========================
efficientnet_b0  1280         efficientnet_b0_ra-3dd342df.pth      efficientnet_b0.ra_in1k
efficientnet_b1  1280         efficientnet_b1-533bc792.pth         efficientnet_b1.ft_in1k
efficientnet_b2  1408         efficientnet_b2_ra-bcdf34b7.pth      efficientnet_b2.ra_in1k
efficientnet_b3  1536         efficientnet_b3_ra2-cf984f9c.pth     efficientnet_b3.ra2_in1k
efficientnet_b4  1792         efficientnet_b4_ra2_320-7eb33cd5.pth efficientnet_b4.ra2_in1k
================ ============ ==================================== ==========================

Its saved weights keep timm's key names under ``backbone.model.`` (``conv_stem.weight``, ``bn1.*``,
``blocks.<i>.<j>.*``, ``conv_head.weight``, ``bn2.*``) and also the unused ImageNet classifier
(``backbone.model.classifier.weight`` (1000, C) and ``.bias``): it set ``global_pool`` and a
non-existent ``fc`` to None but kept ``classifier``. Ours is built with ``num_classes=0`` (no classifier,
same names otherwise), so ``models.layouts.lightweight.to_ours`` only drops those two keys. timm 1.0's
EfficientNet has the same key names, shapes and forward as 0.6.12's.

``layers_to_crop`` is ignored there (the trunk is always whole); we accept ``[]`` and ``[4]`` and refuse
other values. ``layers_to_freeze``: that project's helper passes ``layers_to_freeze + 2`` to its
EfficientNet, which freezes ``conv_stem`` (not ``bn1``) and blocks 0-1 at 0, then one more block per step
up to block 5. So, as given to VPRModel, ``k`` freezes conv_stem and blocks ``0 .. min(k + 3, 5)``:
the published ``layers_to_freeze=2`` freezes conv_stem and blocks 0-5 (block 6, bn1, conv_head and bn2
train). Two departures, as for our other backbones: ``-1`` freezes nothing (there it froze blocks 0-2),
and freezing applies with or without ``pretrained`` (there only with it). Frozen BatchNorms still update
their running statistics in training mode, as there.
"""
from typing import Sequence

from torch import Tensor, nn

from utils.errors import ConfigError

from .imagenet_weights import create_timm_model
from .stages import check_uncropped

# our name (that project's) -> timm name with the tag of the weights that name loaded in timm 0.6.12
TIMM_EFFICIENTNETS = {
    "efficientnet_b0": "efficientnet_b0.ra_in1k",
    "efficientnet_b1": "efficientnet_b1.ft_in1k",
    "efficientnet_b2": "efficientnet_b2.ra_in1k",
    "efficientnet_b3": "efficientnet_b3.ra2_in1k",
    "efficientnet_b4": "efficientnet_b4.ra2_in1k",
}


class TimmEfficientNet(nn.Module):
    """timm EfficientNet trunk (stem to bn2, 1280+ channels at stride 32); see the module docstring."""

    FIRST_KEY = "model.conv_stem.weight"  # in every state_dict of this class: how weights are matched to it

    def __init__(self, model_name: str = "efficientnet_b0", pretrained: bool = True, layers_to_freeze: int = 2,
                 layers_to_crop: Sequence[int] = ()):
        super().__init__()
        check_uncropped(model_name, layers_to_crop)
        if not -1 <= layers_to_freeze <= 4:
            raise ConfigError(f"layers_to_freeze={layers_to_freeze}: use -1 (train all) or 0..4 (conv_stem and "
                             f"blocks 0..k+3 of {model_name}; 2 or more freeze blocks 0-5)")
        self.model_name = model_name
        self.model = create_timm_model(TIMM_EFFICIENTNETS[model_name], pretrained, model_name, num_classes=0)
        self.out_channels = self.model.num_features
        self.stride = self.model.feature_info[-1]["reduction"]
        if layers_to_freeze >= 0:
            self.model.conv_stem.requires_grad_(False)
            self.model.blocks[: min(layers_to_freeze + 4, 6)].requires_grad_(False)

    def load_pretrained(self) -> None:
        """Load timm's ImageNet weights of this network (the Hugging Face cache, else downloaded once)."""
        pretrained = create_timm_model(TIMM_EFFICIENTNETS[self.model_name], True, self.model_name, num_classes=0)
        self.model.load_state_dict(pretrained.state_dict())

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) image -> (B, out_channels, H / 32, W / 32) feature map (sizes rounded up)."""
        return self.model.forward_features(x)
