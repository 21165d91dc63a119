"""Checkpoint writing that never leaves a half-written file in place of a good one."""
from pathlib import Path

from lightning.pytorch.plugins.io import TorchCheckpointIO

from .files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a hidden temporary file in the same folder, then rename it over the target (atomic on
    POSIX): a crash while saving leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        """Save ``checkpoint`` to ``path`` atomically."""
        with atomic_path(Path(path), keep_suffix=False) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
