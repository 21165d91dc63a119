"""Evaluate checkpoints on benchmarks: recall tables, recall curves and retrieval pictures.

    python eval.py --checkpoint LOGS/my_run/version_0/checkpoints/last.ckpt \\
        --benchmarks pitts30k_test pitts250k_test msls_val folder:/data/tokyo247 \\
        --pitts-root /data/pittsburgh --msls-root /data/msls --out-dir LOGS/eval/my_run
    python eval.py --checkpoint resnet50_MixVPR_4096.ckpt --config configs/mixvpr_resnet50_4096.yaml \\
        --benchmarks pitts30k_test --pitts-root /data/pittsburgh
    python eval.py --checkpoint LOGS/synthetic_demo/version_0/checkpoints/last.ckpt --synthetic \\
        --benchmarks pitts30k_test msls_val --visualize 5

Each checkpoint is our Lightning ``.ckpt`` (architecture from its saved hyper-parameters) or a bare
state_dict such as the authors' releases (architecture from ``--config`` and/or ``--backbone-arch``
... flags; they apply only to checkpoints without saved hyper-parameters). Benchmarks are the named
sets (Pittsburgh .mat splits, msls_val with its 740-query protocol) or ``folder:<root>`` for any set in
the generic folder format, positives within ``--pos-radius`` metres.

The evaluation is the one used in training: the same EvalDataset classes, the evaluation transform,
and ``VPRModel.evaluate_descriptors`` (faiss exact search, recall@K). Written to ``--out-dir``:
``recalls.csv``, ``recalls.json``, ``recalls.md`` (one row per model, one column per benchmark),
``recall_curves.png`` and ``recall_<benchmark>.png`` (all models on one plot), ``descriptors/``
(the cache: reused when the weights, image list, image size and precision are the same) and, with
``--visualize``, ``retrievals/<model>/<benchmark>/`` (pictures and a CSV record).

Unreadable images stop the run with their path. With ``--skip-unreadable`` they are left out: an
unreadable database image leaves the database (a query whose only positives were unreadable keeps
counting, as a miss), an unreadable query leaves the evaluation (the denominator shrinks); the count
is printed and recorded, and the paths are listed in ``skipped_<benchmark>.txt``.
"""
import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dataloaders.eval import FOLDER_PREFIX, EvalDataset, build_eval_set
from utils.checkpoint import read_state_dict
from utils.cli_types import json_object
from utils.inference import PRECISIONS, build_model, cached_embed_paths, weights_fingerprint
from utils.recall import DEFAULT_K, format_recall_table, search_nearest
from utils.visualize import plot_recall_curves, save_retrievals

# data-root option -> environment variable used when the option is not given (as in training)
ROOT_ENV = {"pitts_root": "PITTSBURGH_ROOT", "msls_root": "MSLS_ROOT"}
TITLES = {"pitts30k_val": "Pitts30k-val", "pitts30k_test": "Pitts30k-test", "pitts250k_val": "Pitts250k-val",
          "pitts250k_test": "Pitts250k-test", "msls_val": "MSLS-val"}
TABLE_K = (1, 5, 10)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with retrieve.py: checkpoints, architecture, embedding settings, cache."""
    parser.add_argument("--checkpoint", nargs="+", required=True, type=Path,
                        help="our Lightning .ckpt file(s) or bare state_dict(s) (.pth/.ckpt)")
    arch = parser.add_argument_group("architecture of bare state_dicts (checkpoints without saved hyper-parameters)")
    arch.add_argument("--config", type=Path, help="a training YAML: its model: section and data.image_size")
    arch.add_argument("--backbone-arch")
    arch.add_argument("--layers-to-crop", type=int, nargs="*")
    arch.add_argument("--agg-arch")
    arch.add_argument("--agg-config", type=json_object, help="JSON object, e.g. '{\"out_channels\": 1024}'")
    run = parser.add_argument_group("embedding")
    run.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                     help="input size (default: the model's; architecture for a bare MixVPR state_dict)")
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--num-workers", type=int, default=4)
    run.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:1 ...")
    run.add_argument("--precision", default="32", choices=sorted(PRECISIONS))
    run.add_argument("--faiss-gpu", action="store_true", help="faiss search on the GPU (needs faiss-gpu)")
    run.add_argument("--skip-unreadable", action="store_true",
                     help="leave unreadable images out (and say how many) instead of stopping")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write cached descriptors")
    run.add_argument("--cache-dir", type=Path, help="descriptor cache (default: <out-dir>/descriptors)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")


def architecture_overrides(args) -> dict:
    """The architecture flags given on the command line, as VPRModel arguments."""
    overrides = {k: getattr(args, k) for k in ("backbone_arch", "layers_to_crop", "agg_arch", "agg_config")
                 if getattr(args, k) is not None}
    if args.image_size:
        overrides["image_size"] = list(args.image_size)
    return overrides


def load_checkpoint(path: Path, args, **settings):
    """(model on the CPU, weights fingerprint) of one checkpoint; architecture flags and --config
    apply only when it has no saved hyper-parameters; ``settings`` (recall_k, faiss_gpu) always."""
    state_dict, hyper_parameters = read_state_dict(path)
    arch = {} if hyper_parameters else architecture_overrides(args)
    ignored = [flag for flag, value in (("--config", args.config), ("--backbone-arch", args.backbone_arch),
                                        ("--layers-to-crop", args.layers_to_crop), ("--agg-arch", args.agg_arch),
                                        ("--agg-config", args.agg_config)) if value is not None]
    if hyper_parameters and ignored:
        print(f"note: {path} carries its hyper-parameters; {', '.join(ignored)} apply to bare state_dicts only")
    config = None if hyper_parameters else args.config
    model = build_model(state_dict, hyper_parameters, str(path), config, "cpu", **arch, **settings)
    return model, weights_fingerprint(model)


def model_labels(paths: Sequence[Path], names: Optional[Sequence[str]] = None) -> list[str]:
    """Short unique names: ``names`` when given, else the file stem, with parent folders prepended
    (``checkpoints`` skipped) until the names differ."""
    if names:
        if len(names) != len(paths) or len(set(names)) != len(names):
            raise ValueError(f"--names needs {len(paths)} distinct names, one per checkpoint; got {list(names)}")
        return list(names)
    parts = [[p.stem] + [q for q in reversed(p.resolve().parent.parts) if q not in ("checkpoints", "/")]
             for p in paths]
    for depth in range(1, max(len(x) for x in parts) + 1):
        labels = ["/".join(reversed(x[:depth])) for x in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{label}#{i}" for i, label in enumerate(labels)]


def data_roots(args) -> dict:
    """Data roots: option, else environment variable, else the synthetic data (with --synthetic)."""
    roots = {k: getattr(args, k) or os.environ.get(env) for k, env in ROOT_ENV.items()}
    if args.synthetic:
        from dataloaders.synthetic import generate_synthetic, synthetic_roots
        generate_synthetic(args.synthetic_dir, scale=args.synthetic_scale)
        generated = synthetic_roots(args.synthetic_dir, args.synthetic_scale)
        roots = {k: v or str(generated[k]) for k, v in roots.items()}
    return roots


def drop_images(dataset: EvalDataset, indices: np.ndarray) -> EvalDataset:
    """``dataset`` without the images at ``indices`` (database first, then queries): ground-truth
    indices are renumbered; a query keeps its remaining positives (none left: it counts as a miss)."""
    indices = np.asarray(indices, dtype=np.int64)
    keep = np.ones(len(dataset), dtype=bool)
    keep[indices] = False
    keep_db, keep_q = keep[: dataset.num_references], keep[dataset.num_references:]
    renumber = np.cumsum(keep_db) - 1
    gt = [renumber[p[keep_db[p]]] for p, kept in zip(dataset.ground_truth, keep_q) if kept]
    db = [p for p, k in zip(dataset.database_paths, keep_db) if k]
    queries = [p for p, k in zip(dataset.query_paths, keep_q) if k]
    return EvalDataset(dataset.name, db, queries, gt, dataset.transform)


def evaluate_benchmark(model, fingerprint: str, dataset: EvalDataset, label: str, args, out_dir: Path,
                       cache_dir: Optional[Path]) -> dict:
    """Embed ``dataset`` (through the cache), compute recall@K as validation does, optionally save
    retrieval pictures; returns the record written to recalls.json."""
    start = time.perf_counter()
    descriptors, unreadable, reused = cached_embed_paths(
        model, dataset.images, cache_dir, f"{dataset.name}-{label}", fingerprint, args.image_size or model.image_size,
        args.precision, args.skip_unreadable, batch_size=args.batch_size, device=args.device,
        num_workers=args.num_workers, progress=not args.no_progress)
    embedded = time.perf_counter()
    record = {"num_references": dataset.num_references, "num_queries": dataset.num_queries,
              "skipped_database": 0, "skipped_queries": 0, "descriptors_cached": reused}
    if len(unreadable):
        skipped_db = int((unreadable < dataset.num_references).sum())
        record.update(skipped_database=skipped_db, skipped_queries=len(unreadable) - skipped_db)
        listing = out_dir / f"skipped_{dataset.name}.txt"
        listing.write_text("".join(dataset.images[i] + "\n" for i in unreadable))
        print(f"{dataset.name}: skipped {len(unreadable)} unreadable image(s) ({skipped_db} database, "
              f"{len(unreadable) - skipped_db} queries), listed in {listing}")
        dataset = drop_images(dataset, unreadable)
        descriptors = np.delete(descriptors, unreadable, axis=0)
        record.update(num_references=dataset.num_references, num_queries=dataset.num_queries)
    # the recall of validation: one mechanism
    recalls = model.evaluate_descriptors(descriptors, dataset)
    record["recall"] = {str(k): v for k, v in recalls.items()}
    record["seconds_embedding"] = round(embedded - start, 2)
    record["seconds_recall"] = round(time.perf_counter() - embedded, 2)
    print("\n" + format_recall_table(recalls, f"{dataset.name} ({label})") + "\n")
    if args.visualize:
        r_list, q_list = descriptors[: dataset.num_references], descriptors[dataset.num_references:]
        k = min(args.top_k, dataset.num_references)
        distances, predictions = search_nearest(r_list, q_list, k, faiss_gpu=args.faiss_gpu, return_distances=True)
        folder = out_dir / "retrievals" / label.replace("/", "_") / dataset.name
        csv_path, pictures = save_retrievals(dataset, predictions, distances, folder, args.visualize,
                                             args.failures_only)
        print(f"{dataset.name} ({label}): {len(pictures)} retrieval picture(s) and {csv_path} written to {folder}")
    return record


def markdown_table(results: dict, benchmarks: Sequence[str], k_values: Sequence[int] = TABLE_K) -> str:
    """Laid out like the README's tables: one row per model; per benchmark, R@1 / R@5 / R@10 columns in
    percent with one decimal, the benchmark named on its first column."""
    ks = [k for k in k_values if all(str(k) in r["benchmarks"][b]["recall"] for r in results.values() for b in benchmarks)]
    head = [f"{TITLES.get(b, b)} R@{k}" if i == 0 else f"R@{k}" for b in benchmarks for i, k in enumerate(ks)]
    lines = ["| Model | Dim | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for label, r in results.items():
        cells = [f"{100 * r['benchmarks'][b]['recall'][str(k)]:.1f}" for b in benchmarks for k in ks]
        lines.append(f"| {label} | {r['descriptor_dim']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(results: dict, benchmarks: Sequence[str], out_dir: Path, k_values: Sequence[int],
                  protocol: dict) -> dict[str, Path]:
    """recalls.json, recalls.csv, recalls.md and the recall curves under ``out_dir``."""
    files = {"json": out_dir / "recalls.json", "csv": out_dir / "recalls.csv", "md": out_dir / "recalls.md"}
    files["json"].write_text(json.dumps({"protocol": protocol, "models": results}, indent=1))
    with files["csv"].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "checkpoint", "descriptor_dim", "image_size", "benchmark", "num_references",
                         "num_queries", "skipped_images", *[f"R@{k}" for k in k_values]])
        for label, r in results.items():
            for b in benchmarks:
                rb = r["benchmarks"][b]
                writer.writerow([label, r["checkpoint"], r["descriptor_dim"], "x".join(map(str, r["image_size"])), b,
                                 rb["num_references"], rb["num_queries"], rb["skipped_database"] + rb["skipped_queries"],
                                 *[f"{100 * rb['recall'][str(k)]:.2f}" for k in k_values]])
    size = "; ".join(f"{label}: {'x'.join(map(str, r['image_size']))}" for label, r in results.items())
    notes = ["", f"Recall@K (%), exact nearest neighbours; positives: {protocol['positives']}. "
                 f"Image size (H x W): {size}."]
    if "msls_val" in benchmarks:
        notes.append("MSLS-val: the queries of msls_val_qIdx.npy (740 on the real set, those with a positive) "
                     "against the cph + sf database, as MixVPR reports it.")
    files["md"].write_text(markdown_table(results, benchmarks) + "\n" + "\n".join(notes) + "\n")
    curves = {b: {label: {int(k): v for k, v in r["benchmarks"][b]["recall"].items()} for label, r in results.items()}
              for b in benchmarks}
    files["curves"] = plot_recall_curves(curves, out_dir / "recall_curves.png", TITLES)
    for b in benchmarks:
        plot_recall_curves({b: curves[b]}, out_dir / f"recall_{b}.png", TITLES)
    return files


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line of eval.py."""
    parser = argparse.ArgumentParser(prog="python eval.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    add_model_arguments(parser)
    parser.add_argument("--names", nargs="+", help="one label per checkpoint (default: from the file names)")
    parser.add_argument("--benchmarks", nargs="+", required=True,
                        help="pitts30k_val pitts30k_test pitts250k_val pitts250k_test msls_val folder:<root> ...")
    data = parser.add_argument_group("data")
    data.add_argument("--pitts-root", help="Pittsburgh root (default: $PITTSBURGH_ROOT)")
    data.add_argument("--msls-root", help="MSLS root (default: $MSLS_ROOT)")
    data.add_argument("--pos-radius", type=float, default=25.0,
                      help="positive radius in metres for folder: sets (named sets keep their published positives)")
    data.add_argument("--synthetic", action="store_true",
                      help="use the embedded synthetic data for roots not given (generated once)")
    data.add_argument("--synthetic-dir", default="LOGS/synthetic_data")
    data.add_argument("--synthetic-scale", default="default", choices=("default", "tiny"))
    out = parser.add_argument_group("output")
    out.add_argument("--out-dir", type=Path, default=Path("LOGS/eval"))
    out.add_argument("--k", type=int, nargs="+", default=list(DEFAULT_K), help="recall@K values")
    out.add_argument("--visualize", type=int, default=0, metavar="N",
                     help="retrieval pictures of the first N queries per benchmark (-1: all; 0: none)")
    out.add_argument("--failures-only", action="store_true", help="pictures and record of failed queries only")
    out.add_argument("--top-k", type=int, default=5, help="predictions shown per query")
    args = parser.parse_args(argv)
    if args.names and len(args.names) != len(args.checkpoint):
        parser.error(f"--names: {len(args.names)} names for {len(args.checkpoint)} checkpoints")
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the evaluation; returns {model label: record}, as written to recalls.json."""
    args = parse_args(argv)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = None if args.no_cache else (args.cache_dir or out_dir / "descriptors")
    labels = model_labels(args.checkpoint, args.names)
    roots = data_roots(args)
    k_values = sorted(set(args.k))
    # open every benchmark first: a missing root or ground-truth file fails before any embedding. The
    # images are read and transformed (eval_transform at each model's size) by the embedding loader.
    datasets = {}
    for name in args.benchmarks:
        dataset = build_eval_set(name, roots, None, pos_radius=args.pos_radius)
        if dataset.name in datasets:
            raise ValueError(f"two benchmarks are named {dataset.name!r}: give folder: sets distinct folder names")
        datasets[dataset.name] = dataset
    results = {}
    for path, label in zip(args.checkpoint, labels):
        model, fingerprint = load_checkpoint(path, args, recall_k=k_values, faiss_gpu=args.faiss_gpu)
        size = tuple(args.image_size or model.image_size)
        print(f"{label}: {path} ({model.hparams.backbone_arch} + {model.hparams.agg_arch}, "
              f"{model.descriptor_dim}-d, {size[0]} x {size[1]} images)")
        results[label] = {"checkpoint": str(path), "weights_sha256": fingerprint, "descriptor_dim": model.descriptor_dim,
                          "image_size": list(size), "benchmarks": {}}
        for name, dataset in datasets.items():
            results[label]["benchmarks"][name] = evaluate_benchmark(model, fingerprint, dataset, label, args,
                                                                    out_dir, cache_dir)
    kinds = {"folder": f"database images within {args.pos_radius:g} m (UTM) for folder sets",
             "pitts": "within posDistThr (25 m) for Pittsburgh", "msls": "msls_val_pIdx.npy for MSLS-val"}
    used = {"folder" if n.startswith(FOLDER_PREFIX) else "msls" if n == "msls_val" else "pitts" for n in args.benchmarks}
    protocol = {"positives": "; ".join(v for k, v in kinds.items() if k in used), "k": k_values,
                "precision": args.precision}
    files = write_results(results, list(datasets), out_dir, k_values, protocol)
    print(files["md"].read_text())
    print("written: " + ", ".join(str(p) for p in files.values()))
    return results


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
