"""CosPlace's and EigenPlaces' released weights (gmberton/CosPlace v1.0, gmberton/EigenPlaces v1.0) -> our keys.

Both projects release ``GeoLocalizationNet`` state_dicts (``{backbone}_{dim}_cosplace.pth``,
``{backbone}_{dim}_eigenplaces.pth``), the same layout (CosPlace at 33ce8d0 and EigenPlaces at a2969f7,
``*_network.py``: ``backbone = nn.Sequential(*layers)``, ``aggregation = nn.Sequential(L2Norm, GeM,
Flatten, Linear, L2Norm)``)::

    backbone.<i>.*       ResNet: the children of torchvision's ResNet without avgpool and fc: conv1 (0),
                         bn1 (1), relu (2), maxpool (3), layer1..layer4 (4..7)
                         VGG16: vgg16.features[:-2]: convolutions at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28
    aggregation.1.p      (1,) GeM's exponent
    aggregation.3.weight (dim, C), aggregation.3.bias (dim,)   the linear layer

Ours: ``backbone.model.{conv1,bn1,layer1..layer4}.*`` (``models.backbones.resnet``), ``backbone.model.features.<i>.*``
(``models.backbones.vgg``), ``aggregator.gem.p``, ``aggregator.fc.*`` (``models.aggregators.cosplace``).
"""
import re

from .boq import RESNET_SEQUENTIAL

AGGREGATION = {"aggregation.1.p": "aggregator.gem.p", "aggregation.3.weight": "aggregator.fc.weight",
               "aggregation.3.bias": "aggregator.fc.bias"}
_BACKBONE_KEY = re.compile(r"backbone\.(\d+)\.(.+)")
# a ResNet's bn1, which a VGG16 trunk (no batch norm) lacks
RESNET_MARK = "backbone.1.running_mean"


def is_layout(state_dict: dict) -> bool:
    """True when ``state_dict`` is a CosPlace/EigenPlaces release's (``aggregation.*`` and ``backbone.<i>.*``)."""
    return "aggregation.3.weight" in state_dict and any(_BACKBONE_KEY.fullmatch(k) for k in state_dict)


def to_ours(state_dict: dict) -> dict:
    """The same values under our keys; ValueError naming every key that is not a CosPlace release's."""
    resnet = RESNET_MARK in state_dict
    renamed, unplaced = {}, []
    for key, value in state_dict.items():
        match = _BACKBONE_KEY.fullmatch(key)
        if key in AGGREGATION:
            renamed[AGGREGATION[key]] = value
        elif match and resnet and int(match.group(1)) in RESNET_SEQUENTIAL:
            renamed[f"backbone.model.{RESNET_SEQUENTIAL[int(match.group(1))]}.{match.group(2)}"] = value
        elif match and not resnet:
            renamed[f"backbone.model.features.{match.group(1)}.{match.group(2)}"] = value
        else:
            unplaced.append(key)
    if unplaced:
        shown = ", ".join(unplaced[:8]) + (f" ... ({len(unplaced)} in all)" if len(unplaced) > 8 else "")
        raise ValueError(f"not a CosPlace/EigenPlaces release's key: {shown}. Expected backbone.<i>.* and "
                         f"aggregation.{{1.p,3.weight,3.bias}}")
    return renamed
