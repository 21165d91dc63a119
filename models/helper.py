"""Names to modules: the backbone, and the aggregator with its input dimensions fitted to the backbone."""
import inspect
from typing import Optional, Sequence

import torch
from torch import nn

from utils.errors import ConfigError

from .aggregators import aggregator_class
from .backbones import backbone_constructor, build_backbone


def get_backbone(backbone_arch: str = "resnet50", pretrained: bool = True, layers_to_freeze: int = 2,
                 layers_to_crop: Sequence[int] = (), backbone_config: Optional[dict] = None) -> nn.Module:
    """The backbone named ``backbone_arch``, cropped and frozen as asked.

    ``layers_to_freeze``/``layers_to_crop`` go to the CNNs, which take them; ``backbone_config`` holds the
    backbone's own settings (DINOv2: num_trainable_blocks, return_token, norm_layer) and wins over the
    arguments before it.
    """
    accepted = inspect.signature(backbone_constructor(backbone_arch)).parameters
    cnn_settings = {"layers_to_freeze": layers_to_freeze, "layers_to_crop": list(layers_to_crop)}
    args = {"pretrained": pretrained, **{k: v for k, v in cnn_settings.items() if k in accepted}}
    return build_backbone(backbone_arch, **{**args, **(backbone_config or {})})


@torch.no_grad()
def feature_map_shape(backbone: nn.Module, image_size: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of the backbone's output map for an image of ``image_size`` = (height, width)."""
    if hasattr(backbone, "feature_map_shape"):  # known without running it (and checked: ViT patch size)
        return tuple(backbone.feature_map_shape(tuple(image_size)))
    was_training = backbone.training
    backbone.eval()
    param = next(backbone.parameters())
    out = backbone(torch.zeros(1, 3, *image_size, dtype=param.dtype, device=param.device))
    backbone.train(was_training)
    if isinstance(out, (tuple, list)):  # (map, class token)
        out = out[0]
    return tuple(out.shape[1:])


# the names aggregators give the backbone's output dimensions: index into (C, H, W)
DIMENSION_NAMES = {"in_channels": 0, "num_channels": 0, "in_h": 1, "in_w": 2}
# aggregator settings that may be zero (no dropout, no mixer block); every other number an aggregator takes
# is a size, a count or a strictly positive parameter (GeM's p, NetVLAD's alpha)
MAY_BE_ZERO = ("dropout", "mix_depth")


def check_aggregator_numbers(agg_arch: str, config: dict) -> None:
    """ConfigError naming every number of ``config`` that is out of range: sizes and counts <= 0 (an
    ``out_channels: 0`` aggregator would train a 0-d descriptor), zero-allowed settings < 0, NaN."""
    wrong = {k: v for k, v in config.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
             and not (v >= 0 if k in MAY_BE_ZERO else v > 0)}
    if wrong:
        given = ", ".join(f"{k}={v}" for k, v in wrong.items())
        raise ConfigError(f"{agg_arch} agg_config: {given}: sizes, counts and parameters of an aggregator must be "
                          f"positive ({', '.join(MAY_BE_ZERO)} may be 0); fix --model.agg_config")


def get_aggregator(agg_arch: str, agg_config: dict, backbone: nn.Module, image_size: Sequence[int],
                   backbone_arch: str = "") -> nn.Module:
    """The aggregator named ``agg_arch``; its input dimensions (``in_channels`` or ``num_channels``, ``in_h``,
    ``in_w``) come from the backbone's output for ``image_size`` when absent, and must equal it when given."""
    cls = aggregator_class(agg_arch)
    accepted = inspect.signature(cls).parameters
    config = dict(agg_config)
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ConfigError(f"{agg_arch} does not take {unknown}; its settings are {sorted(accepted)}")
    check_aggregator_numbers(agg_arch, config)
    shape = feature_map_shape(backbone, image_size)
    c, h, w = shape
    derived = {k: shape[i] for k, i in DIMENSION_NAMES.items() if k in accepted}
    wrong = {k: config[k] for k in derived if k in config and config[k] != derived[k]}
    if wrong:
        right = ", ".join(f"{k}={derived[k]}" for k in derived)
        given = ", ".join(f"{k}={v}" for k, v in wrong.items())
        raise ConfigError(
            f"{agg_arch} agg_config does not fit the backbone: {given} given, but {backbone_arch or 'the backbone'} "
            f"outputs a {c} x {h} x {w} map for {image_size[0]} x {image_size[1]} images "
            f"(stride {getattr(backbone, 'stride', '?')}). Use {right}, or leave them out to derive them, "
            f"or change image_size.")
    if getattr(backbone, "return_token", False) and not getattr(cls, "accepts_token", False):
        raise ConfigError(f"{backbone_arch or 'the backbone'} returns its class token (return_token=True) but "
                          f"{agg_arch} takes only the feature map: set backbone_config return_token to false")
    if min(shape) <= 0:
        raise ConfigError(f"{backbone_arch or 'the backbone'} outputs a {c} x {h} x {w} map for {image_size[0]} x "
                          f"{image_size[1]} images: too small for its stride {getattr(backbone, 'stride', '?')}; "
                          f"use a larger image_size")
    aggregator = cls(**{**derived, **config})
    if hasattr(aggregator, "check_input"):
        aggregator.check_input(c, h, w)
    if not aggregator.out_dim > 0:
        raise ConfigError(f"{agg_arch} with agg_config {config} gives a {aggregator.out_dim}-d descriptor; "
                          f"fix --model.agg_config")
    return aggregator
