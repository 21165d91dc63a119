"""Names to modules: the backbone, and the aggregator with its input dimensions fitted to the backbone."""
import inspect
from typing import Optional, Sequence

import torch
from torch import nn

from utils.errors import ConfigError

from .aggregators import aggregator_class
from .backbones import build_backbone


def get_backbone(backbone_arch: str = "resnet50", pretrained: bool = True, layers_to_freeze: int = 2,
                 layers_to_crop: Sequence[int] = (), backbone_config: Optional[dict] = None) -> nn.Module:
    """The backbone named ``backbone_arch``, cropped and frozen as asked; ``backbone_config`` holds the
    options of backbones that take more (e.g. a ViT's trainable blocks)."""
    return build_backbone(backbone_arch, pretrained=pretrained, layers_to_freeze=layers_to_freeze,
                          layers_to_crop=list(layers_to_crop), **(backbone_config or {}))


@torch.no_grad()
def feature_map_shape(backbone: nn.Module, image_size: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of the backbone's output map for an image of ``image_size`` = (height, width)
    (the map of a backbone that also returns a token)."""
    was_training = backbone.training
    backbone.eval()
    param = next(backbone.parameters())
    out = backbone(torch.zeros(1, 3, *image_size, dtype=param.dtype, device=param.device))
    backbone.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return tuple(out.shape[1:])


# the names aggregators give the backbone's output dimensions
DIMENSION_NAMES = {"in_channels": 0, "num_channels": 0, "in_h": 1, "in_w": 2}


def get_aggregator(agg_arch: str, agg_config: dict, backbone: nn.Module, image_size: Sequence[int],
                   backbone_arch: str = "") -> nn.Module:
    """The aggregator named ``agg_arch``; its input dimensions (``in_channels``/``num_channels``, ``in_h``,
    ``in_w``) come from the backbone's output for ``image_size`` when absent, and must equal it when given."""
    cls = aggregator_class(agg_arch)
    accepted = inspect.signature(cls).parameters
    config = dict(agg_config)
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ConfigError(f"{agg_arch} does not take {unknown}; its settings are {sorted(accepted)}")
    shape = feature_map_shape(backbone, image_size)
    derived = {k: shape[i] for k, i in DIMENSION_NAMES.items() if k in accepted}
    wrong = {k: config[k] for k in derived if k in config and config[k] != derived[k]}
    if wrong:
        right = ", ".join(f"{k}={derived[k]}" for k in derived)
        given = ", ".join(f"{k}={v}" for k, v in wrong.items())
        c, h, w = shape
        raise ConfigError(
            f"{agg_arch} agg_config does not fit the backbone: {given} given, but {backbone_arch or 'the backbone'} "
            f"outputs a {c} x {h} x {w} map for {image_size[0]} x {image_size[1]} images "
            f"(stride {getattr(backbone, 'stride', '?')}). Use {right}, or leave them out to derive them, "
            f"or change image_size.")
    return cls(**{**derived, **config})
