"""What a model costs at deployment: parameters, multiply-accumulates, descriptor size, CPU speed.

    python bench/model_costs.py                      # the reference configurations at 320 x 320 (BoQ and
                                                     # SALAD releases at the authors' test sizes)
    python bench/model_costs.py --models '[resnet18-1024, resnet50-4096]' --reps 5
    python bench/model_costs.py --channels_last false --precision bf16-mixed   # other eager settings

Flags as every command of the project takes them (jsonargparse: ``--name value``, lists as ``'[a, b]'``,
booleans as ``true``/``false``); models by short name (``--help`` lists them; the table's "description"
column says what each is).

Per model: parameters; MACs of one image (convolutions and matrix products, counted by
``torch.utils.flop_counter.FlopCounterMode`` on a forward pass, MACs = FLOPs / 2; batch norm,
activations and element-wise ops are not counted; attention through its matrix products); descriptor size; CPU latency of one image (batch
1) and throughput at batch 32, in eager PyTorch and in ONNX Runtime (the model exported on the fly
into a temporary folder with ``models.export``). Eager PyTorch runs channels-last by default (the
project's ``channels_last`` option; ``--channels_last false`` for the plain layout) at ``--precision``
(autocast for bf16-mixed); "b32 faults/img" counts the process's minor page faults per image during the
batch-32 runs (memory the allocator gave back to the system and takes again: see the README's note on
``MALLOC_MMAP_MAX_``) and "b32 kernel CPU %" the share of their CPU time spent in the kernel. Each timing
is the best of a few runs after a warm-up run; the big teacher runs fewer. A second table compares, for
distillation, the frozen teacher's forward pass with
one training step of the student (P x K = 16 x 4 images of 64 x 64, multi-similarity loss, SGD).
Prints Markdown. Timings are only comparable on an otherwise idle machine: a concurrent process makes
OpenMP threads wait for each other and inflates them many times.
"""
import copy
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import VPRModel  # noqa: E402
from models.distillation import Teacher  # noqa: E402
from models.export import export_onnx  # noqa: E402
from models.inference import PRECISIONS  # noqa: E402
from utils.allocator import keep_freed_memory  # noqa: E402
from utils.cli import run_command  # noqa: E402
from utils.errors import ConfigError  # noqa: E402
from utils.timing import best_seconds  # noqa: E402

# short name -> (what it is, VPRModel arguments, repetitions weight: 1 = full count). MixVPR as published: 4
# mixer layers, mlp_ratio 1, 4 output rows. Ours: ResNets and torchvision trunks cut after stage 3 (stride 16,
# 20 x 20 maps at 320 x 320). "Lightweight-MixVPR": that project's networks, built by its constructor calls:
# the whole timm EfficientNet-B0 trunk (stride 32, 10 x 10), its MobileNetV2 with the 512-channel head
# upsampled to 20 x 20, its distilled ResNet18 student.
MODELS = {
    "resnet50-4096": ("the paper's MixVPR, the distillation teacher",
                      dict(backbone_arch="resnet50", agg_config=dict(out_channels=1024, out_rows=4)), 0.34),
    "resnet18-1024": ("ours", dict(backbone_arch="resnet18", agg_config=dict(out_channels=256, out_rows=4)), 1.0),
    "torchvision_mobilenet_v2-2048": (
        "ours, stride 16",
        dict(backbone_arch="torchvision_mobilenet_v2", agg_config=dict(out_channels=512, out_rows=4)), 1.0),
    # 32 channels x 4 rows: the compact 128-d descriptor
    "torchvision_efficientnet_b0-128": (
        "ours, stride 16",
        dict(backbone_arch="torchvision_efficientnet_b0", agg_config=dict(out_channels=32, out_rows=4)), 1.0),
    "efficientnet_b0-128": (
        "Lightweight-MixVPR",
        dict(backbone_arch="efficientnet_b0", layers_to_freeze=2, agg_config=dict(out_channels=32, out_rows=4)), 1.0),
    "mobilenet_v2-1024": (
        "Lightweight-MixVPR", dict(backbone_arch="mobilenet_v2", agg_config=dict(out_channels=256, out_rows=4)), 1.0),
    "resnet18-512": (
        "Lightweight-MixVPR student", dict(backbone_arch="resnet18", agg_config=dict(out_channels=128, out_rows=4)),
        1.0),
    # the BoQ and SALAD releases, at the authors' test sizes (DINOv2: 322 x 322, 23 x 23 patches)
    "resnet50-boq-16384": (
        "BoQ release",
        dict(backbone_arch="resnet50", layers_to_crop=[4], agg_arch="BoQ", image_size=(384, 384),
             agg_config=dict(in_channels=1024, proj_channels=512, num_queries=64, num_layers=2, row_dim=32)), 0.2),
    "dinov2_vitb14-boq-12288": (
        "BoQ release",
        dict(backbone_arch="dinov2_vitb14", agg_arch="BoQ", image_size=(322, 322),
             backbone_config=dict(num_trainable_blocks=2, return_token=False, norm_layer=False),
             agg_config=dict(in_channels=768, proj_channels=384, num_queries=64, num_layers=2, row_dim=32)), 0.1),
    "dinov2_vitb14-salad-8448": (
        "SALAD release",
        dict(backbone_arch="dinov2_vitb14", agg_arch="SALAD", image_size=(322, 322),
             backbone_config=dict(num_trainable_blocks=4, return_token=True, norm_layer=True),
             agg_config=dict(num_channels=768, num_clusters=64, cluster_dim=128, token_dim=256)), 0.1),
}
ModelName = Literal[tuple(MODELS)]
MIXVPR = dict(agg_arch="MixVPR", layers_to_crop=[4], pretrained=False)
MIXER = dict(mix_depth=4, mlp_ratio=1)


def build(name: str, image_size: tuple[int, int], channels_last: bool = False) -> VPRModel:
    """The configuration ``name`` of ``MODELS`` at ``image_size`` (unless the row fixes its own), random
    weights, eval mode."""
    config = dict(MODELS[name][1])
    image_size = tuple(config.pop("image_size", image_size))
    if config.get("agg_arch", "MixVPR") == "MixVPR":
        config = {**MIXVPR, **config, "agg_config": {**MIXER, **config["agg_config"]}}
    else:
        config = {"pretrained": False, **config}
    return VPRModel(**config, image_size=image_size, channels_last=channels_last).eval()


def macs_per_image(model: torch.nn.Module, image_size: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass of one image (FLOPs / 2). Attention is counted through its
    matrix products: on a copy in training mode without gradients (no fused inference fast path of
    nn.MultiheadAttention / TransformerEncoderLayer) with the math attention kernel."""
    counted = copy.deepcopy(model).train().requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        counted(torch.zeros(1, 3, *image_size))
    return counter.get_total_flops() // 2


def measure(name: str, image_size: tuple[int, int], reps: int, batch: int, threads: int, folder: Path,
            channels_last: bool = True, precision: str = "32", skip_onnx: bool = False) -> dict:
    """One row of the cost table."""
    model = build(name, image_size, channels_last)
    image_size = tuple(model.image_size)
    reps = max(2, round(reps * MODELS[name][2]))
    one = torch.randn(1, 3, *image_size)
    many = torch.randn(batch, 3, *image_size)
    row = {"model": name, "description": MODELS[name][0],
           "input": f"{image_size[0]}²" if image_size[0] == image_size[1] else
           f"{image_size[0]} x {image_size[1]}", "params (M)": sum(p.numel() for p in model.parameters()) / 1e6,
           "GMACs": macs_per_image(model, image_size) / 1e9, "dim": model.descriptor_dim}
    dtype = PRECISIONS[precision]
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)
    with torch.no_grad(), autocast:
        row["torch b1 (ms)"] = 1e3 * best_seconds(lambda: model(one), reps)
        before, runs = resource.getrusage(resource.RUSAGE_SELF), max(1, reps // 3)
        row[f"torch b{batch} (img/s)"] = batch / best_seconds(lambda: model(many), runs)
        after = resource.getrusage(resource.RUSAGE_SELF)
        row[f"b{batch} faults/img"] = (after.ru_minflt - before.ru_minflt) / (batch * (runs + 1))
        kernel, user = after.ru_stime - before.ru_stime, after.ru_utime - before.ru_utime
        row[f"b{batch} kernel CPU %"] = 100 * kernel / max(kernel + user, 1e-9)

    if skip_onnx:
        return row
    import onnxruntime

    path = export_onnx(model, folder / f"{name}.onnx", image_size, dynamic_batch=True)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    one_np, many_np = one.numpy(), many.numpy()
    row["ORT b1 (ms)"] = 1e3 * best_seconds(lambda: session.run(None, {"images": one_np}), reps)
    row[f"ORT b{batch} (img/s)"] = batch / best_seconds(lambda: session.run(None, {"images": many_np}),
                                                          max(1, reps // 3))
    got = session.run(None, {"images": one_np})[0]
    with torch.no_grad():
        row["ORT max diff"] = float(np.abs(got - model(one).numpy()).max())
    return row


def distillation_overhead(image_size: tuple[int, int] = (64, 64), places: int = 16, per_place: int = 4,
                          reps: int = 3) -> list[dict]:
    """Seconds of the teacher's forward pass (fp32 and bf16 autocast) and of one student training step
    on the same batch of ``places * per_place`` images."""
    teacher_model = build("resnet50-4096", image_size)
    student = VPRModel(**{**MIXVPR, **MODELS["resnet18-1024"][1], "layers_to_freeze": 2},
                       image_size=image_size).train()
    images = torch.randn(places * per_place, 3, *image_size)
    labels = torch.arange(places).repeat_interleave(per_place)
    optimizer = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def train_step():
        optimizer.zero_grad()
        loss, _ = student.metric_loss(student(images), labels)
        loss.backward()
        optimizer.step()

    rows = []
    for label, fn in [("teacher forward, fp32", lambda: Teacher(teacher_model)(images)),
                      ("teacher forward, bf16 autocast", lambda: Teacher(teacher_model, "bf16")(images)),
                      ("student train step (resnet18-1024)", train_step)]:
        rows.append({"step": label, "batch": len(images), "seconds": best_seconds(fn, reps)})
    return rows


def markdown(rows: list[dict]) -> str:
    """Rows of equal keys as a Markdown table."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:.1e}" if 0 < abs(value) < 1e-2 else f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None):
    """The settings of the benchmark, in the flag style of main.py and eval.py."""
    from jsonargparse import ArgumentParser
    from jsonargparse.typing import PositiveInt

    parser = ArgumentParser(prog="python bench/model_costs.py", description=__doc__.split("\n")[0],
                            exit_on_error=False)
    parser.add_argument("--models", type=Union[ModelName, list[ModelName]], default=list(MODELS),
                        help=f"a model or a list of models by short name (default: all): {', '.join(MODELS)}")
    parser.add_argument("--image_size", type=tuple[PositiveInt, PositiveInt], default=(320, 320),
                        help="(H, W) of the models whose row sets none")
    parser.add_argument("--reps", type=PositiveInt, default=6,
                        help="timed runs at batch 1 (fewer for the teacher and at batch 32)")
    parser.add_argument("--batch", type=PositiveInt, default=32, help="batch size of the throughput columns")
    parser.add_argument("--threads", type=PositiveInt, default=os.cpu_count() or 1,
                        help="CPU threads (torch and ONNX Runtime)")
    parser.add_argument("--channels_last", type=bool, default=True,
                        help="eager PyTorch in the channels-last layout (default) or the plain one (false)")
    parser.add_argument("--precision", type=Literal["32", "bf16-mixed"], default="32", help="eager PyTorch precision")
    parser.add_argument("--skip_onnx", type=bool, default=False, help="eager PyTorch only (no export, no ONNX Runtime)")
    parser.add_argument("--skip_distillation", type=bool, default=False, help="leave out the distillation table")
    parser.add_argument("--keep_freed_memory", type=bool, default=False,
                        help="utils.allocator.keep_freed_memory() first (what eval.py and retrieve.py do)")
    args = parser.parse_args(argv)
    args.models = [args.models] if isinstance(args.models, str) else list(args.models)
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Measure and print both tables."""
    args = parse_args(argv)
    if args.keep_freed_memory and not keep_freed_memory():
        raise ConfigError("--keep_freed_memory: glibc's mallopt is not available here")
    torch.set_num_threads(args.threads)
    image_size = tuple(args.image_size)
    allocator = {k: v for k, v in os.environ.items()
                 if k.startswith("MALLOC_") or k in ("LD_PRELOAD", "THP_MEM_ALLOC_ENABLE")}
    if args.keep_freed_memory:
        allocator["mallopt"] = "keep_freed_memory()"
    layout = "channels-last" if args.channels_last else "contiguous"
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"{image_size[0]} x {image_size[1]} images; eager: {layout}, precision {args.precision}; "
          f"allocator settings: {allocator or 'none (glibc defaults)'}\n")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            start = time.perf_counter()
            rows.append(measure(name, image_size, args.reps, args.batch, args.threads, Path(folder),
                                args.channels_last, args.precision, args.skip_onnx))
            print(f"  measured {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(markdown(rows))
    if args.skip_distillation:
        return
    print("\nDistillation: teacher resnet50-4096 vs student resnet18-1024, 64 x 64 images\n")
    print(markdown(distillation_overhead()))


if __name__ == "__main__":
    run_command(main)
