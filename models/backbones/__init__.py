"""Backbones: name -> constructor. Every backbone exposes ``out_channels`` and ``stride``."""
from functools import partial

from torch import nn

from .efficientnet import EFFICIENTNETS, EfficientNet
from .mobilenet import MOBILENETS, MobileNet
from .resnet import RESNETS, ResNet

BACKBONES = {
    **{name: partial(ResNet, name) for name in RESNETS},
    **{name: partial(MobileNet, name) for name in MOBILENETS},
    **{name: partial(EfficientNet, name) for name in EFFICIENTNETS},
}


def build_backbone(name: str, **config) -> nn.Module:
    """Build the backbone registered as ``name`` (case-insensitive exact match)."""
    try:
        constructor = BACKBONES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
    return constructor(**config)
