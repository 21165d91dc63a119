"""Cropped torchvision EfficientNets (B0..B3), staged like our ResNets: ``torchvision_efficientnet_b0`` ..

Named ``torchvision_*`` because ``efficientnet_b0`` .. ``efficientnet_b4`` are the Lightweight-MixVPR
project's whole timm trunks (``timm_efficientnet.py``), a different network under the same name.

The ``features`` Sequential is split by output stride into a stem (stride 2) and stages 1..4 (stage i
ends where the stride reaches 2 ** (i + 1); stage 4 is the stride-32 part and ends with the final 1x1
conv), so ``layers_to_crop=[4]`` gives stride 16 and ``layers_to_freeze=k`` freezes the stem and
stages 1..k, as for ``resnet.ResNet``. The split is the same for B0..B3 (only widths and depths grow):

=========================== ====== ====== ====== ======= ======= ==============================
model                       stem   1 (/4) 2 (/8) 3 (/16) 4 (/32) channels after stages 1..4
=========================== ====== ====== ====== ======= ======= ==============================
torchvision_efficientnet_b0 0-1    2      3      4-5     6-8     24, 40, 112, 1280
torchvision_efficientnet_b1 0-1    2      3      4-5     6-8     24, 40, 112, 1280
torchvision_efficientnet_b2 0-1    2      3      4-5     6-8     24, 48, 120, 1408
torchvision_efficientnet_b3 0-1    2      3      4-5     6-8     32, 48, 136, 1536
=========================== ====== ====== ====== ======= ======= ==============================

State-dict keys are torchvision's under ``model.`` (``model.features.1.0.block.0.0.weight`` ...), so
ImageNet weights load by name; the cropped blocks and the classifier are absent. torchvision's
stochastic depth inside the blocks stays on in training mode (it is the architecture's regulariser).
"""
from typing import Sequence

import torchvision

from .mobilenet import StagedFeatures

_ENDS = (2, 3, 4, 6, 9)

# name -> (torchvision constructor, ImageNet weights, end (exclusive) of stem and stages 1..4 in
# ``features``, channels after stages 1..4). IMAGENET1K_V1: the only weights torchvision has for all four.
EFFICIENTNETS = {
    "torchvision_efficientnet_b0": (torchvision.models.efficientnet_b0, torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1,
                                    _ENDS, (24, 40, 112, 1280)),
    "torchvision_efficientnet_b1": (torchvision.models.efficientnet_b1, torchvision.models.EfficientNet_B1_Weights.IMAGENET1K_V1,
                                    _ENDS, (24, 40, 112, 1280)),
    "torchvision_efficientnet_b2": (torchvision.models.efficientnet_b2, torchvision.models.EfficientNet_B2_Weights.IMAGENET1K_V1,
                                    _ENDS, (24, 48, 120, 1408)),
    "torchvision_efficientnet_b3": (torchvision.models.efficientnet_b3, torchvision.models.EfficientNet_B3_Weights.IMAGENET1K_V1,
                                    _ENDS, (32, 48, 136, 1536)),
}


class EfficientNet(StagedFeatures):
    """EfficientNet-B0..B3 trunk; see the module docstring for the stage split."""

    def __init__(self, model_name: str = "torchvision_efficientnet_b0", pretrained: bool = True, layers_to_freeze: int = 2,
                 layers_to_crop: Sequence[int] = ()):
        super().__init__(model_name, EFFICIENTNETS[model_name], pretrained, layers_to_freeze, layers_to_crop)
