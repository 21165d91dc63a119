"""Command-line arguments that train a tiny model on the tiny synthetic data in seconds (shared by tests)."""
import json
import os
import signal as signal_module
import time
from pathlib import Path

from lightning.pytorch import Callback

REPO = Path(__file__).resolve().parents[1]


def tiny_cli_args(synthetic: dict, logs: Path, epochs: int = 1, name: str = "synthetic_demo") -> list[str]:
    """``main()`` arguments: the demo config on the tiny data, 32 x 32 images, 2 batches of 4 places."""
    return [
        "--config", str(REPO / "configs" / "synthetic_demo.yaml"),
        "--data.synthetic", "false",
        "--data.gsv_root", str(synthetic["gsv_cities"]),
        "--data.pitts_root", str(synthetic["pitts"]),
        "--data.msls_root", str(synthetic["msls"]),
        "--data.cities", "[Synthville, Pixelburg]",
        "--data.image_size", "[32, 32]",
        "--data.batch_size", "4",
        "--data.num_workers", "0",
        "--model.agg_config", '{"out_channels": 16, "mix_depth": 1, "out_rows": 2}',
        "--trainer.max_epochs", str(epochs),
        "--trainer.limit_train_batches", "2",
        "--trainer.enable_progress_bar", "false",
        "--logs_dir", str(logs),
        "--name", name,
    ]


# aggregator -> (backbone_config, agg_config, image side) on the test-only ``dinov2_vitt14`` (the tiny_dinov2
# fixture): 2 x 2 patches for BoQ, 3 x 3 for SALAD (more local features than its 4 clusters)
TINY_VIT = {
    "BoQ": ({"num_trainable_blocks": 1}, {"proj_channels": 64, "num_queries": 4, "num_layers": 1, "row_dim": 2}, 28),
    "SALAD": ({"num_trainable_blocks": 1, "return_token": True, "norm_layer": True},
              {"num_clusters": 4, "cluster_dim": 4, "token_dim": 4}, 42),
}


def tiny_vit(agg: str) -> dict:
    """VPRModel arguments of the tiny DINOv2 (2 blocks, the last one trained) with ``agg`` (BoQ or SALAD)."""
    backbone_config, agg_config, side = TINY_VIT[agg]
    return {"backbone_arch": "dinov2_vitt14", "backbone_config": backbone_config, "agg_arch": agg,
            "agg_config": agg_config, "image_size": (side, side)}


def model_args(settings: dict) -> list[str]:
    """``main()`` flags for VPRModel ``settings`` (image_size as data.image_size, which the model follows)."""
    settings = dict(settings)
    size = settings.pop("image_size", None)
    args = [a for k, v in settings.items() for a in (f"--model.{k}", v if isinstance(v, str) else json.dumps(v))]
    return args + (["--data.image_size", json.dumps(list(size))] if size else [])


class ConstantMetric(Callback):
    """Logs ``constant`` = 1.0 after every validation: a monitored value that never improves."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("constant", 1.0)


class LearningRates(Callback):
    """Records the learning rate of each parameter group at every training step."""

    def __init__(self):
        self.seen: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append([group["lr"] for group in trainer.optimizers[0].param_groups])


class TeacherInputs(Callback):
    """Records the shape of every batch of images the distillation teacher's network receives."""

    def __init__(self):
        self.shapes: list[tuple[int, ...]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.teacher.model.register_forward_pre_hook(lambda module, args: self.shapes.append(tuple(args[0].shape)))


class Losses(Callback):
    """Records (epoch, batch index, loss) of every training step."""

    def __init__(self):
        self.seen: list[tuple[int, int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.seen.append((trainer.current_epoch, batch_idx, float(loss)))


class PoisonWeights(Callback):
    """Turns every weight into NaN before optimizer step ``step``: a run that diverges there."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            for p in pl_module.parameters():
                p.data.fill_(float("nan"))


class StepLog(Callback):
    """Appends one JSON line per training step to ``path`` (``<path>.rank<r>`` under DDP): epoch, batch index,
    optimizer steps done, loss and the step's place labels; ``delay`` seconds of sleep per step slow a run
    down so that a signal sent from outside lands in the middle of an epoch."""

    def __init__(self, path: str, delay: float = 0.0):
        self.path, self.delay = path, delay

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.delay:
            time.sleep(self.delay)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        path = self.path if trainer.world_size == 1 else f"{self.path}.rank{trainer.global_rank}"
        step = {"epoch": trainer.current_epoch, "batch": batch_idx, "step": trainer.global_step,
                "loss": float(loss), "places": batch[1][:, 0].tolist()}
        with open(path, "a") as f:
            f.write(json.dumps(step) + "\n")


def read_steps(path: Path) -> list[dict]:
    """The steps a ``StepLog`` wrote to ``path``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).is_file() else []


class SignalAt(Callback):
    """Sends ``signal`` (a name: SIGTERM, SIGUSR1) to its own process once ``step`` optimizer steps are done:
    during the next training step (``phase='train'``), during the validation that follows them
    (``phase='validation'``) or when training starts (``phase='start'``: before callbacks listed after this
    one start); under DDP only from process ``rank``. The process must handle the signal (a
    test run in the test's own process would otherwise be killed): without a handler it raises instead."""

    def __init__(self, step: int, signal: str = "SIGTERM", phase: str = "train", rank: int = 0):
        self.step, self.signal, self.phase, self.rank = step, signal, phase, rank
        self.sent = False

    def _send(self, trainer) -> None:
        if self.sent or trainer.global_step != self.step or trainer.global_rank != self.rank:
            return
        signum = getattr(signal_module, self.signal)
        if not callable(signal_module.getsignal(signum)):
            raise AssertionError(f"no handler for {self.signal}: the signal would kill the process")
        self.sent = True
        os.kill(os.getpid(), signum)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.phase == "start":
            self._send(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.phase == "train":
            self._send(trainer)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.phase == "validation" and not trainer.sanity_checking:
            self._send(trainer)
