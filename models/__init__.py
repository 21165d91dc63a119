"""Models: VPRModel, backbones and aggregators."""
from .vpr_model import VPRModel

__all__ = ["VPRModel"]
