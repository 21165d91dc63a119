"""What each model costs on a device, per precision: file size, descriptor memory, CPU latency, recall lost.

    python bench/deployment.py                          # trains the demo models it lacks, then measures
    python bench/deployment.py --families resnet18-1024 --skip-timing     # the recall columns only
    python bench/deployment.py --checkpoints my=LOGS/run/version_0/checkpoints/last.ckpt --skip-recall

Per model and precision (float32 and float16: the ONNX export; int8: ``--format onnx --quantize int8``, ONNX
Runtime's static quantisation, ``models.quantization``):
- file size (MB) of the ONNX file at the deployment size ``--timing-size`` (default 320 x 320; MixVPR's
  row projection grows with the map, so the size matters);
- descriptor bytes per image and database memory for 100k and 1M images, stored as float32 or float16,
  and the bytes per image of PQ64 and binary codes (``--search.index IVF...,PQ64`` / ``BFlat``), read from faiss;
- CPU latency at batch 1 and throughput at batch 32 in ONNX Runtime with 1 and 2 intra-op threads, at
  ``--timing-size`` (random weights of the same architecture: speed does not depend on the weights), the
  best of ``--reps`` runs, with the 1-minute load average at the time of each row (timings taken at a load
  above about 1.5 on 2 cores are noise);
- R@1 on the synthetic pitts30k_val and msls_val of the trained demo model of that family at its training
  size (48 x 64), float32 against this precision, and the mean held-out cosine to float32. int8 goes
  through the export command's own verification (the same calibration, held-out images and recall code).

The demo models (``DEMO_RUNS``): ``python main.py`` (configs/synthetic_demo.yaml, seed 0) with the flags
listed, 2 epochs, into ``--runs``; the distilled ResNet18 student learns from the ResNet18-1024 run. The
caption printed under the table repeats the commands. Prints Markdown; ``--out`` also writes it to a file.
"""
import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataloaders.eval import build_eval_set  # noqa: E402
from dataloaders.synthetic import SYNTHETIC_CITIES, generate_synthetic  # noqa: E402
from models.evaluation import load_for_evaluation  # noqa: E402
from models.export import export_onnx, export_verified  # noqa: E402
from models.loading import architecture_of, open_checkpoint  # noqa: E402
from models.network import build_network  # noqa: E402
from models import quantization as q  # noqa: E402
from utils.timing import best_seconds  # noqa: E402

BENCHMARKS = ("pitts30k_val", "msls_val")
EPOCHS = 2
TEACHER = "resnet18-1024"
# the MobileNets and EfficientNets from random init barely moved in 2 epochs at the demo's lr 1e-3 (R@1 2.5 %
# and 16 % on pitts30k_val): 4 epochs at 5e-3
SLOW_STARTERS = ["--trainer.max_epochs", "4", "--model.lr", "0.005"]
# family -> main.py flags over configs/synthetic_demo.yaml (ResNet18 cut after layer3, MixVPR, 48 x 64, AdamW)
DEMO_RUNS = {
    "resnet18-1024": ["--model.agg_config", '{"out_channels": 256, "mix_depth": 2, "mlp_ratio": 1, "out_rows": 4}'],
    "resnet18-512 (distilled from resnet18-1024)": ["--model.distillation.teacher_checkpoint", "{teacher}"],
    "torchvision_mobilenet_v2-512": ["--model.backbone_arch", "torchvision_mobilenet_v2", *SLOW_STARTERS],
    "torchvision_efficientnet_b0-512": ["--model.backbone_arch", "torchvision_efficientnet_b0", *SLOW_STARTERS],
    "mobilenet_v2-512 (Lightweight-MixVPR)": ["--model.backbone_arch", "mobilenet_v2", *SLOW_STARTERS],
    "efficientnet_b0-512 (Lightweight-MixVPR)": ["--model.backbone_arch", "efficientnet_b0", *SLOW_STARTERS],
}
PRECISIONS = ("float32", "float16", "int8")


def run_name(family: str) -> str:
    """The run folder name of ``family``."""
    return family.split(" ")[0].replace("-", "_") + ("_distilled" if "distilled" in family else "")


def train_command(family: str, runs: Path, epochs: int = EPOCHS, extra: tuple = ()) -> list[str]:
    """The main.py command line that trains the demo model of ``family``."""
    runs = runs.resolve()
    runs = runs.relative_to(REPO) if runs.is_relative_to(REPO) else runs
    teacher = str(runs / run_name(TEACHER) / "version_0" / "checkpoints" / "last.ckpt")
    flags = [f.replace("{teacher}", teacher)
             for f in DEMO_RUNS[family]]
    return ["main.py", "--config", "configs/synthetic_demo.yaml", "--trainer.max_epochs", str(epochs),
            "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
            "--logs_dir", str(runs), "--name", run_name(family), *flags, *extra]


def trained(family: str, runs: Path, epochs: int, extra: tuple = ()) -> Path:
    """The last checkpoint of ``family``'s demo run, trained first when missing (the teacher before its student)."""
    ckpt = runs / run_name(family) / "version_0" / "checkpoints" / "last.ckpt"
    if "distilled" in family:
        trained(TEACHER, runs, epochs, extra)
    if not ckpt.is_file():
        command = train_command(family, runs, epochs, extra)
        print(f"  training {family}: python {' '.join(command)}", file=sys.stderr)
        subprocess.run([sys.executable, *command], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return ckpt


def at_size(net, image_size: tuple[int, int], checkpoint: Path):
    """The architecture of ``checkpoint`` built for ``image_size`` (MixVPR's map size follows), random weights."""
    arch = architecture_of(open_checkpoint(checkpoint).hyper_parameters)
    agg = {k: v for k, v in (arch.get("agg_config") or {}).items() if k not in ("in_h", "in_w")}
    other = build_network(**{**arch, "agg_config": agg, "image_size": list(image_size)}).eval()
    other.preprocessing = net.preprocessing.with_size(image_size)
    return other


def files_at(net, image_size, folder: Path, calibration: list[str]) -> dict[str, Path]:
    """{precision: ONNX file} of ``net`` at ``image_size``: float32, float16 (``net.half()``), int8."""
    files = {"float32": export_onnx(net, folder / "float32.onnx", image_size, dynamic_batch=True)}
    files["float16"] = export_onnx(net.half(), folder / "float16.onnx", image_size, dynamic_batch=True)
    net.float()
    files["int8"] = q.quantize_onnx(files["float32"], folder / "int8.onnx", calibration,
                                    net.preprocessing.with_size(image_size), q.check_quantisable(net))
    return files


def timings(path: Path, net, image_size, threads: int, reps: int, batch: int) -> dict:
    """b1 latency (ms) and b``batch`` throughput (images/s) of the ONNX file at ``path`` with ``threads``."""
    model = q.OnnxNet(path, net.preprocessing, net.descriptor_dim, threads=threads)
    one, many = torch.randn(1, 3, *image_size), torch.randn(batch, 3, *image_size)
    return {f"b1 {threads}t (ms)": 1e3 * best_seconds(lambda: model(one), reps),
            f"b{batch} {threads}t (img/s)": batch / best_seconds(lambda: model(many), max(1, reps // 3))}


def recall_rows(net, checkpoint: Path, datasets: dict, calibration: q.Calibration) -> dict[str, dict]:
    """{precision: {"R@1 <set>": %, "drop <set>": points, "cosine": mean held-out cosine}} of the trained
    model at its own size; int8 through the export's verification, float16 through its ONNX export."""
    size = tuple(net.preprocessing.image_size)
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        record = export_verified(net, Path(folder) / "int8.onnx", "onnx_int8", size, True, calibration=calibration,
                                 benchmarks=datasets, max_recall_drop=math.inf, min_cosine=-math.inf)
        fp16 = q.OnnxNet(export_onnx(net.half(), Path(folder) / "float16.onnx", size, dynamic_batch=True),
                         net.preprocessing, net.descriptor_dim)
        net.float()
        half = q.benchmark_recalls({"float16": fp16}, datasets)
        reference = q.OnnxNet(export_onnx(net, Path(folder) / "float32.onnx", size, dynamic_batch=True),
                              net.preprocessing, net.descriptor_dim)
        fp16_cos = q.descriptor_agreement(q.embed_with(reference, calibration.held_out),
                                          q.embed_with(fp16, calibration.held_out))["mean_cosine"]
    float_r1 = {name: r["float32"]["1"] for name, r in record["recall"].items()}
    got = {"float32": (float_r1, 1.0), "int8": ({n: r["int8"]["1"] for n, r in record["recall"].items()},
                                                record["held_out"]["mean_cosine"]),
           "float16": ({n: r["float16"]["1"] for n, r in half.items()}, fp16_cos)}
    for precision, (r1, cosine) in got.items():
        row = {}
        for name in datasets:
            row[f"R@1 {name}"] = r1[name]
            row[f"drop {name}"] = float_r1[name] - r1[name]
        row["cosine"] = cosine
        out[precision] = row
    return out


def cell(key: str, value) -> str:
    """A table cell: cosines with 4 decimals, other figures with 2 (thousands grouped)."""
    if value is None:
        return "n/a"
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "n/a"
    return f"{value:.4f}" if key == "cosine" else f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def markdown(rows: list[dict]) -> str:
    """Rows as a Markdown table (the union of their keys, in order of appearance)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(cell(k, row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def compressed_code_bytes(dim: int) -> dict:
    """Bytes per image of a descriptor of ``dim`` as product-quantisation codes (PQ64, when 64 divides it)
    and as binary codes, read from the faiss indexes the Searcher builds."""
    import faiss

    pq = faiss.index_factory(dim, "PQ64").sa_code_size() if dim % 64 == 0 else None
    return {"PQ64 (B)": pq, "binary (B)": faiss.IndexBinaryFlat(-(-dim // 8) * 8).code_size}


def main() -> None:
    """Measure and print the table and its caption."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="*", default=list(DEMO_RUNS), choices=list(DEMO_RUNS), metavar="NAME",
                        help=f"demo models to train (when missing) and measure: {list(DEMO_RUNS)}")
    parser.add_argument("--checkpoints", nargs="*", default=[], metavar="NAME=PATH",
                        help="other trained checkpoints to measure (instead of --families when given)")
    parser.add_argument("--runs", type=Path, default=REPO / "LOGS" / "deploy" / "runs", help="demo runs folder")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of the demo runs")
    parser.add_argument("--timing-size", type=int, nargs=2, default=(320, 320), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--reps", type=int, default=10, help="timed runs at batch 1 (a third at batch 32)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--calibration-images", type=int, default=q.DEFAULT_CALIBRATION_IMAGES)
    parser.add_argument("--held-out-images", type=int, default=q.DEFAULT_HELD_OUT_IMAGES)
    parser.add_argument("--synthetic-dir", default=str(REPO / "LOGS" / "synthetic_data"))
    parser.add_argument("--scale", default="default", choices=["default", "tiny"], help="synthetic data scale")
    parser.add_argument("--skip-timing", action="store_true", help="leave out the latency columns")
    parser.add_argument("--skip-recall", action="store_true", help="leave out the recall columns")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    args = parser.parse_args()
    roots = generate_synthetic(args.synthetic_dir, scale=args.scale, seed=0)
    datasets = {name: build_eval_set(name, {"pitts_root": roots["pitts"], "msls_root": roots["msls"]})
                for name in BENCHMARKS}
    calibration = q.draw_calibration("gsv_cities", args.calibration_images, args.held_out_images, 0,
                                     roots["gsv_cities"], SYNTHETIC_CITIES,
                                     [p for d in datasets.values() for p in d.images])
    if args.checkpoints:
        models = {name: Path(path) for name, path in (c.split("=", 1) for c in args.checkpoints)}
    else:
        models = {family: trained(family, args.runs, args.epochs) for family in args.families}
    size = tuple(args.timing_size)
    rows = []
    for name, checkpoint in models.items():
        start = time.perf_counter()
        net, _, _ = load_for_evaluation(checkpoint, {})
        dim = net.descriptor_dim
        codes = compressed_code_bytes(dim)
        recalls = {} if args.skip_recall else recall_rows(net, checkpoint, datasets, calibration)
        with tempfile.TemporaryDirectory() as folder:
            deployed = at_size(net, size, checkpoint)
            files = files_at(deployed, size, Path(folder), calibration.images[:64])
            for precision in PRECISIONS:
                stored = 2 if precision == "float16" else 4
                row = {"model": name, "precision": precision, "file (MB)": files[precision].stat().st_size / 1e6,
                       "dim": dim, "descriptor (B)": stored * dim, "DB 100k (MB)": stored * dim * 1e5 / 1e6,
                       "DB 1M (GB)": stored * dim * 1e6 / 1e9, **codes}
                if not args.skip_timing:
                    for threads in args.threads:
                        row.update(timings(files[precision], deployed, size, threads, args.reps, args.batch))
                    row["load (1 min)"] = os.getloadavg()[0]
                row.update(recalls.get(precision, {}))
                rows.append(row)
        print(f"  measured {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    caption = [f"ONNX Runtime {__import__('onnxruntime').__version__} (CPU provider), torch {torch.__version__}, "
               f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores. File size and timings at "
               f"{size[0]} x {size[1]} (random weights of each architecture; int8 calibrated on 64 synthetic "
               f"GSV-Cities images), best of {args.reps} runs at batch 1 and {max(1, args.reps // 3)} at batch "
               f"{args.batch}; 'load' is the 1-minute load average when the row was timed.",
               "Descriptor bytes and database memory: descriptors stored as float32 (float32 and int8 models "
               "output float32) or float16. PQ64 and binary: bytes per image of the compressed codes of an "
               "`IVF...,PQ64` index and of binary codes (`BFlat`, sign bits of the centred descriptor) as faiss "
               "stores them (`--search.index`, README \"Search at city scale\"); an IVF index adds 8 bytes of id "
               "per image.",
               f"Recall: R@1 (%) on the synthetic {' and '.join(BENCHMARKS)} of each trained demo model at its training "
               f"size; drop = float32 R@1 - this precision's R@1 (points); cosine: mean cosine to the float32 "
               f"descriptors on {len(calibration.held_out)} held-out synthetic GSV-Cities images. int8 calibrated on "
               f"{len(calibration.images)} synthetic GSV-Cities images (seed 0), never on the evaluation images."]
    if not args.checkpoints:
        caption.append("Demo models (seed 0): " + "; ".join(
            f"{family}: `python {shlex.join(train_command(family, args.runs, args.epochs))}`" for family in models))
    table = markdown(rows) + "\n\n" + "\n".join(caption) + "\n"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        (args.out.with_suffix(".json")).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
