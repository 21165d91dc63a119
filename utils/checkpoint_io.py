"""Checkpoint writing that never leaves a half-written file in place of a good one."""
import os
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .files import atomic_path, write_error

FIX = "make room there, or write the runs to another file system (--logs_dir)"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a hidden temporary file in the target's folder, flush it to disk, then rename it over the
    target (atomic on POSIX): a crash while saving leaves the previous checkpoint intact.

    Lightning's own save stages the file in ``$TMPDIR`` (fsspec's local transaction) and copies it across
    when that is another file system: a small ``/tmp`` fails with no path named, and the copy is not atomic.
    Here nothing is written outside the target's folder and the checkpoint streams to the file (no second copy
    in memory). A write that fails (disk or quota full, read-only, file too large) raises ``WriteError``
    naming the file, the free space and the checkpoint's size.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        """Save ``checkpoint`` to ``path`` atomically."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        file = None
        try:
            with atomic_path(path, keep_suffix=False) as tmp:
                with open(tmp, "wb") as f:
                    file = _ErrorRecorder(f)
                    torch.save(checkpoint, file)
                    f.flush()
                    os.fsync(f.fileno())
            _sync_folder(path.parent)
        except OSError as err:
            raise write_error(path, err, _tensor_bytes(checkpoint), "checkpoint", FIX) from err
        except RuntimeError as err:
            # torch.save reports the OSError of a failed write as a RuntimeError of its own
            if file is None or file.error is None:
                raise
            raise write_error(path, file.error, _tensor_bytes(checkpoint), "checkpoint", FIX) from err


class _ErrorRecorder:
    """A binary file whose ``write`` and ``flush`` remember the OSError they raise."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as err:
            self.error = err
            raise


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entry of the renamed file to disk (POSIX; elsewhere the rename is what there is)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # file systems that cannot sync a folder
        pass
    finally:
        os.close(fd)


def _tensor_bytes(obj, seen: Optional[set] = None) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts, lists, tuples): about what its checkpoint file needs."""
    seen = set() if seen is None else seen
    if torch.is_tensor(obj):
        storage = obj.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0
