"""Backbones: name -> constructor. Every backbone exposes ``out_channels`` and ``stride``."""
import inspect
from functools import partial

from torch import nn

from utils.errors import ConfigError

from .efficientnet import EFFICIENTNETS, EfficientNet
from .mobilenet import MOBILENETS, MobileNet
from .resnet import RESNETS, ResNet

BACKBONES = {
    **{name: partial(ResNet, name) for name in RESNETS},
    **{name: partial(MobileNet, name) for name in MOBILENETS},
    **{name: partial(EfficientNet, name) for name in EFFICIENTNETS},
}
BACKBONE_NAMES = tuple(BACKBONES)


def build_backbone(name: str, **config) -> nn.Module:
    """Build the backbone registered as ``name`` (case-insensitive exact match) with ``config``."""
    try:
        constructor = BACKBONES[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
    accepted = inspect.signature(constructor).parameters
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ConfigError(f"backbone {name!r} does not take {unknown}; its settings are "
                          f"{sorted(k for k in accepted if k != 'model_name')}")
    return constructor(**config)
