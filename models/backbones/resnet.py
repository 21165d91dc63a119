"""Cropped torchvision ResNets (ResNet18/34/50/101/152, ResNeXt50_32x4d, wide_resnet50_2).

State-dict keys are torchvision's under ``model.`` (``model.conv1``, ``model.layer1`` ...), with the
cropped stages, ``avgpool`` and ``fc`` absent, as in the original MixVPR checkpoints.
"""
from typing import Sequence

import torchvision
from torch import Tensor, nn

from .imagenet_weights import load_imagenet_weights
from .stages import kept_stages

# name -> (torchvision constructor, ImageNet weights, channels of layer1..layer4)
RESNETS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, (64, 128, 256, 512)),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1, (64, 128, 256, 512)),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, (256, 512, 1024, 2048)),
    "resnet101": (torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1, (256, 512, 1024, 2048)),
    "resnet152": (torchvision.models.resnet152, torchvision.models.ResNet152_Weights.IMAGENET1K_V1, (256, 512, 1024, 2048)),
    "resnext50_32x4d": (torchvision.models.resnext50_32x4d, torchvision.models.ResNeXt50_32X4D_Weights.IMAGENET1K_V1, (256, 512, 1024, 2048)),
    "wide_resnet50_2": (torchvision.models.wide_resnet50_2, torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1, (256, 512, 1024, 2048)),
}


class ResNet(nn.Module):
    """ResNet trunk with its last stages cropped and its first stages frozen.

    layers_to_crop: stages removed from the end, e.g. ``[4]`` (stride 16) or ``[3, 4]`` (stride 8).
    layers_to_freeze: ``k`` freezes conv1/bn1 and layer1..layer k; ``-1`` freezes nothing.
    pretrained: load torchvision's ImageNet weights now (else later with ``load_pretrained``).
    """

    FIRST_KEY = "model.conv1.weight"  # in every state_dict of this class: how weights are matched to it

    def __init__(self, model_name: str = "resnet50", pretrained: bool = True, layers_to_freeze: int = 2,
                 layers_to_crop: Sequence[int] = ()):
        super().__init__()
        constructor, weights, channels = RESNETS[model_name]
        kept = kept_stages(layers_to_crop, layers_to_freeze)
        self.model_name, self.imagenet_weights = model_name, weights
        self.model = constructor(weights=None)
        self.model.avgpool = None
        self.model.fc = None
        for i in range(kept[-1] + 1, 5):
            setattr(self.model, f"layer{i}", None)
        self.stages = kept
        self.out_channels = channels[kept[-1] - 1]
        self.stride = 2 ** (kept[-1] + 1)
        if layers_to_freeze >= 0:
            self.model.conv1.requires_grad_(False)
            self.model.bn1.requires_grad_(False)
        for i in kept:
            if i <= layers_to_freeze:
                getattr(self.model, f"layer{i}").requires_grad_(False)
        if pretrained:
            self.load_pretrained()

    def load_pretrained(self) -> None:
        """Load torchvision's ImageNet weights into the kept layers (downloaded once, then cached)."""
        load_imagenet_weights(self.model, self.imagenet_weights, self.model_name)

    def feature_map_shape(self, image_size: Sequence[int]) -> tuple[int, int, int]:
        """(out_channels, H', W') for an image of ``image_size`` = (H, W), without running the network: each of
        the log2(stride) stride-2 steps (conv1, the max-pool, the first block of layer2..4) gives ceil(n / 2)."""
        h, w = int(image_size[0]), int(image_size[1])
        for _ in range(self.stride.bit_length() - 1):
            h, w = (h + 1) // 2, (w + 1) // 2
        return self.out_channels, h, w

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) image -> (B, out_channels, H / stride, W / stride) feature map."""
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        for i in self.stages:
            x = getattr(m, f"layer{i}")(x)
        return x
