"""Learning curves of a run as a PNG, for people without TensorBoard.

    python -m utils.plot_metrics LOGS/mixvpr_resnet50_4096/version_3            # -> .../version_3/curves.png
    python -m utils.plot_metrics LOGS/synthetic_demo/version_0 --out curves.png

Reads the run's ``metrics.csv`` (Lightning's CSV logger) and draws the training loss and learning rate
against the optimizer step and every recall (``<set>/R1``, ``R5``, ``R10``) against the epochs trained
(0: the untrained baseline, when the run validated before training). A resumed run (its ``config.yaml``
names a ``ckpt_path`` inside another run folder) continues the history of the run it resumed: that run's
rows before the resumed step are drawn first (losses, learning rates and recalls alike), and so on back
to the start. A validate or test run holds one evaluation and nothing to draw: that is said, not drawn.
"""
import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import DataError, NotFoundError

MAX_CHAIN = 100  # resumed-from links followed at most (a guard against a cycle of hand-edited configs)


def resumed_from(run: Path) -> Optional[Path]:
    """The run folder whose checkpoint ``run`` resumed from (``ckpt_path`` in its config.yaml), if any."""
    import yaml

    config = run / "config.yaml"
    if not config.is_file():
        return None
    ckpt = (yaml.safe_load(config.read_text()) or {}).get("ckpt_path")
    if not ckpt:
        return None
    folder = Path(ckpt).resolve().parent
    folder = folder.parent if folder.name == "checkpoints" else folder
    return folder if (folder / "metrics.csv").is_file() and folder != run.resolve() else None


def read_history(run: str | Path):
    """The metrics of ``run`` and of the runs it resumed from, as one pandas DataFrame (rows of earlier
    runs from epochs the later run trained again are left out)."""
    import pandas as pd

    run = Path(run)
    csv = run / "metrics.csv"
    if not csv.is_file():
        raise NotFoundError(f"{csv} not found: give a run folder such as LOGS/synthetic_demo/version_0 "
                            f"(the one holding metrics.csv and config.yaml)")
    frames, seen = [], set()
    while run is not None and run.resolve() not in seen and len(frames) < MAX_CHAIN:
        seen.add(run.resolve())
        frame = pd.read_csv(run / "metrics.csv")
        if frames and "step" in frame and "step" in frames[-1]:
            # every row has its optimizer step (learning rates too, which carry no epoch): the later run's
            # rows replace the earlier one's from its first step on
            first = frames[-1]["step"].min()
            frame = frame[frame["step"] < first]
        frames.append(frame)
        run = resumed_from(run)
    history = pd.concat(frames[::-1], ignore_index=True)
    if history.empty:
        raise DataError(f"{csv} holds no rows yet: plot once the run has logged a step")
    return history


def epochs_trained(history):
    """Per row, the epochs trained before it: the ``epochs_trained`` column the model logs with each validation
    (0: the baseline before training), else Lightning's 0-based ``epoch`` + 1 (runs logged before that column)."""
    import numpy as np
    import pandas as pd

    fallback = history["epoch"] + 1 if "epoch" in history else pd.Series(np.nan, index=history.index)
    return history["epochs_trained"].fillna(fallback) if "epochs_trained" in history else fallback


def check_plottable(history, run: Path) -> None:
    """DataError when ``history`` holds nothing to draw over time: no training step, and recalls of one
    evaluation at most (a validate or test run folder)."""
    steps = [c for c in ("loss", "distill_loss") if c in history and history[c].notna().any()]
    recalls = [c for c in history.columns if "/R" in c]
    evaluations = history.dropna(how="all", subset=recalls) if recalls else history.iloc[:0]
    if steps or len(evaluations) > 1:
        return
    raise DataError(f"nothing to plot in {run}: it holds no training step{'' if recalls else ' and no recall'}"
                    f"{', only one evaluation' if len(evaluations) else ''} (a validate or test run: its recall "
                    f"is in its metrics.csv{' and recalls.md' if (run / 'recalls.md').is_file() else ''}); give "
                    f"a training run's folder, such as <logs_dir>/<name>/version_<n>")


def plot_history(history, path: str | Path, title: str = "") -> Path:
    """Loss and learning rate per step, recalls per epoch, in one PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    recalls = sorted(c for c in history.columns if "/R" in c)
    rates = [c for c in history.columns if c.startswith("lr")]
    history = history.assign(trained=epochs_trained(history))
    panels = [("training loss", ["loss", "distill_loss"], "step"), ("learning rate", rates, "step"),
              ("recall@K (%)", recalls, "trained")]
    panels = [(name, [c for c in cols if c in history.columns and history[c].notna().any()], x)
              for name, cols, x in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        raise DataError(f"nothing to plot in {title or 'this run'}: its metrics.csv holds no loss, learning rate "
                        f"or recall")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (name, columns, x) in zip(axes[0], panels):
        for column in columns:
            rows = history[[x, column]].dropna()
            scale = 100 if name.startswith("recall") else 1
            ax.plot(rows[x], rows[column] * scale, label=column, marker="o" if x == "trained" else None,
                    markersize=3)
        ax.set_xlabel("epochs trained" if x == "trained" else "optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv: Optional[Sequence[str]] = None):
    """The settings of ``python -m utils.plot_metrics``."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="python -m utils.plot_metrics", description=__doc__.split("\n")[0], exit_on_error=False)
    parser.add_argument("run", type=str, help="a run folder, e.g. LOGS/synthetic_demo/version_0")
    parser.add_argument("--out", type=Optional[str], default=None, help="the PNG to write (default: <run>/curves.png)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Command line: a run folder -> its curves PNG."""
    args = parse_args(argv)
    run = Path(args.run)
    history = read_history(run)
    check_plottable(history, run)
    path = plot_history(history, Path(args.out) if args.out else run / "curves.png", str(run))
    print(f"written {path}")
    return path


if __name__ == "__main__":
    from .cli import run_command

    sys.exit(0 if run_command(main) else 1)
