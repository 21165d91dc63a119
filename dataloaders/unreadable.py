"""Unreadable images: the parallel check before training, and the record of the images left out.

``find_unreadable`` decodes every file with the decoder training and evaluation use (``image_io``), in
DataLoader worker processes, with a progress bar: what it passes, training reads. ``SkippedImages`` (a
Lightning callback) collects the images left out during a run (``data.skip_unreadable``: at setup by
``data.check_images``, in training batches, in validation and test batches), lists each once in
``skipped_images.txt`` in the run folder, and logs their number as the metric ``skipped_images``.
"""
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from utils.distributed import gather_objects
from utils.errors import DataError, NotFoundError
from utils.files import atomic_write_text

from .image_io import decode_rgb, read_bytes
from .transforms import init_worker

SKIPPED_FILE = "skipped_images.txt"
METRIC = "skipped_images"


class _Probe(Dataset):
    """Item i: (i, whether file i reads and decodes)."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, bool]:
        try:
            decode_rgb(read_bytes(self.paths[index]), self.paths[index])
            return index, True
        except (DataError, NotFoundError):
            return index, False


def find_unreadable(paths: Sequence[str | Path], num_workers: int = 0, desc: str = "checking images",
                    progress: bool = True, batch_size: int = 64) -> np.ndarray:
    """Sorted indices of the files of ``paths`` that cannot be read or decoded (full decode, in
    ``num_workers`` processes; a progress bar on stderr unless ``progress`` is False)."""
    loader = DataLoader(_Probe(paths), batch_size=batch_size, num_workers=num_workers, worker_init_fn=init_worker)
    bad = []
    for indices, readable in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False,
                                  dynamic_ncols=True):
        bad.extend(indices[~readable].tolist())
    return np.asarray(sorted(bad), dtype=np.int64)


def unreadable_error(what: str, paths: Sequence[str], unreadable: np.ndarray) -> DataError:
    """The error for ``unreadable`` files found among ``paths`` of the data set ``what``."""
    shown = [str(paths[i]) for i in unreadable[:5]]
    return DataError(f"{what}: {len(unreadable)} of {len(paths)} images cannot be read or decoded, e.g. {shown}. "
                     f"Replace them, or set --data.skip_unreadable true to leave unreadable images out")


class SkippedImages(Callback):
    """Lists every image a run left out as unreadable once, in ``<run folder>/skipped_images.txt``, and logs
    their number (``skipped_images``) at the end of each training and validation epoch.

    Sources: ``datamodule.skipped_at_setup`` (found by ``data.check_images``), the third element of
    training batches (indices into the training set's files) and of evaluation batches (readable flags).
    Under DDP each process reports what it met; the lists are merged at epoch end.
    """

    def __init__(self):
        self.skipped: set[str] = set()
        self._written = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        self.skipped |= {str(p) for paths in getattr(datamodule, "skipped_at_setup", {}).values() for p in paths}
        self._write(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        dataset = getattr(getattr(trainer, "datamodule", None), "train_dataset", None)
        if dataset is not None and isinstance(batch, (list, tuple)) and len(batch) > 2 and torch.is_tensor(batch[2]):
            self.skipped |= {str(dataset.root / "Images" / dataset.files[i]) for i in batch[2].flatten().tolist()}

    def _eval_batch(self, trainer: Trainer, batch, dataloader_idx: int, loaders) -> None:
        if not (isinstance(batch, (list, tuple)) and len(batch) > 2 and torch.is_tensor(batch[2])):
            return
        readable = batch[2].bool()
        if bool(readable.all()):
            return
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        images = loaders[dataloader_idx].dataset.images
        self.skipped |= {images[i] for i in batch[1][~readable.to(batch[1].device)].tolist()}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch(trainer, batch, dataloader_idx, trainer.val_dataloaders)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch(trainer, batch, dataloader_idx, trainer.test_dataloaders)

    def _epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for part in gather_objects(sorted(self.skipped)):
            self.skipped |= set(part)
        self._write(trainer)
        if self.skipped or self._written:
            pl_module.log(METRIC, float(len(self.skipped)), rank_zero_only=True)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_end(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._epoch_end(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_end(trainer, pl_module)

    def _write(self, trainer: Trainer) -> None:
        """Rewrite the list when it grew (first process only); say so once per growth."""
        if len(self.skipped) == self._written or not trainer.is_global_zero:
            return
        folder: Optional[str] = trainer.log_dir
        if folder is not None:
            listing = Path(folder) / SKIPPED_FILE
            atomic_write_text(listing, "".join(f"{p}\n" for p in sorted(self.skipped)))
            print(f"skipped {len(self.skipped)} unreadable image(s) so far, listed in {listing}")
        self._written = len(self.skipped)
