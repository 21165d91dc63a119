"""Run folders that no command overwrites, and a last.ckpt that is always the latest state: the end of the
latest epoch, or the step where a preempted run stopped (``utils.preemption``).

Each run (fit, validate, test, resumed or not) logs into a new ``<logs_dir>/<name>/version_<n>/``:
CSV and TensorBoard logs, config.yaml, checkpoints/. The number is reserved by creating the folder
(exclusive ``mkdir`` on the first process) after the data were opened and checked, just before the
Trainer is made; a run that fails before it trained a step of its own (fresh or resumed) removes the
folder it reserved, so failed starts leave nothing behind.
"""
import os
import shutil
from pathlib import Path
from typing import Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from .files import next_version, remove_orphan_temporaries, reserve_version

LAST = "last"
# the version reserved by the first process, inherited by the processes DDP starts from it
VERSION_ENV = "VPR_RUN_VERSION"
# what a run folder holds before the run has produced anything
SETUP_FILES = {"config.yaml", "hparams.yaml", "checkpoints", "metrics.csv"}


class RunFolder(Callback):
    """The run's own folder: ``reserve`` creates it (exclusively, on the first process) before the Trainer
    exists; as a callback it clears what killed writers of this host left in the name's run folders
    (``utils.files.remove_orphan_temporaries``) and, when the run fails before its own first optimizer step
    (a resumed run: before its first step after the checkpoint's), removes the folder again (a failed start
    leaves nothing behind)."""

    def __init__(self, folder: Optional[Path] = None):
        self.folder = folder
        # the optimizer step this run's training began at (a resumed run's is the checkpoint's); None until then
        self.first_step: Optional[int] = None

    @staticmethod
    def reserve(loggers: list) -> Optional[Path]:
        """Give ``loggers`` (CSV, TensorBoard ...; instantiated, nothing written yet) the first free
        ``version_<n>`` of their ``<save_dir>/<name>``, created here on global rank 0; returns the folder."""
        if not loggers:
            return None
        first = loggers[0]
        root = Path(first.save_dir) / str(first.name)
        if rank_zero_only.rank == 0:
            version = reserve_version(root, 0)
            # processes that DDP starts from this one inherit the environment: the same folder
            os.environ[VERSION_ENV] = str(version)
        else:
            # other ranks write no logs; Lightning broadcasts the checkpoint folder from rank 0
            version = int(os.environ.get(VERSION_ENV, next_version(root)))
        for logger in loggers:
            if hasattr(logger, "_version"):
                logger._version = version
        return root / f"version_{version}"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.is_global_zero and self.folder is not None:
            runs = sorted(self.folder.parent.glob("version_*"))
            remove_orphan_temporaries(*runs, *(run / "checkpoints" for run in runs))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.first_step = trainer.global_step

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # a run that trained no step of its own leaves nothing (a resumed one failing before its first step
        # too, though its step count is the checkpoint's): only a folder holding what setting up wrote is removed
        folder = self.folder
        trained = self.first_step is not None and trainer.global_step > self.first_step
        if folder is None or not trainer.is_global_zero or trained or not folder.is_dir():
            return
        written = {p.name for p in folder.iterdir()} - SETUP_FILES
        checkpoints = folder / "checkpoints"
        if all(name.startswith("events.out.tfevents.") for name in written) and (
                not checkpoints.is_dir() or not any(checkpoints.iterdir())):
            shutil.rmtree(folder, ignore_errors=True)


def last_checkpoint() -> ModelCheckpoint:
    """A ModelCheckpoint that writes ``last.ckpt`` at the end of every training epoch (Lightning's
    ``save_last`` writes it only when a top-k checkpoint is written, so it lags once R@1 plateaus)."""
    return ModelCheckpoint(filename=LAST, monitor=None, save_top_k=1, every_n_epochs=1, save_on_train_epoch_end=True,
                           enable_version_counter=False)
