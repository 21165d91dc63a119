"""Run folders that no command overwrites, and a last.ckpt that is always the latest state: the end of the
latest epoch, or the step where a preempted run stopped (``utils.preemption``).

Each run (fit, validate, test, resumed or not) logs into a new ``<logs_dir>/<name>/version_<n>/``:
CSV and TensorBoard logs, config.yaml, checkpoints/. The number is reserved by creating the folder
(exclusive ``mkdir`` on the first process) after the data were opened and checked, just before the
Trainer is made; a run that fails before it trained a step of its own (fresh or resumed) removes the
folder it reserved, so failed starts leave nothing behind. Checkpoint names read as the recall tables do
(``RunCheckpoint``), and a finished command says where its files are (``run_summary``).
"""
import os
import re
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
# a recall@K metric as the model logs it: <set>/R<k>, a fraction
RECALL_METRIC = re.compile(r".+/R\d+")


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint with file names that read as the recall tables do: ``{epoch}`` counts epochs
    from 1 (the checkpoint written after the first epoch is ``epoch01``, "after epoch 1" in the tables) and
    recall@K metrics (``<set>/R<k>``, logged as fractions) are written in percent
    (``epoch04-pitts30k_val_R1=85.83.ckpt``). Only the names change: the monitored values stay fractions."""

    def format_checkpoint_name(self, metrics: dict, filename: Optional[str] = None, ver: Optional[int] = None,
                               prefix: Optional[str] = None) -> str:
        shown = dict(metrics)
        if "epoch" in shown:
            shown["epoch"] = shown["epoch"] + 1
        for key, value in metrics.items():
            if RECALL_METRIC.fullmatch(key):
                shown[key] = value * 100
        return super().format_checkpoint_name(shown, filename, ver, prefix)


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


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies under it (as the README writes LOGS/...), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_summary(trainer: Trainer) -> Optional[str]:
    """What a finished fit, validate or test wrote, for the end of its output: the run folder, then the best and
    last checkpoints, the recall table (recalls.md), the metrics and the settings, each only when it exists.
    None when the run has no folder (no logger)."""
    folder = next((c.folder for c in trainer.callbacks if isinstance(c, RunFolder)), None)
    if folder is None or not Path(folder).is_dir():
        return None
    folder = Path(folder)
    lines = [f"Run folder: {_shown(folder)}/"]
    for callback in trainer.checkpoint_callbacks:
        best = getattr(callback, "best_model_path", "")
        if callback.monitor is None or not best or not Path(best).is_file():
            continue
        score = callback.best_model_score
        value = float(score) * (100 if RECALL_METRIC.fullmatch(callback.monitor) else 1) if score is not None else None
        unit = " %" if RECALL_METRIC.fullmatch(callback.monitor) else ""
        lines.append(f"  best checkpoint: {_shown(Path(best))}"
                     + (f" ({callback.monitor} {value:.2f}{unit})" if value is not None else ""))
    last = folder / "checkpoints" / f"{LAST}.ckpt"
    if last.is_file():
        lines.append(f"  last checkpoint: {_shown(last)} (after epoch {trainer.current_epoch})")
    if (folder / "recalls.md").is_file():
        lines.append(f"  recall table: {_shown(folder / 'recalls.md')}")
    if (folder / "metrics.csv").is_file():
        curves = (f"; curves: python -m utils.plot_metrics {_shown(folder)}" if trainer.state.fn == "fit" else "")
        tensorboard = ", TensorBoard events" if any(folder.glob("events.out.tfevents.*")) else ""
        lines.append(f"  metrics: {_shown(folder / 'metrics.csv')}{tensorboard}{curves}")
    for name, what in (("skipped_images.txt", "images left out"), ("config.yaml", "settings")):
        if (folder / name).is_file():
            lines.append(f"  {what}: {_shown(folder / name)}")
    return "\n".join(lines)
