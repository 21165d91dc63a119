"""Shared utilities: recall@K, losses and miners by name, checkpoint loading, distributed gathering."""
from .losses import get_loss, get_miner
from .recall import get_validation_recalls

__all__ = ["get_loss", "get_miner", "get_validation_recalls"]
