"""Command-line arguments that train a tiny model on the tiny synthetic data in seconds (shared by tests)."""
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
