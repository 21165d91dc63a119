"""Regenerate the README's figures in image/ from the embedded synthetic demo.

    python main.py                  # once: trains the demo, writes LOGS/synthetic_demo/version_<n>/
    python bench/make_figures.py    # -> image/recall_curves.png, image/retrievals.jpg

Evaluates, with eval.py on the synthetic pitts30k_test and msls_val, three stages of the newest demo run
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

import eval as eval_cli  # noqa: E402
from models import VPRModel  # noqa: E402
from utils.checkpoint import read_state_dict  # noqa: E402
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
    _, hyper_parameters = read_state_dict(last)
    torch.manual_seed(0)
    model = VPRModel(**{**hyper_parameters, "pretrained": False})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyper_parameters}, path)
    return path


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
    # the earliest epoch checkpoint kept (ModelCheckpoint keeps the best few), named epoch<NN>...
    epochs = sorted((run / "checkpoints").glob("epoch*.ckpt"), key=lambda p: int(p.name[5:7]))[:1]
    stages = [untrained_checkpoint(last, args.out_dir / "untrained.ckpt"), *epochs, last]
    names = ["untrained", *[f"after epoch {int(p.name[5:7]) + 1}" for p in epochs], "final"]
    eval_cli.main(["--checkpoint", *map(str, stages), "--names", *names, "--benchmarks", "pitts30k_test", "msls_val",
                   "--synthetic", "--synthetic-dir", args.synthetic_dir, "--out-dir", str(args.out_dir),
                   "--visualize", str(PICTURES), "--top-k", "4", "--num-workers", "2", "--device", "cpu", "--no-progress"])
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
