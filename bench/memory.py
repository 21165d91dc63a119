"""Peak memory of one training step per published recipe and memory/precision option.

    python bench/memory.py                                   # CPU: reduced batches, linear fit to P x K
    python bench/memory.py --configs configs/mixvpr_resnet50_4096.yaml --options plain bf16+channels_last
    python bench/memory.py --device cuda --places 120        # a GPU: the recipe's real batch

One step = forward of P places x K images (random, at the recipe's image size), multi-similarity loss
with its miner, backward, SGD step, exactly as in training (VPRModel.metric_loss, the recipe's
optimizer), after one warm-up step that creates the optimizer's momentum buffers. Random initial
weights (no download); a distillation teacher is left out (it adds its own inference activations).

Options, joined with '+': ``plain`` (float32), ``channels_last``, ``checkpointing`` (activation
checkpointing of the backbone stages), ``bf16`` / ``fp16`` (autocast, as Lightning's bf16-mixed /
16-mixed; fp16 on CUDA only).

Memory is counted per tensor: a dispatch mode sees every tensor each operation creates (forward,
autograd's backward, optimizer) and frees its bytes when its storage dies, so "step peak" is the most
tensor memory alive at once beyond what existed before the step (weights, momentum, the batch:
"resident"). That is what a GPU's caching allocator must hold at least; on CUDA the allocator's own
``max_memory_allocated`` beyond resident is shown beside it (it adds cuDNN workspaces and rounding).
It leaves out memory that libraries allocate outside tensors (oneDNN scratch on CPU). The CPU measures
a few reduced batches and fits step = a + b x images, shown at the recipe's P x K; with three or
more batches the fit's worst residual tells how linear it is. Prints Markdown.
"""
import argparse
import sys
import time
import weakref
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import VPRModel  # noqa: E402
from utils.recipes import read_recipe as recipe  # noqa: E402

PUBLISHED = ["mixvpr_resnet50_4096", "mixvpr_resnet50_512", "mixvpr_resnet50_128", "lightweight_resnet18_1024",
             "lightweight_torchvision_mobilenet_v2_2048", "lightweight_torchvision_efficientnet_b0_128",
             "lightweight_efficientnet_b0_128", "lightweight_mobilenet_v2_1024", "distilled_resnet18_512",
             "boq_resnet50_16384", "boq_dinov2_12288", "salad_dinov2_8448"]
OPTIONS = ["plain", "channels_last", "checkpointing", "bf16", "bf16+checkpointing"]
TOKENS = {"plain", "channels_last", "checkpointing", "bf16", "fp16"}
# settings that describe a teacher or how to load weights, not the trained network
NOT_NETWORK = {"pretrained", "init_from", "distillation", "teacher_checkpoint", "teacher_config", "teacher_precision", "distill_loss",
               "distill_weight", "distill_config"}


def parse_option(option: str) -> set[str]:
    """'bf16+channels_last' -> {'bf16', 'channels_last'}; raises naming the valid tokens."""
    tokens = set(option.split("+"))
    if not tokens <= TOKENS or ("bf16" in tokens and "fp16" in tokens):
        raise ValueError(f"option {option!r}: join some of {sorted(TOKENS)} with '+' (one of bf16/fp16)")
    return tokens - {"plain"}


class TensorMemory(TorchDispatchMode):
    """Inside the context: ``live`` and ``peak`` bytes of the tensors created in it (views counted once,
    by storage); tensors that existed before (``existing``) are not counted."""

    def __init__(self, existing=()):
        super().__init__()
        self.storages = WeakIdKeyDictionary()
        self.live = self.peak = 0
        for tensor in existing:
            self.storages[tensor.untyped_storage()] = 0

    def _freed(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if storage not in self.storages:
                    nbytes = storage.nbytes()
                    self.storages[storage] = nbytes
                    weakref.finalize(storage, self._freed, nbytes)
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
        return out


def measure_step(config: Path, option: str, places: int, device: str) -> dict:
    """Resident tensor bytes before one training step, the step's tensor peak above them (and on CUDA
    the allocator's), and the step's seconds (slowed by the counting)."""
    rec, tokens = recipe(config), parse_option(option)
    model_args = {k: v for k, v in rec["model"].items() if k not in NOT_NETWORK}
    data = rec.get("data", {})
    image_size, per_place = tuple(data.get("image_size", (320, 320))), int(data.get("img_per_place", 4))
    torch.manual_seed(0)
    model = VPRModel(**model_args, pretrained=False, image_size=image_size, channels_last="channels_last" in tokens,
                     activation_checkpointing="checkpointing" in tokens).to(device).train()
    [optimizer], _ = model.configure_optimizers()
    images = torch.randn(places * per_place, 3, *image_size, device=device)
    labels = torch.arange(places, device=device).repeat_interleave(per_place)
    dtype = torch.bfloat16 if "bf16" in tokens else torch.float16 if "fp16" in tokens else None
    autocast = torch.autocast(torch.device(device).type, dtype=dtype) if dtype else nullcontext()
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss, _ = model.metric_loss(model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()  # momentum buffers, lazy initialisation
    optimizer.zero_grad(set_to_none=True)
    existing = [*model.parameters(), *model.buffers(), images, labels]
    existing += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        allocated = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with TensorMemory(existing) as counted:
        step()
    if cuda:
        torch.cuda.synchronize()
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in existing}
    result = {"images": places * per_place, "step": counted.peak, "seconds": time.perf_counter() - start,
              "resident": sum(storages.values())}
    if cuda:
        result["allocator step"] = torch.cuda.max_memory_allocated() - allocated
    return result


def row(config: Path, option: str, places_list: list[int], device: str) -> dict:
    """One table row: the measured steps, the linear fit and the recipe's batch."""
    rec = recipe(config)
    per_place = int(rec.get("data", {}).get("img_per_place", 4))
    recipe_images = int(rec.get("data", {}).get("batch_size", 120)) * per_place
    points = [measure_step(config, option, p, device) for p in places_list]
    mb = 2 ** 20
    out = {"config": config.stem, "option": option, "resident (MB)": points[-1]["resident"] / mb,
           "step peak (MB) @ images": ", ".join(f"{p['step'] / mb:,.0f} @ {p['images']}" for p in points)}
    if "allocator step" in points[-1]:
        out["CUDA allocator step peak (MB)"] = ", ".join(f"{p['allocator step'] / mb:,.0f}" for p in points)
    if len(points) >= 2:
        x, y = np.array([p["images"] for p in points]), np.array([p["step"] for p in points])
        slope, intercept = np.polyfit(x, y, 1)
        out["MB/image"] = slope / mb
        if len(points) >= 3:  # two points always fit
            out["fit residual (MB)"] = float(np.abs(intercept + slope * x - y).max()) / mb
        out["step at P x K (GB)"] = (intercept + slope * recipe_images) / 2 ** 30
    out["P x K"] = recipe_images
    return out


def markdown(rows: list[dict]) -> str:
    """Rows as a Markdown table (keys of the first row)."""
    def cell(v):
        return f"{v:,.2f}" if isinstance(v, float) and abs(v) < 100 else f"{v:,.0f}" if isinstance(v, float) else str(v)
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows])


def main() -> None:
    """Measure every (config, option) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="*", type=Path,
                        default=[REPO / "configs" / f"{name}.yaml" for name in PUBLISHED])
    parser.add_argument("--options", nargs="*", default=OPTIONS,
                        help="tokens joined by '+': " + ", ".join(sorted(TOKENS)))
    parser.add_argument("--places", nargs="*", type=int, default=None,
                        help="places per measured step (default: 1 2 3 on CPU, the recipe's batch on CUDA)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for option in args.options:
        parse_option(option)
    missing = [str(c) for c in args.configs if not c.is_file()]
    if missing:
        raise FileNotFoundError(f"config(s) not found: {missing}")
    rows = []
    for config in args.configs:
        places = args.places or ([1, 2, 3] if args.device == "cpu"
                                 else [int(recipe(config).get("data", {}).get("batch_size", 120))])
        for option in args.options:
            start = time.perf_counter()
            rows.append(row(config, option, places, args.device))
            # each row as soon as it is measured: a long CPU run can be followed (and stopped) midway
            print(f"  {time.perf_counter() - start:.0f} s: {rows[-1]}", file=sys.stderr, flush=True)
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
