"""Train a tiny model for two epochs with N CPU processes; record each step's places and the first step.

Run by tests/test_distributed_training.py as
``python tests/ddp_train.py <gsv_root> <devices> <out_dir> [--precision 64-true] [--per-rank]``.
``--per-rank`` is the recipe without the global loss and synchronised batch norm (for comparison).
Writes per rank ``steps_rank<r>.json`` (the place labels of every step, the loss and b_acc of every
step) and, from rank 0, ``initial.pt`` and ``first_step.pt`` (parameters and buffers before and after the
first optimizer step).
Images and augmentations are drawn per (seed, epoch, place) by the dataset itself, so every process count
sees the same ones.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from dataloaders.datamodule import VPRDataModule  # noqa: E402
from main import VPRModel  # noqa: E402
from utils.sync_batchnorm import GlobalBatchNormSync  # noqa: E402

PLACES_PER_STEP = 8


class Recorder(L.Callback):
    """Each step's place labels, loss and b_acc on this rank; the weights after the first step."""

    def __init__(self, out: Path):
        self.out, self.steps = out, []

    def on_train_start(self, trainer, pl_module):
        if trainer.global_rank == 0:
            torch.save({k: v.detach().clone() for k, v in pl_module.state_dict().items()}, self.out / "initial.pt")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append({"epoch": trainer.current_epoch, "places": batch[1][:, 0].tolist()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[-1].update(loss=float(outputs["loss"]), b_acc=float(trainer.callback_metrics["b_acc"]))
        if trainer.global_step == 1 and trainer.global_rank == 0:
            state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            torch.save(state, self.out / "first_step.pt")

    def on_train_end(self, trainer, pl_module):
        (self.out / f"steps_rank{trainer.global_rank}.json").write_text(json.dumps(self.steps))


def main(gsv_root: str, devices: int, out_dir: str, precision: str = "32-true", per_rank: bool = False) -> None:
    L.seed_everything(0)
    model = VPRModel(backbone_arch="resnet18", layers_to_freeze=-1, layers_to_crop=[4], agg_arch="MixVPR",
                     agg_config={"out_channels": 16, "mix_depth": 1, "out_rows": 2}, image_size=(32, 32),
                     lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-3, warmup_steps=0,
                     global_loss=not per_rank)
    data = VPRDataModule(gsv_root=gsv_root, cities=["Synthville", "Pixelburg", "Rendertown"],
                         batch_size=PLACES_PER_STEP, image_size=(32, 32), rand_augment_ops=0,
                         num_workers=0, val_sets=[])
    several = devices > 1
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if several else "auto",
                        plugins=[GlobalBatchNormSync()] if several and not per_rank else None, max_epochs=2,
                        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision=precision,
                        callbacks=[Recorder(Path(out_dir))])
    trainer.fit(model, data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("gsv_root")
    parser.add_argument("devices", type=int)
    parser.add_argument("out_dir")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--per-rank", action="store_true")
    args = parser.parse_args()
    main(args.gsv_root, args.devices, args.out_dir, args.precision, args.per_rank)
