"""MobileNetV2 as the Lightweight-MixVPR project builds it: a 512-channel head upsampled to 20 x 20.

That project (github nadhiranoor/Lightweight-MixVPR) takes torchvision's ``mobilenet_v2`` and, in its
``features`` Sequential:

- ``features.0`` .. ``features.17``: torchvision's stem and inverted-residual blocks, unchanged (320
  channels at stride 32: 10 x 10 at 320 x 320);
- ``features.18``: torchvision's last 1x1 conv + BN + ReLU6 (320 -> 1280) replaced by a plain
  ``Conv2d(320, 512, kernel_size=1)`` with bias (keys ``features.18.weight`` (512, 320, 1, 1),
  ``features.18.bias`` (512,)), no activation;
- ``features.19``: ``BatchNorm2d(512)``;
- ``features.20``: ``Upsample(size=(20, 20), mode='bilinear', align_corners=False)``: the map is 20 x 20
  whatever the image size (so stride 16 holds at 320 x 320 only);
- the classifier replaced by Identity (no keys).

Its saved weights hold exactly these keys under ``backbone.model.``, the same as ours. Its helper builds
``MobileNetV2()`` with no arguments: ImageNet weights (torchvision IMAGENET1K_V1, loaded before the head
is replaced; the new conv and BN keep PyTorch's default initialisation) whatever ``pretrained`` says,
and ``layers_to_freeze`` / ``layers_to_crop`` ignored, so the whole network trains. Ours loads the
ImageNet weights only with ``pretrained=True``, accepts ``layers_to_crop`` ``[]`` or ``[4]`` (nothing is
cropped), and ignores ``layers_to_freeze`` as that project does. (Its helper also tests the name with
``is``, so only an interned ``'mobilenet_v2'`` string reached this network there.)
"""
from typing import Sequence

import torchvision
from torch import Tensor, nn

from .imagenet_weights import load_imagenet_weights
from .stages import check_uncropped

HEAD_CHANNELS = 512
OUT_SIZE = (20, 20)


class UpsampledMobileNetV2(nn.Module):
    """torchvision MobileNetV2 blocks 0-17, a 1x1 conv to 512 channels, BatchNorm, bilinear resize to 20 x 20."""

    FIRST_KEY = "model.features.0.0.weight"  # in every state_dict of this class: how weights are matched to it

    def __init__(self, model_name: str = "mobilenet_v2", pretrained: bool = True, layers_to_freeze: int = 2,
                 layers_to_crop: Sequence[int] = ()):
        super().__init__()
        check_uncropped(model_name, layers_to_crop)
        self.model_name = model_name
        self.model = torchvision.models.mobilenet_v2(weights=None)
        self.model.features[18] = nn.Conv2d(320, HEAD_CHANNELS, kernel_size=1)
        self.model.features.append(nn.BatchNorm2d(HEAD_CHANNELS))
        self.model.features.append(nn.Upsample(size=OUT_SIZE, mode="bilinear", align_corners=False))
        self.model.classifier = None
        self.out_channels = HEAD_CHANNELS
        # the map is always 20 x 20; 16 is the stride at the 320 x 320 the project trains at
        self.stride = 16
        if pretrained:
            self.load_pretrained()

    def load_pretrained(self) -> None:
        """Load torchvision's ImageNet weights into blocks 0-17 (the head keeps its initialisation)."""
        pretrained = torchvision.models.mobilenet_v2(weights=None)
        load_imagenet_weights(pretrained, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1, self.model_name)
        self.model.features[:18].load_state_dict(pretrained.features[:18].state_dict())

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) image -> (B, 512, 20, 20) feature map, for any H, W."""
        return self.model.features(x)
