"""VGG16's convolutional trunk (Simonyan & Zisserman, ICLR 2015) cut after conv5_3, before its ReLU.

The trunk of NetVLAD (Arandjelovic et al., CVPR 2016: MATLAB ``relja_cropToLayer(net, 'conv5_3')``, and
the PyTorch port VPR-methods-evaluation uses, ``vpr_models/netvlad.py``) and of CosPlace's and EigenPlaces'
VGG16 models (``get_backbone``: ``list(vgg16.features.children())[:-2]``): torchvision's ``vgg16().features``
without its last two modules, the ReLU after conv5_3 and the fifth max-pool. So the map it outputs is
conv5_3's, negative values included.

Layout (torchvision's names under ``model.features.``), 13 convolutions 3 x 3, padding 1, with bias::

    model.features.<i>.weight (out, in, 3, 3), .bias (out,)   i = 0, 2 | 5, 7 | 10, 12, 14 | 17, 19, 21 | 24, 26, 28
                                                             channels 64 | 128 | 256 | 512 | 512
    (ReLU after every convolution but the last; max-pools 2 x 2 at 4, 9, 16, 23: stride 16)
    average_rgb (3,)                                         only with matconvnet_input (NetVLAD)

``matconvnet_input``: the MATLAB NetVLAD release's input convention. Its network takes pixels in 0..255 minus
the average colour its file stores (``net.meta.normalization.averageImage(1,1,:)``, ``computeRepresentation.m``).
As the port the field evaluates it with (VPR-methods-evaluation ``vpr_models/netvlad.py``, from hloc), the
trunk takes ImageNet-normalised images as every network here, undoes that normalisation (x * std + mean,
clamped to 0..1), scales to 0..255 and subtracts ``average_rgb``, a buffer that loads with the weights
(ImageNet's mean in 0..255 until then). So evaluation, training and distillation feed it as any other network.
"""
from typing import Sequence

import torch
import torchvision
from torch import Tensor, nn

from dataloaders.transforms import IMAGENET_MEAN, IMAGENET_STD
from utils.errors import ConfigError

from .imagenet_weights import load_imagenet_weights

# the convolution blocks of VGG16's features: the indices of their modules (a block ends with its max-pool)
BLOCKS = ((0, 5), (5, 10), (10, 17), (17, 24), (24, 29))
CUT = 29  # features[:29]: up to conv5_3 (28), without its ReLU (29) and pool5 (30)
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)


class VGG16(nn.Module):
    """VGG16 trunk up to conv5_3: (B, 3, H, W) -> (B, 512, H / 16, W / 16), no ReLU after the last convolution.

    layers_to_crop: ``[]`` only (the trunk is used whole, as both releases use it).
    layers_to_freeze: ``k`` freezes convolution blocks 1..k (CosPlace trains block 5 only: 4); -1 or 0: none.
    matconvnet_input: turn ImageNet-normalised input into pixels in 0..255 less ``average_rgb`` (NetVLAD's release).
    pretrained: load torchvision's ImageNet weights now (else later with ``load_pretrained``).
    """

    FIRST_KEY = "model.features.0.weight"  # in every state_dict of this class: how weights are matched to it

    def __init__(self, model_name: str = "vgg16", pretrained: bool = True, layers_to_freeze: int = 2,
                 layers_to_crop: Sequence[int] = (), matconvnet_input: bool = False):
        super().__init__()
        if list(layers_to_crop):
            raise ConfigError(f"layers_to_crop={list(layers_to_crop)}: {model_name} is used up to conv5_3, as NetVLAD "
                              f"and CosPlace use it; set layers_to_crop to []")
        if not -1 <= layers_to_freeze <= 4:
            raise ConfigError(f"layers_to_freeze={layers_to_freeze} for {model_name}: -1 or 0 (train all) or 1..4 "
                              f"(freeze convolution blocks 1..k)")
        self.model_name = model_name
        self.imagenet_weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1
        # the features alone (torchvision's vgg16() would also build and initialise its 120M-parameter classifier),
        # initialised as torchvision's VGG initialises them
        self.model = nn.Module()
        self.model.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])[:CUT]
        for conv in self.model.features:
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
        self.out_channels, self.stride = 512, 16
        for start, end in BLOCKS[:max(layers_to_freeze, 0)]:
            self.model.features[start:end].requires_grad_(False)
        self.matconvnet_input = matconvnet_input
        if matconvnet_input:
            self.register_buffer("average_rgb", torch.tensor(IMAGENET_MEAN_255))
        if pretrained:
            self.load_pretrained()

    def load_pretrained(self) -> None:
        """Load torchvision's ImageNet weights into the trunk (downloaded once, then cached)."""
        load_imagenet_weights(self.model, self.imagenet_weights, self.model_name)

    def feature_map_shape(self, image_size: Sequence[int]) -> tuple[int, int, int]:
        """(512, H // 16, W // 16) for an image of ``image_size`` = (H, W): four 2 x 2 max-pools, each flooring."""
        return self.out_channels, int(image_size[0]) // 16, int(image_size[1]) // 16

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) image -> (B, 512, H // 16, W // 16) conv5_3 map."""
        if self.matconvnet_input:
            mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            pixels = ((x * std + mean).clamp(0, 1) * 255).clamp(0, 255)
            x = pixels - self.average_rgb.to(x.dtype).view(1, 3, 1, 1)
        return self.model.features(x)
