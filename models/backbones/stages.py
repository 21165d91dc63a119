"""The shared meaning of ``layers_to_crop`` and ``layers_to_freeze`` over a trunk of four stages, and the
check for the networks that are never cropped."""
from typing import Sequence

from utils.errors import ConfigError


def kept_stages(layers_to_crop: Sequence[int], layers_to_freeze: int) -> list[int]:
    """Stages 1..4 left after cropping; raises naming what is allowed when either setting is invalid.

    layers_to_crop: trailing stages to remove, e.g. ``[4]`` or ``[3, 4]``; stage 1 always stays.
    layers_to_freeze: ``-1`` trains all, ``0`` freezes the stem, ``k`` the stem and stages 1..k.
    """
    crop = sorted(set(layers_to_crop))
    if crop and crop != list(range(crop[0], 5)):
        raise ConfigError(f"layers_to_crop={list(layers_to_crop)}: only trailing stages can be cropped, "
                         f"e.g. [4] or [3, 4]")
    if crop and crop[0] < 2:
        raise ConfigError(f"layers_to_crop={list(layers_to_crop)}: keep at least stage 1 (crop [2, 3, 4] at most)")
    if not -1 <= layers_to_freeze <= 4:
        raise ConfigError(f"layers_to_freeze={layers_to_freeze}: use -1 (train all), 0 (freeze the stem) "
                         f"or 1..4 (freeze the stem and stages 1..k)")
    return [i for i in range(1, 5) if i not in crop]


def check_uncropped(model_name: str, layers_to_crop: Sequence[int]) -> None:
    """The Lightweight-MixVPR project's networks are used whole: ``[]`` and ``[4]`` (which its published
    constructor calls pass, and its code ignores) are accepted and crop nothing; anything else raises."""
    if sorted(set(layers_to_crop)) not in ([], [4]):
        raise ConfigError(
            f"layers_to_crop={list(layers_to_crop)}: {model_name} is the Lightweight-MixVPR network, used whole "
            f"(nothing is cropped; [] or [4], as that project's calls pass, mean the same). For a trunk cut at "
            f"stride 16 or 8 use the torchvision_* backbones (e.g. torchvision_efficientnet_b0, "
            f"torchvision_mobilenet_v2) or a ResNet.")
