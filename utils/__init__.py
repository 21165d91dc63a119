"""Leaf helpers: recall@K (faiss), losses and miners by name, distributed gathering, files, errors, plots.

Nothing here imports another package of the project. Submodules load their heavy dependencies (faiss,
pytorch-metric-learning, Lightning, matplotlib) only when they need them, so ``import utils.errors`` is
instant; the names below are resolved on first use.
"""
from importlib import import_module

_EXPORTS = {"get_validation_recalls": "recall", "get_loss": "losses", "get_miner": "losses"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
