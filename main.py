"""Train and evaluate visual place recognition models with Lightning.

``python main.py`` trains the embedded synthetic demo (configs/synthetic_demo.yaml).
``python main.py --config configs/mixvpr_resnet50_4096.yaml --data.gsv_root ... --data.pitts_root ...``
trains a published recipe; ``python main.py --help`` lists every setting. Subcommands fit (default),
validate and test are Lightning's. ``from main import VPRModel`` gives the model class.
"""
import sys
from pathlib import Path

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from dataloaders.datamodule import VPRDataModule
from dataloaders.eval import eval_set_name
from models import VPRModel

__all__ = ["VPRModel", "VPRDataModule", "VPRCLI", "main"]

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "synthetic_demo.yaml"
SUBCOMMANDS = ("fit", "validate", "test")


class VPRCLI(LightningCLI):
    """LightningCLI with the image size shared by data and model, and best-R@1 checkpointing."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.image_size", "model.image_size")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": None,  # None: R@1 of the first validation set
            "checkpoint.mode": "max",
            "checkpoint.save_top_k": 3,
            "checkpoint.save_last": True,
            "checkpoint.auto_insert_metric_name": False,
        })

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.checkpoint.monitor is None:
            config.checkpoint.monitor = f"{eval_set_name(config.data.val_sets[0])}/R1"
        if config.checkpoint.filename is None:
            metric = config.checkpoint.monitor
            config.checkpoint.filename = f"epoch{{epoch:02d}}-{metric.replace('/', '_')}={{{metric}:.4f}}"
        resume_in_same_version(config)


def resume_in_same_version(config) -> None:
    """Resuming from ``.../version_N/checkpoints/x.ckpt`` logs and checkpoints into version_N again
    (Lightning would open version_N+1 and forget the best-k checkpoints already written)."""
    ckpt = Path(str(config.get("ckpt_path") or ""))
    logger = config.trainer.get("logger")
    if ckpt.parent.name != "checkpoints" or not ckpt.parent.parent.name.startswith("version_"):
        return
    if not hasattr(logger, "init_args") or logger.init_args.get("version") is not None:
        return
    logger.init_args.version = int(ckpt.parent.parent.name[len("version_"):])


def main(args=None) -> VPRCLI:
    """Run the command line; no arguments trains the synthetic demo, no subcommand means ``fit``."""
    args = list(sys.argv[1:] if args is None else args)
    if not args:
        args = ["--config", str(DEFAULT_CONFIG)]
    if args[0] not in SUBCOMMANDS:
        args = ["fit", *args]
    return VPRCLI(
        VPRModel, VPRDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "default_root_dir": "LOGS",
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "LOGS"}},
            "callbacks": [LearningRateMonitor(logging_interval="step")],
            "plugins": [{"class_path": "utils.checkpoint_io.AtomicCheckpointIO"}],
            "num_sanity_val_steps": 0,
        },
        auto_configure_optimizers=False,
        args=args,
    )


if __name__ == "__main__":
    main()
