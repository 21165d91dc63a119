"""Does distillation transfer? A student trained with and without a frozen teacher, on the synthetic data.

    python bench/distillation_transfer.py                                  # the full experiment (~25 min, 2 cores)
    python bench/distillation_transfer.py --teacher-checkpoint LOGS/bench/distillation_transfer/teacher/version_0/checkpoints/last.ckpt
    python bench/distillation_transfer.py --scale tiny --teacher-epochs 1 --epochs 1 --limit-train-batches 2 --seeds 0

1. Teacher: trained once on the embedded synthetic data (ResNet18 cropped at layer4, MixVPR 1024-d, the demo
   recipe with AdamW), or reused from ``--teacher-checkpoint``; the same teacher serves every seed.
2. Student: ResNet18 cropped at layers 3 and 4 (stride 8, 128 channels), MixVPR 128-d, trained from scratch
   with the same recipe and budget in each arm: ``none`` (metric loss only), ``similarity`` (+ weight x the
   batch similarity distillation, KL mode by default: ``SIMILARITY_CONFIG``) and optionally ``projection``. Each seed fixes the weight
   initialisation and the images drawn per place (the place order is the data module's, the same for all).
3. Per run: R@1 on pitts30k_val and msls_val from the validation the Trainer runs after the last epoch, and
   the agreement of the student's similarity structure with the teacher's on each validation set's images
   (``similarity_agreement``: MSE, Pearson and Spearman correlation of the two cosine-similarity matrices,
   overlap of the top-10 neighbour lists). The teacher's descriptors come from the same validation loop.
4. Cost of the teacher: mean wall time of a training step (forward, loss, backward, optimizer; data
   loading excluded) with and without distillation, and of the teacher's forward pass inside it (no
   autograd, inference mode, bf16 autocast by default: ``--teacher-precision``); and, alone, the teacher's
   forward on one training batch in float32 and in bf16.

Training goes through ``main.main`` (the LightningCLI), so the runs are ordinary runs under ``--out``.
Prints Markdown tables (per seed, mean +- std over seeds, and the distilled - plain difference per seed)
and writes ``results.json`` and ``results.md`` under ``--out``. Timings are only comparable on an
otherwise idle machine.
"""
import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataloaders.datamodule import VPRDataModule  # noqa: E402
from dataloaders.synthetic import generate_synthetic, synthetic_roots  # noqa: E402
from main import main as cli_main  # noqa: E402
from models.distillation import Teacher  # noqa: E402
from utils.inference import load_model  # noqa: E402

# main() is given its arguments as a list while this script has its own command line: expected, not a mistake
warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")

VAL_SETS = ("pitts30k_val", "msls_val")
ARMS = ("none", "similarity", "projection")
TOP_K = 10
# the rows' softmax over the batch (KL, temperature 0.1) rather than the default MSE of the similarities: at
# weight 1 the MSE term (~0.02 against a metric loss ~1.5) barely moved the student in a short run, and at
# weight 100-1000 it swamped the metric loss (val R@1 and agreement with the teacher both fell)
SIMILARITY_CONFIG = {"mode": "kl", "temperature": 0.1}

# the teacher: the demo's ResNet18 (layer4 cropped, stride 16) with a 1024-d MixVPR (256 channels x 4 rows)
TEACHER_MODEL = {"backbone_arch": "resnet18", "layers_to_crop": [4],
                 "agg_config": {"out_channels": 256, "mix_depth": 2, "mlp_ratio": 1, "out_rows": 4}}
# the student: ResNet18 up to layer2 (stride 8, 128 channels), MixVPR 32 channels x 4 rows = 128-d
STUDENT_MODEL = {"backbone_arch": "resnet18", "layers_to_crop": [3, 4],
                 "agg_config": {"out_channels": 32, "mix_depth": 2, "mlp_ratio": 1, "out_rows": 4}}
# shared recipe: from scratch, AdamW (learns far faster than the demo's SGD in a few hundred steps)
RECIPE = {"pretrained": False, "layers_to_freeze": -1, "agg_arch": "MixVPR", "optimizer": "adamw", "lr": 0.002,
          "weight_decay": 0.01, "warmup_steps": 30, "lr_mult": 0.3}


# ---------------------------------------------------------------------------------------------- metric
def similarity_agreement(student: np.ndarray, teacher: np.ndarray, k: int = TOP_K) -> dict[str, float]:
    """How alike two descriptor sets of the same N images rank and score the pairs of images.

    (N, Ds) and (N, Dt) descriptors (any sizes; L2-normalised here) -> ``mse``: mean squared difference of
    the off-diagonal entries of the two N x N cosine-similarity matrices (0 when identical); ``pearson``
    and ``spearman``: their correlation over the N (N - 1) / 2 pairs (1 when identical, ~0 for unrelated
    descriptors); ``topk_overlap``: mean over images of |top-k neighbours by the student ∩ by the teacher|
    / k, the image itself excluded (1 when identical, ~k / N by chance).
    """
    if student.ndim != 2 or teacher.ndim != 2 or len(student) != len(teacher):
        raise ValueError(f"need descriptors of the same images, got {student.shape} and {teacher.shape}")
    n = len(student)
    if n < k + 2:
        raise ValueError(f"need more than {k + 1} images for top-{k} neighbour overlap, got {n}")
    sims = []
    for d in (student, teacher):
        d = torch.as_tensor(np.asarray(d, dtype=np.float32))
        d = torch.nn.functional.normalize(d, dim=1)
        sims.append((d @ d.T).numpy().astype(np.float64))
    upper = np.triu_indices(n, k=1)
    a, b = sims[0][upper], sims[1][upper]
    mse = float(np.mean((a - b) ** 2))
    pearson = float(np.corrcoef(a, b)[0, 1])
    spearman = float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])
    neighbours = []
    for s in sims:
        s = s.copy()
        np.fill_diagonal(s, -np.inf)
        neighbours.append(np.argpartition(-s, k, axis=1)[:, :k])
    # one integer key per (image, neighbour) pair turns the per-row set intersection into one np.isin
    keys = [np.arange(n)[:, None] * n + nb for nb in neighbours]
    overlap = float(np.isin(keys[0], keys[1]).sum() / (n * k))
    return {"mse": mse, "pearson": pearson, "spearman": spearman, "topk_overlap": overlap}


# ---------------------------------------------------------------------------------------------- timing
class StepTimer(Callback):
    """Wall time of each training step (forward, loss, backward, optimizer; data loading excluded) and of the
    teacher's forward passes within it, when the model distils (forward hooks on the teacher's network)."""

    def __init__(self):
        self.steps: list[float] = []
        self.teacher: list[float] = []
        self._step_start = self._teacher_start = 0.0

    def on_train_start(self, trainer, pl_module):
        teacher = getattr(pl_module, "teacher", None)
        if teacher is not None:
            teacher.model.register_forward_pre_hook(self._teacher_begins)
            teacher.model.register_forward_hook(self._teacher_ends)

    def _teacher_begins(self, module, args):
        self._teacher_start = time.perf_counter()

    def _teacher_ends(self, module, args, output):
        self.teacher.append(time.perf_counter() - self._teacher_start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(time.perf_counter() - self._step_start)

    def summary(self) -> dict[str, Optional[float]]:
        """Mean seconds per step and per teacher forward (the first step, a warm-up, left out when there are more)."""
        mean = lambda xs: float(np.mean(xs[1:] if len(xs) > 1 else xs)) if xs else None
        return {"step_s": mean(self.steps), "teacher_forward_s": mean(self.teacher), "steps": len(self.steps)}


# ---------------------------------------------------------------------------------------------- runs
def common_args(args, out: Path, name: str, seed: int, epochs: int, limit: Optional[int]) -> list[str]:
    """CLI arguments shared by teacher and students: data, trainer budget, output folder."""
    run = [
        "--config", str(REPO / "configs" / "synthetic_demo.yaml"),
        "--seed_everything", str(seed),
        "--data.synthetic", "true",
        "--data.synthetic_dir", str(args.data_dir),
        "--data.synthetic_scale", args.scale,
        "--data.image_size", json.dumps(args.image_size),
        "--data.batch_size", str(args.batch_size),
        "--data.rand_augment_ops", "0",
        "--data.num_workers", str(args.num_workers),
        "--data.val_sets", json.dumps(list(VAL_SETS)),
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.precision", "32-true",
        "--trainer.max_epochs", str(epochs),
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(out),
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.logger.init_args.name", name,
        "--trainer.callbacks", json.dumps([
            {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "step"}},
            {"class_path": "bench.distillation_transfer.StepTimer"}]),
        "--checkpoint.save_top_k", "1",
    ]
    if limit is not None:
        run += ["--trainer.limit_train_batches", str(limit)]
    return run


def model_args(architecture: dict, milestones: Sequence[int]) -> list[str]:
    """CLI arguments of an architecture and the shared recipe."""
    config = {**RECIPE, **architecture, "milestones": list(milestones)}
    return [a for key, value in config.items()
            for a in (f"--model.{key}", value if isinstance(value, str) else json.dumps(value))]


def fit(run_args: list[str]) -> dict:
    """Train through the CLI; the last validation's recalls and descriptors, timings, checkpoint, wall time."""
    start = time.perf_counter()
    cli = cli_main(run_args)
    wall = time.perf_counter() - start
    timer = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "StepTimer")
    return {
        "recalls": {name: cli.model.eval_recalls[name] for name in VAL_SETS},
        "descriptors": {name: cli.model.eval_descriptors[name] for name in VAL_SETS},
        "checkpoint": str(Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"),
        "timing": {**timer.summary(), "fit_wall_s": wall},
        "distill_loss": float(cli.trainer.callback_metrics["distill_loss"])
        if "distill_loss" in cli.trainer.callback_metrics else None,
    }


def validate_checkpoint(checkpoint: str, args) -> dict:
    """Recalls and descriptors of a saved model on the validation sets, by the Trainer's validation loop."""
    model = load_model(checkpoint)
    data = VPRDataModule(synthetic=True, synthetic_dir=str(args.data_dir), synthetic_scale=args.scale,
                         image_size=tuple(model.image_size), num_workers=args.num_workers, eval_batch_size=128,
                         val_sets=list(VAL_SETS))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(model, datamodule=data, verbose=False)
    return {"recalls": {n: model.eval_recalls[n] for n in VAL_SETS},
            "descriptors": {n: model.eval_descriptors[n] for n in VAL_SETS}}


def teacher_forward_costs(checkpoint: str, args, reps: int = 3) -> dict[str, float]:
    """Best-of-``reps`` seconds of the frozen teacher's forward pass on one training batch (batch_size x 4
    random images at the training size), per precision of its own: float32 and bfloat16 autocast."""
    images = torch.randn(4 * args.batch_size, 3, *args.image_size)
    costs = {}
    for precision in ("32", "bf16"):
        teacher = Teacher.from_checkpoint(checkpoint, precision)
        teacher(images)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            teacher(images)
            times.append(time.perf_counter() - start)
        costs[precision] = min(times)
    return costs


def train_teacher(args) -> str:
    """Train the teacher through the CLI; path of its last checkpoint."""
    run = common_args(args, args.out, "teacher", 0, args.teacher_epochs, args.teacher_limit_train_batches)
    run += model_args(TEACHER_MODEL, args.teacher_milestones)
    return fit(run)["checkpoint"]


def train_student(args, arm: str, seed: int, teacher_checkpoint: str) -> dict:
    """One student run: ``arm`` 'none' (no teacher) or a distillation loss name."""
    run = common_args(args, args.out, f"student_{arm}_seed{seed}", seed, args.epochs, args.limit_train_batches)
    run += model_args(STUDENT_MODEL, args.milestones)
    if arm != "none":
        run += ["--model.teacher_checkpoint", teacher_checkpoint, "--model.distill_loss", arm,
                "--model.distill_weight", str(args.distill_weight)]
        if arm == "similarity" and json.loads(args.similarity_config):
            run += ["--model.distill_config", args.similarity_config]
        if args.teacher_precision:
            run += ["--model.teacher_precision", args.teacher_precision]
    return fit(run)


# ---------------------------------------------------------------------------------------------- report
COLUMNS = (("R@1", "r1", 100, ".2f"), ("sim MSE", "mse", 1, ".4f"), ("Pearson", "pearson", 1, ".3f"),
           ("Spearman", "spearman", 1, ".3f"), (f"top-{TOP_K} overlap", "topk_overlap", 1, ".3f"))


def summarise(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def markdown_tables(results: dict) -> str:
    """Per validation set: a row per arm and seed, mean +- std per arm, and the difference to the plain arm."""
    seeds, arms = results["seeds"], results["arms"]
    lines = []
    for name in VAL_SETS:
        teacher_r1 = 100 * results["teacher"]["recalls"][name][1]
        lines += [f"### {name} (teacher R@1 {teacher_r1:.2f} %; agreement with the teacher on the set's "
                  f"{results['num_images'][name]} images; R@1 in %)", "",
                  "| arm | seed | " + " | ".join(c[0] for c in COLUMNS) + " |",
                  "|---|---|" + "---:|" * len(COLUMNS)]
        for arm in arms:
            for seed in seeds:
                row = results["runs"][arm][str(seed)]["metrics"][name]
                lines.append(f"| {arm} | {seed} | " + " | ".join(
                    f"{scale * row[key]:{fmt}}" for _, key, scale, fmt in COLUMNS) + " |")
        for arm in arms:
            cells = []
            for _, key, scale, fmt in COLUMNS:
                mean, std = summarise([scale * results["runs"][arm][str(s)]["metrics"][name][key] for s in seeds])
                cells.append(f"{mean:{fmt}} ± {std:{fmt}}")
            lines.append(f"| **{arm}** | mean ± std | " + " | ".join(cells) + " |")
        for arm in arms:
            if arm == "none":
                continue
            cells = []
            for _, key, scale, fmt in COLUMNS:
                diffs = [scale * (results["runs"][arm][str(s)]["metrics"][name][key]
                                  - results["runs"]["none"][str(s)]["metrics"][name][key]) for s in seeds]
                mean, std = summarise(diffs)
                cells.append(f"{mean:+{fmt}} ± {std:{fmt}}")
            lines.append(f"| {arm} − none | per-seed diff | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Cost of the teacher (CPU, per training step of "
              f"{results['config']['batch_size']} places x 4 images; data loading excluded)", "",
              "| arm | step (s) | teacher forward (s) | fit wall time (s) |", "|---|---:|---:|---:|"]
    for arm in arms:
        timings = [results["runs"][arm][str(s)]["timing"] for s in seeds]
        step = summarise([t["step_s"] for t in timings])
        teacher = [t["teacher_forward_s"] for t in timings if t["teacher_forward_s"] is not None]
        wall = summarise([t["fit_wall_s"] for t in timings])
        teacher_cell = f"{summarise(teacher)[0]:.3f} ± {summarise(teacher)[1]:.3f}" if teacher else "–"
        lines.append(f"| {arm} | {step[0]:.3f} ± {step[1]:.3f} | {teacher_cell} | {wall[0]:.0f} ± {wall[1]:.0f} |")
    best = results["teacher_forward_best_s"]
    lines += ["", f"Teacher forward alone on one training batch, best of 3: float32 {best['32']:.3f} s, "
              f"bf16 autocast {best['bf16']:.3f} s (torch threads: {results['torch_threads']}).", ""]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line settings."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=REPO / "LOGS" / "bench" / "distill_data",
                   help="synthetic data folder (generated once)")
    p.add_argument("--scale", choices=("default", "tiny"), default="default")
    p.add_argument("--out", type=Path, default=REPO / "LOGS" / "bench" / "distillation_transfer")
    p.add_argument("--teacher-checkpoint", default=None, help="reuse this teacher instead of training one")
    p.add_argument("--teacher-epochs", type=int, default=4)
    p.add_argument("--teacher-limit-train-batches", type=int, default=None)
    p.add_argument("--teacher-milestones", type=int, nargs="+", default=[3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=ARMS, default=["none", "similarity"])
    p.add_argument("--epochs", type=int, default=2, help="student epochs (same in every arm)")
    p.add_argument("--limit-train-batches", type=int, default=None, help="student steps per epoch")
    p.add_argument("--milestones", type=int, nargs="+", default=[100], help="student lr-decay epochs")
    p.add_argument("--distill-weight", type=float, default=1.0)
    p.add_argument("--similarity-config", default=json.dumps(SIMILARITY_CONFIG),
                   help="settings of the similarity loss as JSON ('{}': the model's default, mse)")
    p.add_argument("--teacher-precision", choices=("32", "bf16"), default="bf16",
                   help="autocast of the teacher's forward in the distilled runs (bf16: about half the "
                        "float32 time on CPUs with bf16 instructions)")
    p.add_argument("--image-size", type=int, nargs=2, default=[64, 64])
    p.add_argument("--batch-size", type=int, default=32, help="places per batch (x 4 images)")
    p.add_argument("--num-workers", type=int, default=2)
    args = p.parse_args(argv)
    if "none" not in args.arms:
        args.arms = ["none", *args.arms]
    return args


def run(args) -> dict:
    """The whole experiment; returns the results written to ``args.out``."""
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    generate_synthetic(args.data_dir, scale=args.scale, seed=0)
    teacher_checkpoint = args.teacher_checkpoint or train_teacher(args)
    teacher_wall = time.perf_counter() - start
    teacher = validate_checkpoint(teacher_checkpoint, args)
    runs: dict = {arm: {} for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            out = train_student(args, arm, seed, teacher_checkpoint)
            metrics = {}
            for name in VAL_SETS:
                agreement = similarity_agreement(out["descriptors"][name], teacher["descriptors"][name])
                metrics[name] = {"r1": out["recalls"][name][1], "r5": out["recalls"][name][5], **agreement}
            runs[arm][str(seed)] = {"metrics": metrics, "timing": out["timing"], "checkpoint": out["checkpoint"],
                                    "final_distill_loss": out["distill_loss"]}
            print(f"[distillation_transfer] seed {seed} arm {arm}: " + ", ".join(
                f"{n} R@1 {100 * metrics[n]['r1']:.2f} top-{TOP_K} {metrics[n]['topk_overlap']:.3f}"
                for n in VAL_SETS) + f" ({out['timing']['fit_wall_s']:.0f} s)", flush=True)
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "teacher_model": TEACHER_MODEL, "student_model": STUDENT_MODEL, "recipe": RECIPE,
        "data": {k: str(v) for k, v in synthetic_roots(args.data_dir, args.scale, 0).items()},
        "teacher": {"checkpoint": teacher_checkpoint, "recalls": teacher["recalls"],
                    "train_wall_s": None if args.teacher_checkpoint else teacher_wall},
        "num_images": {n: len(teacher["descriptors"][n]) for n in VAL_SETS},
        "seeds": args.seeds, "arms": args.arms, "runs": runs,
        "teacher_forward_best_s": teacher_forward_costs(teacher_checkpoint, args),
        "total_wall_s": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
    }
    table = markdown_tables(results)
    header = (f"# Distillation transfer on the synthetic data ({args.scale})\n\n"
              f"Teacher {TEACHER_MODEL['backbone_arch']} crop {TEACHER_MODEL['layers_to_crop']} MixVPR "
              f"{4 * TEACHER_MODEL['agg_config']['out_channels']}-d; student {STUDENT_MODEL['backbone_arch']} crop "
              f"{STUDENT_MODEL['layers_to_crop']} MixVPR {4 * STUDENT_MODEL['agg_config']['out_channels']}-d, "
              f"{args.epochs} epochs x {args.limit_train_batches or 'all'} steps, seeds {args.seeds}, "
              f"distill weight {args.distill_weight}, similarity config {args.similarity_config}, teacher precision "
              f"{args.teacher_precision}. Total wall time {results['total_wall_s']:.0f} s.\n\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    (args.out / "results.md").write_text(header + table)
    print("\n" + header + table)
    return results


if __name__ == "__main__":
    run(parse_args())
