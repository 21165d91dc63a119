"""What Lightning adds to a training step: a Lightning step with logging against a bare PyTorch step on
the same batch, paired step by step.

    python bench/train_overhead.py                                   # the demo's model on the CPU
    python bench/train_overhead.py --config configs/mixvpr_resnet50_4096.yaml --places 120 --device cuda \\
        --precision bf16-mixed

Two copies of the model with the same weights. Lightning trains one (``Trainer.fit``: VPRModel's
training_step with its loss/b_acc logging, CSVLogger writing every step, LearningRateMonitor, the
per-step LR schedule); next to each of its steps (alternately before and after), a callback runs one
bare step on the other copy with the same batch (zero_grad, forward, VPRModel.metric_loss, backward,
optimizer and scheduler step, under the same autocast). The Lightning step is the time from one step's
start to the next less the bare step in between, so it includes everything Lightning does between two
steps (fetching the batch, hooks, logging). Paired steps share the machine's state at that moment, so
the ratio is robust to load drifting over the run; the median ratio over the steps after a warm-up is
the figure. On a shared CPU, ``--threads 1`` is steadier (OpenMP threads of a loaded machine wait for
each other). Prints Markdown.
"""
import argparse
import copy
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import VPRModel  # noqa: E402
from utils.recipes import read_recipe  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "synthetic_demo.yaml"
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
# settings of a distillation teacher: not part of the network timed here
TEACHER = {"distillation", "init_from", "teacher_checkpoint", "teacher_config", "teacher_precision", "distill_loss", "distill_weight",
           "distill_config"}


class PairedSteps(L.Callback):
    """Next to each Lightning step, one bare step of ``twin`` on the same batch; records both durations.

    The bare step runs before the Lightning step on even steps and after it on odd ones, so neither
    gains from going second (warm caches, memory the other just freed). Interval i runs from step i's
    start hook to step i+1's; the Lightning step is the interval less the bare step inside it.
    """

    def __init__(self, twin: VPRModel, host_batches: list, precision: str, device: torch.device):
        self.twin, self.host_batches, self.device = twin, host_batches, device
        dtype = AUTOCAST[precision]
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.optimizer, self.schedulers = None, []
        self.bare, self.lightning = [], []
        self._interval_start = None

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        self.twin.to(pl_module.device).train()
        [self.optimizer], schedules = self.twin.configure_optimizers()
        # stepped per optimizer step as Lightning steps them (per-epoch ones never step within the measured epoch)
        self.schedulers = [s["scheduler"] for s in schedules if s.get("interval") == "step"]

    def bare_step(self, batch) -> None:
        """The loop a PyTorch user writes by hand, from the batch in host memory."""
        places, labels = (t.to(self.device, non_blocking=True) for t in batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, _ = self.twin.metric_loss(self.twin(places.flatten(0, 1)), labels.flatten())
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        for scheduler in self.schedulers:
            scheduler.step()

    def _timed_bare_step(self, batch_idx: int) -> None:
        start = self._sync()
        # the host copy: Lightning's batch is already on the device, its transfer counted in its step
        self.bare_step(self.host_batches[batch_idx])
        self.bare.append(self._sync() - start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = self._sync()
        if self._interval_start is not None:
            self.lightning.append(now - self._interval_start - self.bare[-1])
        self._interval_start = now
        if batch_idx % 2 == 0:
            self._timed_bare_step(batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % 2 == 1:
            self._timed_bare_step(batch_idx)


def run(config: Path, places: int, steps: int, warmup: int, device: str, precision: str, threads: int) -> dict:
    """Paired step times and their median ratio for the model and images of ``config``."""
    torch.set_num_threads(threads)
    rec = read_recipe(config)
    data = rec.get("data", {})
    image_size, per_place = tuple(data.get("image_size", (320, 320))), int(data.get("img_per_place", 4))
    places = places or int(data.get("batch_size", 32))
    model_args = {k: v for k, v in rec["model"].items() if k not in TEACHER | {"pretrained"}}
    torch.manual_seed(0)
    model = VPRModel(**model_args, pretrained=False, image_size=image_size)
    twin = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    # a few image tensors reused in turn (the recipe's batch is 590 MB); pinned for the GPU, so that both
    # loops copy to the device from the same kind of memory
    pool = [torch.randn(places, per_place, 3, *image_size, generator=generator) for _ in range(min(4, steps + 1))]
    if device != "cpu":
        pool = [images.pin_memory() for images in pool]
    batches = [(pool[i % len(pool)], torch.arange(places).repeat_interleave(per_place).view(places, per_place)
                + 1000 * i) for i in range(steps + 1)]
    paired = PairedSteps(twin, batches, precision, torch.device(device))
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
                            precision=precision, max_steps=steps + 1, limit_val_batches=0, num_sanity_val_steps=0,
                            logger=CSVLogger(logs), log_every_n_steps=1, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[LearningRateMonitor(logging_interval="step"), paired])
        trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    # the last step opens an interval that no next step closes: pairs are the first `steps`
    pairs = list(zip(paired.bare, paired.lightning))[warmup:]
    ratios = sorted(lightning / bare for bare, lightning in pairs)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else ratios * 3
    return {"config": config.stem, "images/step": places * per_place,
            "image size": f"{image_size[0]} x {image_size[1]}", "precision": precision, "device": device,
            "paired steps": len(pairs),
            "bare step (s, median)": statistics.median(b for b, _ in pairs),
            "Lightning step (s, median)": statistics.median(lt for _, lt in pairs),
            "Lightning / bare (median)": statistics.median(ratios),
            "ratio IQR": f"{quartiles[0]:.3f}-{quartiles[2]:.3f}"}


def main() -> None:
    """Measure and print one row."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEMO, help="the recipe whose model and image size to use")
    parser.add_argument("--places", type=int, default=None, help="places per step (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=30, help="paired steps measured after the warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="paired steps discarded first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="32-true", choices=sorted(AUTOCAST))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    args = parser.parse_args()
    row = run(args.config, args.places, args.steps + args.warmup, args.warmup, args.device, args.precision,
              args.threads)
    print(f"torch {torch.__version__}, lightning {L.__version__}, {args.threads} threads\n")
    keys = list(row)
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    print("| " + " | ".join(keys) + " |\n|" + "|".join("---" for _ in keys) + "|\n| "
          + " | ".join(cell(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
