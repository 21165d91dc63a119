"""Regenerate the README's figures in image/ from the embedded synthetic demo.

    python main.py                  # once: trains the demo, writes LOGS/synthetic_demo/version_<n>/
    python bench/make_figures.py    # -> image/recall_curves.png, image/retrievals.jpg

Evaluates, with the evaluation library (as eval.py) on the synthetic pitts30k_test and msls_val, three stages of the newest demo run
(or ``--run``): the untrained model (the run's architecture, random weights, seed 0), the earliest epoch
checkpoint the run kept, and ``last.ckpt``. ``image/recall_curves.png`` holds their recall@K curves;
``image/retrievals.jpg`` stacks retrieval pictures of the final model on pitts30k_test (two successes,
then a failure: green frames are true positives, red ones are not). Everything eval.py writes stays
under ``--out-dir`` (default LOGS/figures).
"""
import argparse
import csv
import shutil
import sys
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataloaders.eval import build_eval_set  # noqa: E402
from dataloaders.roots import data_roots  # noqa: E402
from dataloaders.synthetic import generate_synthetic  # noqa: E402
from models import VPRModel, read_checkpoint  # noqa: E402
from models.evaluation import benchmark_title, evaluate_benchmark, load_for_evaluation, write_results  # noqa: E402
from utils.recall import DEFAULT_K  # noqa: E402
from utils.visualize import stack_vertically  # noqa: E402


PICTURES = 20  # retrieval pictures per model and benchmark


def newest_run(logs: Path) -> Path:
    """The newest ``version_<n>`` under ``logs`` that holds checkpoints/last.ckpt."""
    runs = sorted((p.parent.parent for p in logs.glob("version_*/checkpoints/last.ckpt")),
                  key=lambda p: int(p.name.split("_")[-1]))
    if not runs:
        raise FileNotFoundError(f"no demo run with checkpoints/last.ckpt under {logs}: train it first with "
                                f"`python main.py` (a few minutes on the CPU), or pass --run")
    return runs[-1]


def untrained_checkpoint(last: Path, path: Path) -> Path:
    """A checkpoint of ``last``'s architecture with its initial random weights (seed 0)."""
    _, hyper_parameters = read_checkpoint(last)
    torch.manual_seed(0)
    model = VPRModel(**{**hyper_parameters, "pretrained": False})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyper_parameters}, path)
    return path


def evaluate(stages: list[Path], names: list[str], synthetic_dir: str, out_dir: Path) -> None:
    """Recalls, curves and retrieval pictures of each stage on the synthetic pitts30k_test and msls_val."""
    generate_synthetic(synthetic_dir)
    roots = data_roots(synthetic=True, synthetic_dir=synthetic_dir)
    benchmarks = ("pitts30k_test", "msls_val")
    datasets = {name: build_eval_set(name, roots) for name in benchmarks}
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for path, label in zip(stages, names):
        net, _, _ = load_for_evaluation(path, {})
        settings = {"image_size": net.preprocessing.image_size, "precision": "32", "skip_unreadable": False, "batch_size": 64,
                    "device": "cpu", "num_workers": 2, "progress": False, "k": list(DEFAULT_K),
                    "faiss_gpu": False, "visualize": PICTURES, "failures_only": False, "top_k": 4}
        results[label] = {"checkpoint": str(path), "descriptor_dim": net.descriptor_dim,
                          "image_size": list(net.preprocessing.image_size),
                          "benchmarks": {b: evaluate_benchmark(net, None, datasets[b], label, settings, out_dir,
                                                               out_dir / "descriptors") for b in benchmarks}}
    protocol = {"k": settings["k"], "precision": "32", "synthetic": True,
                "benchmarks": {b: datasets[b].protocol for b in benchmarks}}
    write_results(results, list(benchmarks), out_dir, settings["k"], protocol,
                  {b: benchmark_title(b, synthetic=True) for b in benchmarks})


def main(argv=None) -> list[Path]:
    """Evaluate the demo's stages and write the figures; returns their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a demo run folder (default: the newest under LOGS/synthetic_demo)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "LOGS" / "figures")
    parser.add_argument("--image-dir", type=Path, default=REPO / "image")
    parser.add_argument("--synthetic-dir", default=str(REPO / "LOGS" / "synthetic_data"))
    args = parser.parse_args(argv)
    run = args.run or newest_run(REPO / "LOGS" / "synthetic_demo")
    last = run / "checkpoints" / "last.ckpt"
    # the earliest epoch checkpoint kept (ModelCheckpoint keeps the best few), named epoch<NN>... (NN from 1)
    epochs = sorted((run / "checkpoints").glob("epoch*.ckpt"), key=lambda p: int(p.name[5:7]))[:1]
    stages = [untrained_checkpoint(last, args.out_dir / "untrained.ckpt"), *epochs, last]
    names = ["untrained", *[f"after epoch {int(p.name[5:7])}" for p in epochs], "final"]
    evaluate(stages, names, args.synthetic_dir, args.out_dir)
    args.image_dir.mkdir(parents=True, exist_ok=True)
    curves = args.image_dir / "recall_curves.png"
    shutil.copy(args.out_dir / "recall_curves.png", curves)
    folder = args.out_dir / "retrievals" / "final" / "pitts30k_test"
    rows = list(csv.DictReader((folder / "retrievals.csv").open()))[:PICTURES]  # those with a picture
    successes = [r for r in rows if r["correct_at_1"] == "1"][:2]
    failures = [r for r in rows if r["correct_at_1"] == "0"][:1]
    pictures = [Image.open(folder / f"q{int(r['query_index']):05d}.jpg") for r in successes + failures]
    retrievals = args.image_dir / "retrievals.jpg"
    stack_vertically(pictures).save(retrievals, quality=90)
    print(f"written {curves} and {retrievals} from {run}")
    return [curves, retrievals]


if __name__ == "__main__":
    main()
