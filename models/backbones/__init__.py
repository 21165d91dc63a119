"""Backbones: name -> constructor. Every backbone exposes ``out_channels`` and ``stride``.

CNNs take ``pretrained``, ``layers_to_freeze`` and ``layers_to_crop``; the DINOv2 ViTs take ``pretrained``,
``num_trainable_blocks``, ``return_token`` and ``norm_layer``."""
import inspect
from functools import partial

from torch import nn

from utils.errors import ConfigError

from .dinov2 import DINOV2_ARCHS, DINOv2
from .efficientnet import EFFICIENTNETS, EfficientNet
from .mobilenet import MOBILENETS, MobileNet
from .resnet import RESNETS, ResNet

BACKBONES = {
    **{name: partial(ResNet, name) for name in RESNETS},
    **{name: partial(MobileNet, name) for name in MOBILENETS},
    **{name: partial(EfficientNet, name) for name in EFFICIENTNETS},
    **{name: partial(DINOv2, name) for name in DINOV2_ARCHS},
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
