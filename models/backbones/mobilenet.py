"""Cropped torchvision MobileNets (MobileNetV2, MobileNetV3 small/large), staged like our ResNets.

torchvision's MobileNetV2 is registered as ``torchvision_mobilenet_v2``: ``mobilenet_v2`` is the
Lightweight-MixVPR project's MobileNetV2 with its upsampled 512-channel head (``upsampled_mobilenet.py``).

torchvision builds these nets as one ``features`` Sequential; we split it by output stride into a stem
(stride 2) and stages 1..4 (stage i ends where the stride reaches 2 ** (i + 1), so stage 4 is the
stride-32 part and ends with the final 1x1 conv). ``layers_to_crop=[4]`` then gives stride 16 and
``layers_to_freeze=k`` freezes the stem and stages 1..k, exactly as for ``resnet.ResNet``.

Blocks of ``features`` per part (Python ranges):

======================== ====== ====== ====== ======= ======= ==============================
model                    stem   1 (/4) 2 (/8) 3 (/16) 4 (/32) channels after stages 1..4
======================== ====== ====== ====== ======= ======= ==============================
torchvision_mobilenet_v2 0-1    2-3    4-6    7-13    14-18   24, 32, 96, 1280
mobilenet_v3_small       0      1      2-3    4-8     9-12    16, 24, 48, 576
mobilenet_v3_large       0-1    2-3    4-6    7-12    13-16   24, 40, 112, 960
======================== ====== ====== ====== ======= ======= ==============================

State-dict keys are torchvision's under ``model.`` (``model.features.0.0.weight`` ...), so ImageNet
weights load by name; the cropped blocks and the classifier are absent. ``StagedFeatures`` is shared
with ``efficientnet.py``: EfficientNet is built of the same inverted-residual (MBConv) blocks.
"""
from typing import Sequence

import torchvision
from torch import Tensor, nn

from .imagenet_weights import load_imagenet_weights
from .stages import kept_stages

# name -> (torchvision constructor, ImageNet weights, end (exclusive) of stem and stages 1..4 in
# ``features``, channels after stages 1..4). IMAGENET1K_V1 everywhere: the original recipe's weights.
MOBILENETS = {
    "torchvision_mobilenet_v2": (torchvision.models.mobilenet_v2,
                                 torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
                                 (2, 4, 7, 14, 19), (24, 32, 96, 1280)),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small,
                           torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1,
                           (1, 2, 4, 9, 13), (16, 24, 48, 576)),
    "mobilenet_v3_large": (torchvision.models.mobilenet_v3_large,
                           torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
                           (2, 4, 7, 13, 17), (24, 40, 112, 960)),
}


class StagedFeatures(nn.Module):
    """A torchvision ``features`` trunk split into stem + stages 1..4, trailing stages cropped, first
    ones frozen.

    spec: ``(constructor, weights, ends, channels)`` as in ``MOBILENETS``; ``ends[0]`` is the end of
    the stem and ``ends[i]`` the end of stage i in ``features``.
    layers_to_crop: stages removed from the end, e.g. ``[4]`` (stride 16) or ``[3, 4]`` (stride 8).
    layers_to_freeze: ``k`` freezes the stem and stages 1..k; ``-1`` freezes nothing.
    """

    FIRST_KEY = "model.features.0.0.weight"  # in every state_dict of this class: how weights are matched to it

    def __init__(self, model_name: str, spec: tuple, pretrained: bool = True, layers_to_freeze: int = 2,
                 layers_to_crop: Sequence[int] = ()):
        super().__init__()
        constructor, weights, ends, channels = spec
        kept = kept_stages(layers_to_crop, layers_to_freeze)
        self.model_name, self.imagenet_weights = model_name, weights
        self.model = constructor(weights=None)
        # the classifier head is not part of a VPR trunk (MobileNetV2 pools functionally, has no avgpool)
        self.model.classifier = None
        if hasattr(self.model, "avgpool"):
            self.model.avgpool = None
        del self.model.features[ends[kept[-1]]:]
        self.stages = kept
        self.out_channels = channels[kept[-1] - 1]
        self.stride = 2 ** (kept[-1] + 1)
        if layers_to_freeze >= 0:
            frozen_end = ends[min(layers_to_freeze, kept[-1])]
            self.model.features[:frozen_end].requires_grad_(False)
        if pretrained:
            self.load_pretrained()

    def load_pretrained(self) -> None:
        """Load torchvision's ImageNet weights into the kept blocks (downloaded once, then cached)."""
        load_imagenet_weights(self.model, self.imagenet_weights, self.model_name)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) image -> (B, out_channels, H / stride, W / stride) feature map (sizes rounded up)."""
        return self.model.features(x)


class MobileNet(StagedFeatures):
    """MobileNetV2 / MobileNetV3 small / large trunk; see the module docstring for the stage split."""

    def __init__(self, model_name: str = "torchvision_mobilenet_v2", pretrained: bool = True, layers_to_freeze: int = 2,
                 layers_to_crop: Sequence[int] = ()):
        super().__init__(model_name, MOBILENETS[model_name], pretrained, layers_to_freeze, layers_to_crop)
