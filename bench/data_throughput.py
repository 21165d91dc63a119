"""Images per second of the training data path: per stage on one core, whole, and through the DataLoader.

    python bench/data_throughput.py                         # stages, whole paths, DataLoader with 0..N workers
    python bench/data_throughput.py --workers 0 1 2 --reps 5
    python bench/data_throughput.py --device cuda --only device   # decode_on=gpu: nvJPEG + resize + RandAugment
    python bench/data_throughput.py --only eval             # validation of the synthetic demo, by worker count

Inputs: generated 640 x 480 JPEGs (the size of GSV-Cities images; smooth multi-scale texture with
edges, quality 90, about 115 kB each), written once under ``--cache``. The paper's setting: 320 x 320,
RandAugment(3). Every figure is the best of ``--reps`` runs, on one torch/OpenCV thread; single-core
rates count this process's CPU time (a busy shared machine inflates wall time, not CPU time), the
DataLoader rates wall time (note the load average printed with them).

- ``stages``: the original float path (PIL decode, PIL resize, torchvision RandAugment on PIL, ToTensor,
  Normalize) and ours (read bytes, decode to uint8 tensor, uint8 resize, RandAugment on uint8, no float
  work: ``normalize_batch`` runs on the device), stage by stage and whole (the whole paths draw their
  operations identically under one seed). Also bytes per image handed across processes.
- ``loader``: ``GSVCitiesDataset`` batches (places x 4 images, decode_on=cpu) through a DataLoader with
  N workers, after the workers' first batch; compare with N x the single-core rate of ``stages``.
- ``device``: ``EncodedImages.decode`` + ``normalize_batch`` (decode_on=gpu) on ``--device``, batches
  of ``--device-batch`` images, after a warm-up batch; and the uint8 batch's copy + normalisation.
- ``eval``: ``trainer.validate`` of the synthetic demo model (ResNet18 + MixVPR, 48 x 64) on the
  synthetic pitts30k_val (1,040 images; generated once as ``python main.py`` does) with 0, the default
  (``default_num_workers``) and more workers: wall seconds, best of ``--reps``.

Measured on the 2-core development machine (AMD EPYC), shared with other jobs (load average 4-7);
single-core figures are CPU time, best of 5 (``--only stages loader --workers 0 1 2 --reps 5``):

| stage (one core) | img/s | ms/img |
|---|---|---|
| old: decode (PIL open + convert) | 279 | 3.58 |
| old: resize (PIL) | 290 | 3.45 |
| old: RandAugment(3) (PIL) | 138 | 7.27 |
| old: ToTensor + Normalize | 936 / 2795 | 1.07 + 0.36 |
| old: whole path | 50 | 20.07 |
| new: decode (torchvision, uint8) | 444 | 2.25 |
| new: resize (uint8) | 1345 | 0.74 |
| new: RandAugment(3) (uint8) | 321 | 3.11 |
| new: whole path (to uint8) | 128 | 7.83 |
| new: eval path (decode + resize) | 237 | 4.22 |

New / old whole path: 2.57x here (2.2-2.9x over five runs on the busy machine); under one seed the
two paths' images differ by 0.001 grey level on average (no pixel more than one level apart); 0.31 MB
instead of 1.23 MB per image crosses the worker boundary. DataLoader (8 places x 4 images per batch):
0 / 1 / 2 workers gave 120 / 112 / 110 images per CPU-second of main process + workers (worker
overhead 7-8 %; wall rates 79 / 106 / 111 img/s are set by the other jobs on the two cores).
Validation of the synthetic demo: 9.83 s with 0 workers, 9.67 s with the default (1 here), 11.42 s
with 2, 10.81 s with 4 (``--only eval --workers 0 1 2 4``).
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.datamodule import default_num_workers  # noqa: E402
from dataloaders.gsv_cities import GSVCitiesDataset, collate_places  # noqa: E402
from dataloaders.image_io import decode_rgb, read_bytes  # noqa: E402
from dataloaders.rand_augment import augment_image, magnitudes  # noqa: E402
from dataloaders.synthetic.photos import gsv_layout, make_jpegs  # noqa: E402
from utils.images import load_image  # noqa: E402
from dataloaders.transforms import (EncodedCollate, TrainTransform, init_worker, normalize_batch,  # noqa: E402
                                    resize_uint8, train_transform)

IMAGE_SIZE = (320, 320)
NUM_OPS = 3


def best_rate(fn: Callable, items: Sequence, reps: int) -> float:
    """Items per CPU-second of ``fn`` over ``items`` (one thread: per core), best of ``reps`` passes.
    CPU time rather than wall time: other processes on a shared machine do not inflate it."""
    best = float("inf")
    for rep in range(reps):
        torch.manual_seed(rep)
        start = time.process_time()
        for item in items:
            fn(item)
        best = min(best, time.process_time() - start)
    return len(items) / best


def stages(paths: list[Path], reps: int) -> dict[str, float]:
    """Single-core images/s of each stage of the old and the new CPU path, and of both whole paths."""
    import torchvision.transforms as T
    from dataloaders.transforms import IMAGENET_MEAN, IMAGENET_STD
    rates = {}
    resize = T.Resize(IMAGE_SIZE, interpolation=T.InterpolationMode.BILINEAR, antialias=True)
    rand_augment = T.RandAugment(num_ops=NUM_OPS, interpolation=T.InterpolationMode.BILINEAR)
    pil = [load_image(p) for p in paths]
    small = [resize(p) for p in pil]
    to_tensor, normalize = T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    rates["old: decode (PIL open + convert)"] = best_rate(load_image, paths, reps)
    rates["old: resize (PIL)"] = best_rate(resize, pil, reps)
    rates["old: RandAugment(3) (PIL)"] = best_rate(rand_augment, small, reps)
    rates["old: ToTensor"] = best_rate(to_tensor, small, reps)
    rates["old: Normalize"] = best_rate(normalize, [to_tensor(s) for s in small], reps)
    old = train_transform(IMAGE_SIZE, NUM_OPS)
    rates["old: whole path"] = best_rate(lambda p: old(load_image(p)), paths, reps)

    data = [read_bytes(p) for p in paths]
    decoded = [decode_rgb(d, "") for d in data]
    resized = [resize_uint8(d, IMAGE_SIZE) for d in decoded]
    hwc = [np.ascontiguousarray(r.permute(1, 2, 0).numpy()) for r in resized]
    table = magnitudes(*IMAGE_SIZE)
    rates["new: read bytes"] = best_rate(read_bytes, paths, reps)
    rates["new: decode (torchvision, uint8)"] = best_rate(lambda d: decode_rgb(d, ""), data, reps)
    rates["new: resize (uint8)"] = best_rate(lambda d: resize_uint8(d, IMAGE_SIZE), decoded, reps)
    rates["new: RandAugment(3) (uint8)"] = best_rate(lambda a: augment_image(a, NUM_OPS, table), hwc, reps)
    new = TrainTransform(IMAGE_SIZE, NUM_OPS)
    rates["new: whole path (to uint8)"] = best_rate(lambda p: new(decode_rgb(read_bytes(p), p)), paths, reps)
    rates["new: eval path (decode + resize)"] = best_rate(lambda p: resize_uint8(decode_rgb(read_bytes(p), p),
                                                                                  IMAGE_SIZE), paths, reps)
    return rates


def same_seed_difference(paths: list[Path], seeds: int = 2) -> tuple[float, float, float]:
    """Old vs new whole path on every image under the same seeds (the same operations are drawn): mean
    absolute and mean signed pixel difference in grey levels, and the share of pixels more than one apart."""
    from dataloaders.transforms import IMAGENET_STD
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    old, new = train_transform(IMAGE_SIZE, NUM_OPS), TrainTransform(IMAGE_SIZE, NUM_OPS)
    absolute, signed, far = [], [], []
    for seed in range(seeds):
        for i, path in enumerate(paths):
            torch.manual_seed(seed * len(paths) + i)
            a = old(load_image(path))
            torch.manual_seed(seed * len(paths) + i)
            levels = (normalize_batch(new(decode_rgb(read_bytes(path), path))) - a) * std
            absolute.append(levels.abs().mean().item())
            signed.append(levels.mean().item())
            far.append((levels.abs() > 1.01).float().mean().item())
    return float(np.mean(absolute)), float(np.mean(signed)), float(np.mean(far))


def loader_rates(root: Path, workers: Sequence[int], places_per_batch: int, batches: int) -> dict[int, tuple]:
    """Per number of workers: (wall images/s after the first batch, images per CPU-second of the main
    process and its workers over the whole run). The second is what a busy machine does not distort:
    N idle cores deliver N times it, so it should stay within 10 % of the single-core rate."""
    import resource
    dataset = GSVCitiesDataset(root, ["Benchtown"], transform=TrainTransform(IMAGE_SIZE, NUM_OPS))
    cpu_seconds = lambda: sum(getattr(resource.getrusage(who), field) for who in
                              (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for field in ("ru_utime", "ru_stime"))
    rates = {}
    for n in workers:
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=places_per_batch * (batches + 1))
        loader = torch.utils.data.DataLoader(dataset, batch_size=places_per_batch, sampler=sampler, num_workers=n,
                                             worker_init_fn=init_worker, collate_fn=collate_places)
        cpu = cpu_seconds()
        it = iter(loader)
        images = next(it)[0].shape[0] * dataset.img_per_place  # workers started, first batch in
        start, timed = time.perf_counter(), 0
        for _ in range(batches):
            timed += next(it)[0].shape[0] * dataset.img_per_place
        wall = timed / (time.perf_counter() - start)
        del it  # the workers exit: their CPU time is now in RUSAGE_CHILDREN
        rates[n] = (wall, (images + timed) / (cpu_seconds() - cpu))
    return rates


def device_throughput(device: str, paths: list[Path], batch_size: int = 480, batches: int = 5,
                      rand_augment_ops: int = NUM_OPS) -> dict[str, float]:
    """Images/s on ``device`` of decode_on=gpu (``EncodedImages.decode``: decode, resize, RandAugment, then
    ``normalize_batch``) and of decode_on=cpu's device share (uint8 batch copy + normalisation)."""
    data = [read_bytes(paths[i % len(paths)]) for i in range(batch_size)]
    batch = EncodedCollate(IMAGE_SIZE, rand_augment_ops)([(d, 0) for d in data])[0]
    uint8 = torch.randint(0, 256, (batch_size, 3, *IMAGE_SIZE), dtype=torch.uint8)
    if device.startswith("cuda"):
        uint8 = uint8.pin_memory()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rates = {}
    for name, step in ((f"decode_on=gpu: decode + resize + RandAugment({rand_augment_ops}) + normalise",
                        lambda: normalize_batch(batch.decode(device))),
                       ("decode_on=cpu: uint8 copy to device + normalise",
                        lambda: normalize_batch(uint8.to(device, non_blocking=True)))):
        step()
        sync()
        start = time.perf_counter()
        for _ in range(batches):
            step()
        sync()
        rates[name] = batches * batch_size / (time.perf_counter() - start)
    return rates


def eval_rates(workers: Sequence[int], reps: int, synthetic_dir: str) -> dict[int, float]:
    """Seconds of ``trainer.validate`` of the synthetic demo on synthetic pitts30k_val per worker count."""
    import lightning as L
    from dataloaders.datamodule import VPRDataModule
    from models import VPRModel
    seconds = {}
    for n in workers:
        best = float("inf")
        for _ in range(reps):
            dm = VPRDataModule(synthetic=True, synthetic_dir=synthetic_dir, image_size=(48, 64),
                               val_sets=["pitts30k_val"], num_workers=n, eval_batch_size=128)
            dm.prepare_data()
            model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], image_size=(48, 64),
                             agg_config={"out_channels": 128, "mix_depth": 2, "out_rows": 4})
            trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                                enable_model_summary=False)
            start = time.perf_counter()
            trainer.validate(model, dm, verbose=False)
            best = min(best, time.perf_counter() - start)
        seconds[n] = best
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=["stages", "loader"], choices=("stages", "loader", "device", "eval"))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vpr_bench_jpegs")
    parser.add_argument("--images", type=int, default=32, help="distinct generated JPEGs")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", help="DataLoader worker counts (default 0..CPUs)")
    parser.add_argument("--places-per-batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40, help="DataLoader batches timed after the first")
    parser.add_argument("--device", default="cpu", help="device of the decode_on=gpu path (cuda on a GPU host)")
    parser.add_argument("--device-batch", type=int, default=480, help="images per device batch (paper: 120 x 4)")
    parser.add_argument("--synthetic-dir", default="LOGS/synthetic_data", help="the demo's synthetic data (eval)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cpus = len(os.sched_getaffinity(0))
    print(f"{cpus} CPUs, load average {os.getloadavg()[0]:.2f}; {IMAGE_SIZE[0]} x {IMAGE_SIZE[1]}, "
          f"RandAugment({NUM_OPS}); best of {args.reps}")
    paths = make_jpegs(args.cache / "jpegs", args.images)
    print(f"{len(paths)} JPEGs of 640 x 480, mean {np.mean([p.stat().st_size for p in paths]) / 1e3:.0f} kB")
    if "stages" in args.only:
        rates = stages(paths, args.reps)
        print("\n| stage (one core) | img/s | ms/img |\n|---|---|---|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:.0f} | {1e3 / rate:.2f} |")
        speedup = rates["new: whole path (to uint8)"] / rates["old: whole path"]
        print(f"\nwhole path: new / old = {speedup:.2f}x; bytes per image through the DataLoader: "
              f"old {3 * 4 * IMAGE_SIZE[0] * IMAGE_SIZE[1] / 1e6:.2f} MB float32, "
              f"new {3 * IMAGE_SIZE[0] * IMAGE_SIZE[1] / 1e6:.2f} MB uint8")
        absolute, signed, far = same_seed_difference(paths)
        print(f"same seeds, old vs new images: mean |difference| {absolute:.3f} grey levels, mean difference "
              f"{signed:+.3f}, pixels more than one level apart {100 * far:.2f} %")
    if "loader" in args.only:
        root = gsv_layout(args.cache / "gsv", paths, places=128)
        workers = args.workers if args.workers is not None else list(range(cpus + 1))
        rates = loader_rates(root, workers, args.places_per_batch, args.batches)
        print(f"\n| DataLoader workers ({args.places_per_batch} places x 4 images per batch) | img/s (wall) | "
              f"img per CPU-second (main + workers) |\n|---|---|---|")
        for n, (wall, per_cpu) in rates.items():
            print(f"| {n} | {wall:.0f} | {per_cpu:.0f} |")
    if "device" in args.only:
        rates = device_throughput(args.device, paths, args.device_batch)
        print(f"\n| on {args.device}, batches of {args.device_batch} | img/s |\n|---|---|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:.0f} |")
    if "eval" in args.only:
        workers = args.workers if args.workers is not None else sorted({0, default_num_workers(), 2, 4})
        seconds = eval_rates(workers, args.reps, args.synthetic_dir)
        print(f"\n| validation of the synthetic demo: workers (default {default_num_workers()}) | seconds |\n|---|---|")
        for n, s in seconds.items():
            print(f"| {n} | {s:.2f} |")


if __name__ == "__main__":
    main()
