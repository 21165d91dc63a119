"""Backbones: name -> constructor. Every backbone exposes ``out_channels`` and ``stride``, and its class
``FIRST_KEY``, a key every state_dict of that class holds (to match weights to candidate backbones).

``resnet*``, ``torchvision_*`` and ``mobilenet_v3_*``: torchvision trunks staged like the ResNets
(``layers_to_crop=[4]`` cuts them at stride 16). ``efficientnet_b0`` .. ``efficientnet_b4``,
``mobilenet_v2`` and ``swinv2_base_window12to16_192to256_22kft1k``: the Lightweight-MixVPR project's
networks under its names, built as its code builds them, so that its constructor calls and saved
weights work here (``models.layouts.lightweight`` maps the weights). ``dinov2_vit*14``: the DINOv2 ViTs,
which take ``num_trainable_blocks``, ``return_token`` and ``norm_layer`` instead of the CNNs' settings.
``vgg16``: VGG16's trunk up to conv5_3, NetVLAD's and CosPlace's (used whole: ``layers_to_crop=[]``).
"""
import inspect
from functools import partial

from torch import nn

from utils.errors import ConfigError

from .dinov2 import DINOV2_ARCHS, DINOv2
from .efficientnet import EFFICIENTNETS, EfficientNet
from .mobilenet import MOBILENETS, MobileNet
from .resnet import RESNETS, ResNet
from .swin import SWINS, SwinV2
from .timm_efficientnet import TIMM_EFFICIENTNETS, TimmEfficientNet
from .upsampled_mobilenet import UpsampledMobileNetV2
from .vgg import VGG16

BACKBONES = {
    **{name: partial(ResNet, name) for name in RESNETS},
    **{name: partial(MobileNet, name) for name in MOBILENETS},
    **{name: partial(EfficientNet, name) for name in EFFICIENTNETS},
    **{name: partial(DINOv2, name) for name in DINOV2_ARCHS},
    "vgg16": partial(VGG16, "vgg16"),
    # the Lightweight-MixVPR project's networks
    **{name: partial(TimmEfficientNet, name) for name in TIMM_EFFICIENTNETS},
    "mobilenet_v2": partial(UpsampledMobileNetV2, "mobilenet_v2"),
    **{name: partial(SwinV2, name) for name in SWINS},
}
BACKBONE_NAMES = tuple(BACKBONES)


def backbone_constructor(name: str):
    """The constructor registered as ``name`` (case-insensitive exact match)."""
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def build_backbone(name: str, **config) -> nn.Module:
    """Build the backbone registered as ``name`` with ``config``, naming the settings it takes when one is unknown."""
    constructor = backbone_constructor(name)
    accepted = inspect.signature(constructor).parameters
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ConfigError(f"backbone {name!r} does not take {unknown}; its settings are "
                          f"{sorted(k for k in accepted if k != 'model_name')}")
    return constructor(**config)
