"""Aggregators: name -> constructor. Each maps a (B, C, H, W) map to an L2-normalised descriptor and
exposes ``out_dim``."""
from torch import nn

from utils.errors import ConfigError

from .convap import ConvAP
from .cosplace import CosPlace
from .gem import GeMPool
from .mixvpr import MixVPR
from .netvlad import NetVLAD

AGGREGATORS = {"mixvpr": MixVPR, "gem": GeMPool, "convap": ConvAP, "cosplace": CosPlace, "netvlad": NetVLAD}
# the names as the papers write them: the choices offered on the command line (lookups ignore case)
AGGREGATOR_NAMES = ("MixVPR", "GeM", "ConvAP", "CosPlace", "NetVLAD")
assert {n.lower() for n in AGGREGATOR_NAMES} == set(AGGREGATORS)


def aggregator_class(name: str) -> type:
    """The class registered as ``name`` (case-insensitive exact match)."""
    try:
        return AGGREGATORS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown aggregator {name!r}; choose one of {sorted(AGGREGATORS)}") from None


def build_aggregator(name: str, **config) -> nn.Module:
    """Build the aggregator registered as ``name`` with ``config``."""
    return aggregator_class(name)(**config)
