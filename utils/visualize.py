"""Seeing what a model does: retrieval pictures (query, then its top-K framed green/red) and recall curves.

Pictures are drawn with PIL; curves with matplotlib on the Agg backend (no display needed).
"""
import csv
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GREEN = (0, 170, 0)      # a prediction that is a positive of the query
RED = (220, 0, 0)        # a prediction that is not
QUERY = (40, 90, 220)    # the query's own frame
UNKNOWN = (150, 150, 150)  # no ground truth (retrieval on one's own images)
BORDER = 6               # frame width, pixels
GAP = 8                  # space between tiles, pixels
CAPTION_LINES = 2
LINE_HEIGHT = 13
TILE = (160, 120)        # (width, height) of each image inside its frame


def tile_origin(position: int, tile: Sequence[int] = TILE) -> tuple[int, int]:
    """(x, y) of the top-left corner of the frame of tile ``position`` (0: the query, j: prediction j)."""
    return position * (tile[0] + 2 * BORDER + GAP), 0


def printable(text: str) -> str:
    """``text`` on one line: control characters (a newline in a file name ...) written as escapes (``\\n``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _fit(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    """``text`` on one line (``printable``), cut from the left with '...' until it fits ``width`` pixels
    (file names keep their end)."""
    text = printable(text)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def image_name(path: str | Path, utm: Optional[Sequence[float]] = None) -> str:
    """What identifies an image in a caption: its coordinates when its file name is the folder format's
    (``@<east>@<north>@<zone>@...@.jpg``, mostly empty fields: ``E 585012 N 4477270 17T``), else its file name."""
    name = Path(path).name
    if utm is None or not name.startswith("@"):
        return name
    fields = name.split("@")
    zone = "".join(fields[3:5]) if len(fields) > 4 else ""
    return f"E {utm[0]:.0f} N {utm[1]:.0f}" + (f" {zone}" if zone else "")


def retrieval_figure(query_path: str | Path, predicted_paths: Sequence[str | Path],
                     correct: Optional[Sequence[bool]] = None, captions: Optional[Sequence[str]] = None,
                     query_caption: str = "query", tile: Sequence[int] = TILE,
                     names: Optional[Sequence[str]] = None) -> Image.Image:
    """One row: the query, then its predictions in rank order, each in a frame (green: a positive,
    red: not, grey: ``correct`` None) with a two-line caption (``captions[j]``, then ``names[j]``: what
    identifies the image, by default its file name; ``names[0]`` is the query's)."""
    from .images import load_image

    width, height = tile
    cell_w, cell_h = width + 2 * BORDER, height + 2 * BORDER
    n = 1 + len(predicted_paths)
    canvas = Image.new("RGB", (n * cell_w + (n - 1) * GAP, cell_h + CAPTION_LINES * LINE_HEIGHT + 4), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    colours = [QUERY] + [UNKNOWN if correct is None else (GREEN if c else RED) for c in
                         (correct if correct is not None else [None] * (n - 1))]
    texts = [query_caption] + list(captions or [f"#{j + 1}" for j in range(n - 1)])
    paths = [query_path, *predicted_paths]
    names = list(names) if names is not None else [Path(p).name for p in paths]
    for position, (path, colour, text, name) in enumerate(zip(paths, colours, texts, names)):
        x, y = tile_origin(position, tile)
        draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=colour)
        canvas.paste(load_image(path).resize((width, height), Image.BILINEAR), (x + BORDER, y + BORDER))
        for line, content in enumerate((text, name)):
            draw.text((x + 1, cell_h + 2 + line * LINE_HEIGHT), _fit(content, draw, font, cell_w - 2),
                      fill=(0, 0, 0), font=font)
    return canvas


def stack_vertically(images: Sequence[Image.Image], gap: int = GAP) -> Image.Image:
    """``images`` one under the other on white, left-aligned."""
    width = max(im.width for im in images)
    canvas = Image.new("RGB", (width, sum(im.height for im in images) + gap * (len(images) - 1)), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height + gap
    return canvas


def _metres(dataset, query: int, reference: int) -> str:
    """' 12 m' (distance from query ``query`` to database image ``reference``) when the set has coordinates."""
    utm = getattr(dataset, "utm", None)
    if utm is None:
        return ""
    d = float(np.linalg.norm(utm[reference] - utm[dataset.num_references + query]))
    return f" {d:.0f} m"


def save_retrievals(dataset, predictions: np.ndarray, distances: np.ndarray, out_dir: str | Path,
                    num_pictures: int = 10, failures_only: bool = False,
                    descriptors: Optional[np.ndarray] = None) -> tuple[Path, list[Path]]:
    """Pictures and a CSV record of an evaluation set's retrievals.

    ``predictions``/``distances`` (num_queries, K): database indices and squared L2 distances, nearest
    first. Queries kept: all, or with ``failures_only`` those whose first prediction is not a positive.
    ``retrievals.csv`` lists every kept query (path, predicted paths, which are positives, distances,
    positive paths); the first ``num_pictures`` of them (-1: all) get ``q<index>.jpg``: the query, its
    top-K (captions: rank, cosine similarity, and the distance in metres where the set records
    coordinates), and for a failure the nearest true positive, with its rank and similarity when the
    ``descriptors`` (database then queries) are given. Returns (csv path, picture paths).
    """
    from .recall import hit_matrix

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hits = hit_matrix(predictions, dataset.ground_truth, dataset.num_references)
    kept = np.flatnonzero(~hits[:, 0]) if failures_only else np.arange(len(predictions))
    db, queries = dataset.database_paths, dataset.query_paths
    csv_path = out_dir / "retrievals.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query_index", "query", "correct_at_1", "predictions", "prediction_is_positive",
                         "distances", "positives"])
        for i in kept:
            writer.writerow([i, queries[i], int(hits[i, 0]), ";".join(db[j] for j in predictions[i] if j >= 0),
                             ";".join(str(int(h)) for h in hits[i]), ";".join(f"{d:.4f}" for d in distances[i]),
                             ";".join(db[j] for j in dataset.ground_truth[i])])
    shown = kept if num_pictures < 0 else kept[:num_pictures]
    pictures = []
    for i in shown:
        valid = predictions[i] >= 0
        paths = [db[j] for j in predictions[i][valid]]
        correct = hits[i][valid].tolist()
        captions = [f"#{r + 1} sim {1 - d / 2:.3f}{_metres(dataset, i, j)}"
                    for r, (j, d) in enumerate(zip(predictions[i][valid], distances[i][valid]))]
        positives = dataset.ground_truth[i]
        if not hits[i, 0] and len(positives):
            # the nearest true positive (ground truth is ordered nearest first): what the model should have found
            p = int(positives[0])
            caption = "true positive"
            if descriptors is not None:
                similarity = descriptors[: dataset.num_references] @ descriptors[dataset.num_references + i]
                rank = int((similarity > similarity[p]).sum()) + 1
                caption = f"true pos. #{rank} sim {similarity[p]:.3f}"
            paths.append(db[p])
            correct.append(True)
            captions.append(caption + _metres(dataset, i, p))
        utm = getattr(dataset, "utm", None)
        shown_db = [int(j) for j in predictions[i][valid]] + ([int(positives[0])] if len(paths) > valid.sum() else [])
        names = [image_name(queries[i], None if utm is None else utm[dataset.num_references + i])]
        names += [image_name(db[j], None if utm is None else utm[j]) for j in shown_db]
        figure = retrieval_figure(queries[i], paths, correct, captions,
                                  query_caption=f"query {i} ({len(positives)} pos.)", names=names)
        pictures.append(out_dir / f"q{i:05d}.jpg")
        figure.save(pictures[-1], quality=92)
    return csv_path, pictures


# labelled K ticks on the log axis are at least this far apart (log10): 15 and 20 (0.12) would touch
MIN_TICK_GAP = 0.15


def labelled_ticks(ks: Sequence[int], min_gap: float = MIN_TICK_GAP) -> list[int]:
    """The K values that get a tick label on a log axis: from the largest down, each at least ``min_gap``
    decades from the last one labelled (1, 5, 10, 15, 20, 50, 100 -> 1, 5, 10, 20, 50, 100)."""
    kept: list[int] = []
    for k in sorted(set(ks), reverse=True):
        if not kept or np.log10(kept[-1] / k) >= min_gap:
            kept.append(k)
    return kept[::-1]


def recall_curves_figure(curves: dict[str, dict[str, dict[int, float]]], titles: Optional[dict[str, str]] = None):
    """The matplotlib figure of ``plot_recall_curves``: one panel per benchmark, one line per model, the
    legend under the panels (never over a curve or a tick), tick labels at ``labelled_ticks``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    models = list(dict.fromkeys(m for per_model in curves.values() for m in per_model))
    legend_rows = -(-len(models) // 3)
    height = 3.4 + 0.22 * legend_rows  # inches: the panels, then a legend row of 0.22 inch per 3 models
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 0.6, height), squeeze=False)
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for ax, (benchmark, per_model) in zip(axes[0], curves.items()):
        ks = sorted({k for recalls in per_model.values() for k in recalls})
        for model, recalls in per_model.items():
            k = sorted(recalls)
            ax.plot(k, [100 * recalls[i] for i in k], marker="o", markersize=3.5, label=model, color=colours[model])
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) if k in labelled_ticks(ks) else "" for k in ks])
        ax.minorticks_off()
        ax.set_ylim(0, 100)
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K (%)")
        ax.set_title((titles or {}).get(benchmark, benchmark))
        ax.grid(True, alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[m], marker="o", markersize=3.5) for m in models]
    fig.legend(handles, models, loc="lower center", ncol=min(len(models), 3), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, (0.05 + 0.22 * legend_rows) / height, 1, 1))
    return fig


def plot_recall_curves(curves: dict[str, dict[str, dict[int, float]]], path: str | Path,
                       titles: Optional[dict[str, str]] = None) -> Path:
    """Recall@K (%) against K, one panel per benchmark, one line per model, saved as a PNG.

    ``curves[benchmark][model] = {k: fraction}``; ``titles`` maps benchmark names to panel titles.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = recall_curves_figure(curves, titles)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
