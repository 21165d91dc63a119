"""Networks and their training: VPRNet (backbone -> aggregator), VPRModel (the LightningModule that
trains it), loading of checkpoints and released weights, architecture inference, export, inference.

The names below load their module on first use: building and loading a network (``VPRNet``,
``load_weights``: torch and torchvision only, what torch.hub needs) does not import Lightning or the
metric-learning library, which only ``VPRModel`` needs.
"""
from importlib import import_module

_EXPORTS = {"VPRModel": "vpr_model", "VPRNet": "network", "build_network": "network", "load_model": "loading",
            "load_weights": "loading", "read_checkpoint": "loading", "load_release": "releases"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
