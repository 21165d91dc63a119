"""Command-line arguments that train a tiny model on the tiny synthetic data in seconds (shared by tests)."""
import json
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
