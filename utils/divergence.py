"""Stop a run whose loss is no longer a number, before any checkpoint is written from it."""
import math
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from .errors import UserError

LAST = "last.ckpt"


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or infinite: the settings (learning rate, loss) make it diverge."""


class StopOnNonFiniteLoss(Callback):
    """Raise ``TrainingDiverged`` at the first optimizer step whose loss is NaN or infinite, naming the step.

    Lightning runs checkpoint callbacks after every other callback, so nothing is saved from the step that
    diverged: ``last.ckpt`` stays the end of the last good epoch. Under DDP all processes agree (one
    all-reduce of a flag per step) so that they stop together.
    """

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not torch.is_tensor(loss):
            return
        value = float(loss.detach().float().mean())
        diverged = trainer.strategy.reduce_boolean_decision(not math.isfinite(value), all=False)
        if not diverged:
            return
        folders = {Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}
        kept = sorted(p for folder in folders for p in folder.glob("*.ckpt"))
        last = next((p for p in kept if p.name == LAST), None)
        where = (f"{last} holds the end of epoch {trainer.current_epoch - 1}, the last good one" if last is not None
                 else f"the checkpoints {[str(p) for p in kept]} were written before it" if kept
                 else "no checkpoint had been written yet")
        raise TrainingDiverged(
            f"training diverged: the loss is {value} at optimizer step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}, batch {batch_idx}); nothing was saved from that step on ({where}). Lower the learning rate "
            f"(--model.lr {pl_module.hparams.get('lr', '?')}), lengthen the warm-up (--model.warmup_steps) or use "
            f"--trainer.gradient_clip_val, then start again from the last good checkpoint with --model.init_from "
            f"<checkpoint>.")
