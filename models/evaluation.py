"""Evaluating checkpoints on benchmarks outside training: the library behind eval.py, retrieve.py and the figures.

The recall is the one of validation (the same EvalDataset classes, the evaluation transform, faiss exact
search in ``utils.recall``); descriptors go through the cache of ``models.descriptor_cache``.
"""
import csv
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dataloaders.eval import BENCHMARKS, EvalDataset, Suite
from dataloaders.eval.msls_test import CHALLENGE_TOP, challenge_keys, check_challenge_file, write_challenge_file
from utils.errors import ConfigError, DataError
from utils.files import atomic_write_text
from utils.npy_rows import BLOCK_ROWS, create_npy, drop_rows, read_rows, row_blocks, write_rows
from utils.recall import format_recall_table, recall_at_k
from utils.search import Searcher, Whitening
from utils.visualize import plot_recall_curves, save_retrievals

from .descriptor_cache import network_identity, weights_fingerprint
from .inference import cached_embed_paths, check_descriptors, image_paths
from .loading import architecture_of, checkpoint_preprocessing, load_weights, open_checkpoint, release_settings
from .network import VPRNet, build_network
from .releases import load_release, release_in

TABLE_K = (1, 5, 10)
DESCRIPTOR_DTYPES = ("float16", "float32")


def benchmark_title(name: str, synthetic: bool = False) -> str:
    """The title of a benchmark in tables and plots (the registry's, else the name); synthetic stand-ins say so."""
    title = BENCHMARKS[name].title if name in BENCHMARKS else name
    return f"{title} (synthetic)" if synthetic else title


def load_for_evaluation(path: str | Path, architecture: dict, eval_image_size: Optional[Sequence[int]] = None
                        ) -> tuple[VPRNet, str, bool]:
    """(network in eval mode on the CPU, weights fingerprint, whether the file carried its own settings).

    ``release:<name>`` is a published release (``models/releases.py``, e.g. ``release:cosplace_resnet50_2048``):
    its network, its weights (downloaded once into torch.hub's cache and verified) and its authors' evaluation
    preprocessing. A checkpoint with saved hyper-parameters (ours) builds its own architecture and carries its
    evaluation preprocessing (``net.preprocessing``: the size it was validated at); ``architecture`` (model
    settings from a recipe or the command line) applies to bare state_dicts (the releases' files, which keep
    their authors' preprocessing when they have their published name). ``eval_image_size``
    (--data.eval_image_size, from the command line or --config) overrides the evaluation size.
    """
    name = release_in(path)
    if name is not None:
        net = load_release(name)
        net.preprocessing = net.preprocessing.with_size(eval_image_size)
        return net, weights_fingerprint(net), True
    checkpoint = open_checkpoint(path)
    if checkpoint.preprocessing is None:  # a release's file by its published name: its authors' preprocessing
        checkpoint = checkpoint._replace(preprocessing=release_settings(path)[1])
    hyper_parameters = checkpoint.hyper_parameters
    arch = architecture_of(hyper_parameters) if hyper_parameters else architecture_of({}, **architecture)
    net = build_network(**arch)
    load_weights(net, checkpoint.state_dict, source=str(path))
    net.preprocessing = checkpoint_preprocessing(checkpoint, net, str(path), eval_image_size)
    net.eval()
    return net, weights_fingerprint(net), bool(hyper_parameters)


def model_labels(paths: Sequence[str | Path], names: Optional[Sequence[str]] = None) -> list[str]:
    """Short unique names: ``names`` when given, else a release's name (``release:<name>``) or the file stem,
    with parent folders prepended (``checkpoints`` skipped) until the names differ."""
    if names:
        if len(names) != len(paths) or len(set(names)) != len(names):
            raise ConfigError(f"--names needs {len(paths)} distinct names, one per checkpoint; got {list(names)}")
        return list(names)
    parts = [[release_in(p)] if release_in(p) else
             [Path(p).stem] + [q for q in reversed(Path(p).resolve().parent.parts) if q not in ("checkpoints", "/")]
             for p in paths]
    for depth in range(1, max(len(x) for x in parts) + 1):
        labels = ["/".join(reversed(x[:depth])) for x in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{label}#{i}" for i, label in enumerate(labels)]


def drop_images(dataset: EvalDataset, indices: np.ndarray) -> EvalDataset:
    """``dataset`` without the images at ``indices`` (database first, then queries): ground-truth
    indices are renumbered; a query keeps its remaining positives (none left: it counts as a miss).
    See ``EvalDataset.without``."""
    return dataset.without(indices)


def evaluation_recalls(descriptors, dataset: EvalDataset, k_values: Sequence[int],
                       faiss_gpu: bool = False, unreadable: Sequence[int] = (), searcher: Optional[Searcher] = None,
                       stats: Optional[dict] = None) -> tuple[dict[int, float], EvalDataset, np.ndarray]:
    """(recall@K, the set evaluated, indices left out) of ``dataset`` from its (N, D) descriptors, database
    first then queries, as in validation. ``unreadable``: indices of images left out as unreadable
    (``skip_unreadable``): an unreadable database image leaves the database, an unreadable query the
    evaluation (``EvalDataset.without``); training's validation and eval.py share this, so they agree.
    Every other row must be finite (``inference.check_descriptors`` names the model that broke that).

    ``descriptors`` may be on disk (``utils.npy_rows.NpyRows``): the database is then read block by block.
    ``searcher`` (default: exact search, ``faiss_gpu`` on the GPU) searches the database; ``stats``, when
    given, receives what building its index took (``SearchIndex.stats``)."""
    unreadable = np.unique(np.asarray(unreadable, dtype=np.int64))
    if len(descriptors) != len(dataset):
        raise ValueError(f"{dataset.name}: {len(descriptors)} descriptors for {len(dataset)} images")
    if len(unreadable):
        dataset = dataset.without(unreadable)
        descriptors = drop_rows(descriptors, unreadable)
    if not all(np.isfinite(block).all() for _, block in row_blocks(descriptors)):
        raise ValueError(f"{dataset.name}: non-finite descriptors of images that were read: check them with "
                         f"models.inference.check_descriptors first")
    if dataset.num_references == 0 or dataset.num_queries == 0:
        raise DataError(f"{dataset.name}: no readable {'database image' if dataset.num_references == 0 else 'query'} "
                        f"is left after skipping {len(unreadable)} unreadable image(s)")
    searcher = searcher or Searcher(faiss_gpu=faiss_gpu)
    database = descriptors[: dataset.num_references] if isinstance(descriptors, np.ndarray) else \
        descriptors.take(np.arange(dataset.num_references))
    queries = read_rows(descriptors, dataset.num_references, len(descriptors))
    index = searcher.build(database)
    k_values = list(k_values)
    _, predictions = index.search(queries, min(max(k_values), dataset.num_references))
    if stats is not None:
        stats.update(index.stats)
    return recall_at_k(predictions, dataset.ground_truth, dataset.num_references, k_values), dataset, unreadable


def learned_whitening(net: VPRNet, identity: Optional[str], searcher: Searcher, settings: dict,
                      cache_dir: Optional[Path]) -> Optional[Whitening]:
    """The PCA whitening ``searcher.whitening`` asks for (None when it asks for none): learned on the
    descriptors of those training images (a folder or .txt list), embedded as evaluation embeds (through the
    cache), to ``searcher.whitening_dim`` components."""
    if not searcher.whitening:
        return None
    paths = image_paths(searcher.whitening)
    name = settings.get("name", "the model")
    descriptors, unreadable, _ = cached_embed_paths(
        net, paths, cache_dir, "whitening-" + Path(str(searcher.whitening)).name, identity, settings["image_size"],
        settings["precision"], settings["skip_unreadable"], dtype=settings.get("cache_dtype", "float32"),
        batch_size=settings["batch_size"], device=settings["device"], num_workers=settings["num_workers"],
        progress=settings["progress"], name=name)
    start = time.perf_counter()
    whitening = Whitening.learn(drop_rows(np.asarray(descriptors), unreadable), searcher.whitening_dim,
                                source=str(searcher.whitening))
    print(f"PCA whitening ({whitening.d_in} -> {whitening.d_out}-d) learned on {len(paths) - len(unreadable):,} "
          f"images of {searcher.whitening} in {time.perf_counter() - start:.1f} s")
    return whitening


def evaluate_benchmark(net: VPRNet, identity: Optional[str], dataset: EvalDataset, label: str, settings: dict,
                       out_dir: Path, cache_dir: Optional[Path]) -> dict:
    """Embed ``dataset`` (through the cache, keyed by ``identity``: ``network_identity(net)``, computed when
    None), compute recall@K as validation does (a set without public labels gets predictions only, and for
    the MSLS challenge its prediction file), optionally save descriptors, predictions and retrieval
    pictures; returns the record written to recalls.json.

    ``settings``: image_size, precision, skip_unreadable, batch_size, device, num_workers, progress,
    k (recall@K values), faiss_gpu, visualize (pictures per benchmark), failures_only, top_k, and
    optionally name (the model in error messages; default ``label``), save_descriptors (None, 'float16'
    or 'float32': ``save_descriptors``), save_predictions (top-K per query: ``save_predictions``), search (a
    ``utils.search.Searcher``; default exact), whitening (its learned ``Whitening``, ``learned_whitening``)
    and cache_dtype (float32 or float16: how descriptors are stored in the cache).
    """
    start = time.perf_counter()
    name = settings.get("name", label)
    if cache_dir is not None and identity is None:
        identity = network_identity(net)
    descriptors, unreadable, reused = cached_embed_paths(
        net, dataset.images, cache_dir, f"{dataset.name}-{label}", identity, settings["image_size"],
        settings["precision"], settings["skip_unreadable"], dtype=settings.get("cache_dtype", "float32"),
        batch_size=settings["batch_size"], device=settings["device"], num_workers=settings["num_workers"],
        progress=settings["progress"], name=name)
    check_descriptors(descriptors, unreadable, net, name, dataset.images, settings["precision"])
    searcher = settings.get("search") or Searcher(faiss_gpu=settings["faiss_gpu"])
    searcher = searcher.whitened(settings.get("whitening"))
    embedded = time.perf_counter()
    record = {"num_references": dataset.num_references, "num_queries": dataset.num_queries,
              "descriptor_dim": int(descriptors.shape[1]), "skipped_database": 0, "skipped_queries": 0,
              "descriptors_cached": reused}
    if len(unreadable):
        skipped_db = int((unreadable < dataset.num_references).sum())
        record.update(skipped_database=skipped_db, skipped_queries=len(unreadable) - skipped_db)
        listing = out_dir / f"skipped_{dataset.name}.txt"
        atomic_write_text(listing, "".join(dataset.images[i] + "\n" for i in unreadable))
        print(f"{dataset.name}: skipped {len(unreadable)} unreadable image(s) ({skipped_db} database, "
              f"{len(unreadable) - skipped_db} queries), listed in {listing}")
    stats = {}
    if dataset.labelled:
        recalls, dataset, _ = evaluation_recalls(descriptors, dataset, settings["k"], settings["faiss_gpu"], unreadable,
                                                 searcher, stats)
        record["recall"] = {str(k): v for k, v in recalls.items()}
    else:
        dataset = dataset.without(unreadable) if len(unreadable) else dataset
        record["recall"] = None
    descriptors = drop_rows(descriptors, unreadable)
    record.update(num_references=dataset.num_references, num_queries=dataset.num_queries,
                  protocol=dataset.protocol, search=searcher.record(stats))
    record["seconds_embedding"] = round(embedded - start, 2)
    safe_label = label.replace("/", "_")
    if settings.get("save_descriptors"):
        record["descriptors"] = save_descriptors(dataset, descriptors, out_dir / "descriptors" / safe_label / dataset.name,
                                                 settings["save_descriptors"])
    challenge = dataset.protocol.get("benchmark") == "msls_test"
    k = max(settings.get("save_predictions") or 0, settings["top_k"] if settings["visualize"] else 0,
            CHALLENGE_TOP if challenge else 0)
    if k:
        r_list = descriptors[: dataset.num_references] if isinstance(descriptors, np.ndarray) else \
            descriptors.take(np.arange(dataset.num_references))
        q_list = read_rows(descriptors, dataset.num_references, len(descriptors))
        distances, predictions = searcher.search(r_list, q_list, min(k, dataset.num_references))
        if settings.get("save_predictions"):
            top = settings["save_predictions"]
            record["predictions"] = save_predictions(dataset, predictions[:, :top], distances[:, :top],
                                                     out_dir / "predictions" / safe_label / f"{dataset.name}.npz")
        if challenge:
            path = write_challenge_file(dataset, predictions[:, :CHALLENGE_TOP], out_dir / f"msls_challenge_{safe_label}.txt")
            check_challenge_file(path, challenge_keys(dataset.query_paths), challenge_keys(dataset.database_paths))
            record["challenge_file"] = str(path)
            print(f"{dataset.name} ({label}): no public labels; the challenge prediction file (top "
                  f"{min(CHALLENGE_TOP, dataset.num_references)} per query) is {path}")
    record["seconds_recall"] = round(time.perf_counter() - embedded, 2)
    if dataset.labelled:
        print("\n" + format_recall_table(recalls, f"{dataset.name} ({label})") + "\n")
    if settings["visualize"]:
        shown = settings["top_k"]
        folder = out_dir / "retrievals" / safe_label / dataset.name
        csv_path, pictures = save_retrievals(dataset, predictions[:, :shown], distances[:, :shown], folder,
                                             settings["visualize"], settings["failures_only"], descriptors=descriptors)
        print(f"{dataset.name} ({label}): {len(pictures)} retrieval picture(s) and {csv_path} written to {folder}")
    return record


def save_descriptors(dataset: EvalDataset, descriptors: np.ndarray, folder: Path, dtype: str) -> dict:
    """``database.npy`` (N, D) and ``queries.npy`` (M, D) descriptors of ``dataset`` in ``dtype`` (float16 or
    float32) and ``database.txt`` / ``queries.txt``, their image paths one per line in the same order, under
    ``folder``; returns {'folder', 'dtype'} for recalls.json."""
    if dtype not in DESCRIPTOR_DTYPES:
        raise ConfigError(f"save_descriptors={dtype!r}: choose one of {DESCRIPTOR_DTYPES}")
    folder.mkdir(parents=True, exist_ok=True)
    n, width = dataset.num_references, descriptors.shape[1]
    for part, first, stop, paths in (("database", 0, n, dataset.database_paths),
                                     ("queries", n, len(descriptors), dataset.query_paths)):
        target = folder / f"{part}.npy"  # written block by block: the descriptors may be a city on disk
        create_npy(target, (stop - first, width), dtype)
        for row in range(first, stop, BLOCK_ROWS):
            write_rows(target, row - first, read_rows(descriptors, row, min(row + BLOCK_ROWS, stop), dtype), sync=False)
        atomic_write_text(folder / f"{part}.txt", "".join(f"{p}\n" for p in paths))
    return {"folder": str(folder), "dtype": dtype}


def save_predictions(dataset: EvalDataset, predictions: np.ndarray, distances: np.ndarray, path: Path) -> str:
    """The top-K of every query into ``path`` (.npz, plain arrays: ``np.load`` reads it without pickles):
    ``predictions`` (M, K) database indices, best first; ``distances`` (M, K) squared L2 distances;
    ``positive`` (M, K) whether each prediction is a positive (absent for a set without labels);
    ``database_images`` and ``query_images``, the paths the indices refer to."""
    from utils.recall import hit_matrix

    arrays = {"predictions": predictions.astype(np.int64), "distances": distances.astype(np.float32),
              "database_images": np.array(dataset.database_paths), "query_images": np.array(dataset.query_paths)}
    if dataset.labelled:
        arrays["positive"] = hit_matrix(predictions, dataset.ground_truth, dataset.num_references)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return str(path)


def markdown_table(results: dict, benchmarks: Sequence[str], k_values: Sequence[int] = TABLE_K,
                   titles: Optional[dict] = None, marks: Optional[dict] = None) -> str:
    """Laid out like the README's tables: one row per model; per benchmark, R@1 / R@5 / R@10 columns in
    percent with one decimal, the benchmark named on its first column (followed by its footnote mark from
    ``marks``, e.g. '[3]', where given)."""
    titles, marks = titles or {}, marks or {}
    ks = [k for k in k_values if all(str(k) in r["benchmarks"][b]["recall"] for r in results.values() for b in benchmarks)]
    named = {b: f"{titles.get(b, b)} {marks[b]}" if b in marks else titles.get(b, b) for b in benchmarks}
    head = [f"{named[b]} R@{k}" if i == 0 else f"R@{k}" for b in benchmarks for i, k in enumerate(ks)]
    lines = ["| Model | Dim | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for label, r in results.items():
        cells = [f"{100 * r['benchmarks'][b]['recall'][str(k)]:.1f}" for b in benchmarks for k in ks]
        lines.append(f"| {label} | {r['descriptor_dim']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def protocol_lines(protocols: dict[str, dict], titles: Optional[dict] = None, marks: Optional[dict] = None) -> list[str]:
    """One line per benchmark stating its positives and counts, from the protocol record of the set that was
    evaluated (``EvalDataset.protocol``): what recalls.md says is what the code used. A named benchmark's line
    adds its pinned protocol, its source and whether its counts were checked; ``marks`` prefixes footnote marks."""
    titles, marks = titles or {}, marks or {}
    lines = []
    for name, p in protocols.items():
        line = (f"{marks[name] + ' ' if name in marks else ''}{titles.get(name, name)}: positives are {p['positives']}; "
                f"{p['num_references']:,} database images, {p['num_queries']:,} queries.")
        if p.get("protocol"):
            line += f" Protocol: {p['protocol']}. Source: {p['citation']}."
        expected = p.get("expected_counts")
        if p.get("synthetic"):
            line += " A synthetic stand-in: its own counts were checked, not the published ones."
        elif expected and p.get("counts_checked"):
            pinned = " / ".join("-" if e is None else f"{e:,}" for e in expected)
            line += f" Counts checked against the published {pinned}."
        elif expected:
            line += " Counts not checked (--data.check_counts false)."
        lines.append(line)
    return lines


def size_text(record: dict) -> str:
    """The evaluation image size of a model's record: 'HxW', or 'own resolution' for a model evaluated with each
    image at its own size (preprocessing resize 'none': CosPlace, EigenPlaces, NetVLAD, MegaLoc)."""
    if record.get("preprocessing", {}).get("resize") == "none":
        return "own resolution"
    return "x".join(map(str, record["image_size"]))


def write_results(results: dict, benchmarks: Sequence[str], out_dir: Path, k_values: Sequence[int],
                  protocol: dict, titles: Optional[dict] = None, suite: Optional[Suite] = None) -> dict[str, Path]:
    """recalls.json, recalls.csv, recalls.md and the recall curves under ``out_dir``; ``titles`` maps
    benchmark names to the titles shown (e.g. 'Pitts30k-test (synthetic)'). ``protocol``: the run's
    settings (k, precision, synthetic, search: ``Searcher.record()``, the index that searched) and
    ``benchmarks``: each benchmark's protocol record (``EvalDataset.protocol``), written into recalls.json
    and stated under the table in recalls.md.

    With ``suite`` (the run evaluated one ``suite:<paper>``), recalls.md is that paper's table: its columns in
    its order with its titles and its recall@K, each column's protocol in a numbered footnote. A set without
    public labels (the MSLS challenge) has no column: its footnote names the prediction file."""
    titles = titles or {b: benchmark_title(b) for b in benchmarks}
    files = {"json": out_dir / "recalls.json", "csv": out_dir / "recalls.csv", "md": out_dir / "recalls.md"}
    atomic_write_text(files["json"], json.dumps({"protocol": protocol, "models": results}, indent=1))
    rows = [["model", "checkpoint", "descriptor_dim", "image_size", "benchmark", "title", "num_references",
             "num_queries", "skipped_images", *[f"R@{k}" for k in k_values]]]
    for label, r in results.items():
        for b in benchmarks:
            rb = r["benchmarks"][b]
            recall = rb["recall"]
            rows.append([label, r["checkpoint"], rb.get("descriptor_dim", r["descriptor_dim"]),
                         size_text(r), b, titles.get(b, b), rb["num_references"],
                         rb["num_queries"], rb["skipped_database"] + rb["skipped_queries"],
                         *[f"{100 * recall[str(k)]:.2f}" if recall is not None else "" for k in k_values]])
    with (out_dir / "recalls.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    scored = [b for b in benchmarks if all(r["benchmarks"][b]["recall"] is not None for r in results.values())]
    size = "; ".join(f"{label}: {size_text(r)}" for label, r in results.items())
    search = protocol.get("search", {}).get("description", Searcher().describe())
    notes = ["", f"Recall@K (%), {search}. Image size (H x W): {size}."]
    shown, marks, table_k = dict(titles), {}, TABLE_K
    if suite is not None:
        notes.insert(1, f"The table of {suite.citation}: its columns, in its order."
                        + (f" Not reproduced: {suite.omitted}." if suite.omitted else ""))
        for b, title in suite.titles.items():
            shown[b] = f"{title} (synthetic)" if "(synthetic)" in titles.get(b, "") else title
        marks = {b: f"[{i}]" for i, b in enumerate(benchmarks, 1)}
        table_k = suite.ks
    named = [f"{label} = {r['checkpoint']}" for label, r in results.items() if r.get("checkpoint") not in (None, label)]
    if named:
        notes.append("Models: " + "; ".join(named) + ".")
    notes += protocol_lines({b: protocol["benchmarks"][b] for b in benchmarks}, shown, marks)
    for b in benchmarks:
        for label, r in results.items():
            if r["benchmarks"][b].get("challenge_file"):
                notes.append(f"{shown.get(b, b)}: no public labels, so no recall here: {label}'s prediction file for "
                             f"the challenge server is {r['benchmarks'][b]['challenge_file']}.")
    if any("synthetic" in titles.get(b, "") for b in benchmarks):
        notes.append("Synthetic: the project's generated stand-ins in the real formats, not the real data sets.")
    table = markdown_table(results, scored, table_k, shown, marks) if scored else "(no benchmark with labels)"
    atomic_write_text(files["md"], table + "\n" + "\n".join(notes) + "\n")
    curves = {b: {label: {int(k): v for k, v in r["benchmarks"][b]["recall"].items()} for label, r in results.items()}
              for b in scored}
    if scored:
        files["curves"] = plot_recall_curves(curves, out_dir / "recall_curves.png", titles)
    for b in scored:
        plot_recall_curves({b: curves[b]}, out_dir / f"recall_{b}.png", titles)
    return files
