"""The GPU check: does the data path keep a GPU busy on the paper's recipe, and what does a step cost?

    python bench/gpu_check.py --device cuda                   # the check (bench/gpu_check.sh runs it)
    python bench/gpu_check.py --device cpu --steps 3 --places 4 --image-size 64 64 --images 32   # smoke run

No data set is needed: generated 640 x 480 JPEGs (``dataloaders.synthetic.photos``) laid out as
GSV-Cities (one city, hard links) and as a folder-format evaluation set. Measured, for the recipe
(``--config``, default configs/mixvpr_resnet50_4096.yaml: ResNet50 + MixVPR 4096, P=120 places x K=4 images
of 320 x 320, SGD, multi-similarity loss) at ``--precision`` (bf16-mixed) through Lightning's Trainer:

- training images/s with the CPU data path (``data.decode_on cpu``: workers decode, resize, RandAugment),
  with the device data path (``decode_on gpu``: nvJPEG + resize + RandAugment on the device), and with the
  batches already on the device (the model's ceiling), after ``--warmup`` steps; the data paths' ratio to
  the ceiling says whether data loading bounds training;
- peak device memory of those steps (``torch.cuda.max_memory_allocated``);
- evaluation embedding images/s (``models.inference.embed_paths``, batch 256, the same precision);
- faiss exact search (4096-d, 100k database, 2k queries) on the CPU and, when faiss has GPU support, on
  the GPU.

Prints one Markdown table; ``--out`` also writes it to a file.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402

from dataloaders.datamodule import VPRDataModule, default_num_workers  # noqa: E402
from dataloaders.synthetic.photos import folder_layout, gsv_layout, make_jpegs  # noqa: E402
from models import VPRModel  # noqa: E402
from models.inference import embed_paths  # noqa: E402
from utils.recipes import read_recipe  # noqa: E402

RECIPE = REPO / "configs" / "mixvpr_resnet50_4096.yaml"


class StepClock(L.Callback):
    """Wall time of the training steps after ``warmup`` steps (synchronised with the device)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.timed = warmup, None, 0

    def _sync(self, trainer):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self._sync(trainer)
            self.start = time.perf_counter()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.timed += 1

    def on_train_end(self, trainer, pl_module):
        self._sync(trainer)
        self.seconds = time.perf_counter() - self.start


def model_settings(config: Path, image_size) -> dict:
    """VPRModel arguments of the recipe, random weights, at ``image_size``."""
    model = dict(read_recipe(config)["model"])
    # input dimensions are derived from the backbone at this size (a smoke run may use a smaller one)
    agg = {k: v for k, v in (model.get("agg_config") or {}).items() if k not in ("in_channels", "in_h", "in_w")}
    model.update(pretrained=False, image_size=list(image_size), warmup_steps=0, agg_config=agg)
    return model


def fit_rate(model_args: dict, train_data, device: str, precision: str, steps: int, warmup: int,
             images_per_step: int, datamodule=None) -> tuple[float, float]:
    """(training images/s, peak device memory GB) of ``steps`` optimizer steps through a Trainer."""
    clock = StepClock(warmup)
    trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, precision=precision,
                        max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
                        num_sanity_val_steps=0)
    model = VPRModel(**model_args)
    if datamodule is not None:
        trainer.fit(model, datamodule=datamodule)
    else:
        trainer.fit(model, train_dataloaders=train_data)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return clock.timed * images_per_step / clock.seconds, peak


class ResidentBatches:
    """One uint8 batch of P x K images already on the device, served ``steps`` times (the ceiling's data)."""

    def __init__(self, places: int, k: int, image_size, device: str, steps: int):
        self.images = torch.randint(0, 256, (places, k, 3, *image_size), dtype=torch.uint8, device=device)
        self.labels = torch.arange(places, device=device).repeat_interleave(k).view(places, k)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter([[self.images, self.labels]] * self.steps)


def faiss_rates(dim: int = 4096, database: int = 100_000, queries: int = 2_000) -> dict[str, float]:
    """Seconds of an exact top-100 search on the CPU, and on the GPU when faiss has GPU support."""
    import faiss

    rng = np.random.default_rng(0)
    db = rng.standard_normal((database, dim), dtype=np.float32)
    q = rng.standard_normal((queries, dim), dtype=np.float32)
    out = {}
    index = faiss.IndexFlatL2(dim)
    index.add(db)
    start = time.perf_counter()
    index.search(q, 100)
    out["cpu"] = time.perf_counter() - start
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        gpu.search(q[:100], 100)
        start = time.perf_counter()
        gpu.search(q, 100)
        out["gpu"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda or cpu (a smoke run)")
    parser.add_argument("--config", type=Path, default=RECIPE, help="the recipe (model, P x K, image size)")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--places", type=int, default=None, help="places per step (default: the recipe's)")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, help="default: the recipe's")
    parser.add_argument("--images", type=int, default=512, help="distinct generated JPEGs")
    parser.add_argument("--eval-images", type=int, default=4096, help="images embedded for the evaluation rate")
    parser.add_argument("--workers", type=int, default=None, help="data workers (default: the CPU count's)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vpr_gpu_check")
    parser.add_argument("--faiss", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()

    recipe = read_recipe(args.config)
    places = args.places or recipe["data"]["batch_size"]
    k = recipe["data"]["img_per_place"]
    image_size = tuple(args.image_size or recipe["data"]["image_size"])
    ops = recipe["data"]["rand_augment_ops"]
    workers = default_num_workers() if args.workers is None else args.workers
    steps = args.steps + args.warmup
    start = time.perf_counter()
    paths = make_jpegs(args.cache / "jpegs", args.images)
    gsv = gsv_layout(args.cache / f"gsv_{places * steps}", paths, places=places * steps, per_place=k)
    folder = folder_layout(args.cache / "folder", paths, 200, 50)
    made = time.perf_counter() - start
    model_args = model_settings(args.config, image_size)
    rows = {}  # label -> (images/s, peak memory GB)
    for decode_on, label in (("cpu", f"training, data path on the CPU ({workers} workers)"),
                             ("gpu", f"training, data path on the device (decode_on gpu, {workers} workers)")):
        dm = VPRDataModule(gsv_root=str(gsv), cities=["Benchtown"], batch_size=places, img_per_place=k,
                           image_size=image_size, rand_augment_ops=ops, num_workers=workers, decode_on=decode_on,
                           val_sets=[f"folder:{folder}"])
        rows[label] = fit_rate(model_args, None, args.device, args.precision, steps, args.warmup, places * k, dm)
    ceiling, ceiling_peak = fit_rate(model_args, ResidentBatches(places, k, image_size, args.device, steps),
                                     args.device, args.precision, steps, args.warmup, places * k)
    net = VPRModel(**model_args).net
    eval_paths = [str(paths[i % len(paths)]) for i in range(args.eval_images)]
    embed_paths(net, eval_paths[:256], image_size, batch_size=256, device=args.device, precision=args.precision,
                num_workers=workers, progress=False)
    start = time.perf_counter()
    embed_paths(net, eval_paths, image_size, batch_size=256, device=args.device, precision=args.precision,
                num_workers=workers, progress=False)
    eval_rate = len(eval_paths) / (time.perf_counter() - start)

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    lines = [f"GPU check on {name}, torch {torch.__version__}, {os.cpu_count()} CPUs, recipe {args.config.name}: "
             f"P={places} x K={k} images of {image_size[0]} x {image_size[1]}, {args.precision}, "
             f"{args.steps} timed steps after {args.warmup} (data generated in {made:.0f} s)", "",
             "| measurement | images/s | / ceiling | peak memory (GB) |", "|---|---|---|---|"]
    for label, (rate, peak) in rows.items():
        lines.append(f"| {label} | {rate:.0f} | {rate / ceiling:.2f} | {peak:.1f} |")
    lines.append(f"| training, batches already on the device (ceiling) | {ceiling:.0f} | 1.00 | {ceiling_peak:.1f} |")
    lines.append(f"| evaluation embedding (batch 256, {workers} workers) | {eval_rate:.0f} | | |")
    if args.faiss:
        for where, seconds in faiss_rates().items():
            lines.append(f"| faiss exact search on the {where.upper()}, 2k queries x 100k x 4096-d, top-100 | "
                         f"{2_000 / seconds:.0f} queries/s | | |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
