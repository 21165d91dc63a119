"""Aggregators: name -> constructor. Each maps a (B, C, H, W) map to an L2-normalised descriptor and
exposes ``out_dim``. One that also takes a backbone's ``(map, class token)`` says so with
``accepts_token = True`` (SALAD); one with a constraint on the map's size checks it in
``check_input(channels, height, width)``."""
from torch import nn

from utils.errors import ConfigError

from .boq import BoQ
from .convap import ConvAP
from .cosplace import CosPlace
from .gem import GeMPool
from .megaloc import MegaLoc
from .mixvpr import MixVPR
from .netvlad import NetVLAD
from .salad import SALAD

AGGREGATORS = {"mixvpr": MixVPR, "gem": GeMPool, "convap": ConvAP, "cosplace": CosPlace, "netvlad": NetVLAD,
               "boq": BoQ, "salad": SALAD, "megaloc": MegaLoc}
# the names as the papers write them: the choices offered on the command line (lookups ignore case)
AGGREGATOR_NAMES = ("MixVPR", "GeM", "ConvAP", "CosPlace", "NetVLAD", "BoQ", "SALAD", "MegaLoc")
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
