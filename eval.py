"""Evaluate checkpoints on benchmarks: recall tables, recall curves and retrieval pictures.

    python eval.py --checkpoint LOGS/my_run/version_0/checkpoints/last.ckpt \\
        --benchmarks '[pitts30k_test, pitts250k_test, msls_val, folder:/data/tokyo247]' \\
        --data.pitts_root /data/pittsburgh --data.msls_root /data/msls --out_dir LOGS/eval/my_run
    python eval.py --checkpoint "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt" \\
        --config configs/mixvpr_resnet50_4096.yaml --benchmarks '[pitts30k_test]' --data.pitts_root /data/pittsburgh
    python eval.py --checkpoint LOGS/synthetic_demo/version_0/checkpoints/last.ckpt --data.synthetic true \\
        --benchmarks '[pitts30k_test, msls_val]' --visualize 5

Settings are those of main.py (``--data.pitts_root``, ``--model.agg_config`` ...; ``--config`` takes a
training recipe). Each checkpoint is our Lightning ``.ckpt`` (architecture from its saved
hyper-parameters) or a bare state_dict such as the authors' releases (architecture from the recipe's
model section; without ``--config``, the paper's ResNet50-MixVPR-4096). Benchmarks (default: the
recipe's ``data.test_sets``) are the named sets (Pittsburgh .mat splits, msls_val with its 740-query
protocol) or ``folder:<root>`` for any set in the generic folder format, positives within
``--data.pos_radius`` metres.

The evaluation is the one used in training: the same EvalDataset classes, the evaluation transform,
and faiss exact search for recall@K (``--search.memory_budget 4GB``: shard by shard, the same result;
``--search.index IVF4096,PQ64`` or any faiss index_factory string, ``--search.params nprobe=32``: approximate,
and the tables say so; ``--search.whitening <training images>``: PCA whitening learned on them first). Each run writes into a new ``<out_dir>/version_<n>/``:
``recalls.csv``, ``recalls.json``, ``recalls.md`` (one row per model, one column per benchmark),
``recall_curves.png`` and ``recall_<benchmark>.png``, and with ``--visualize`` ``retrievals/<model>/
<benchmark>/`` (pictures and a CSV record); recalls.md and recalls.json state each benchmark's positives
(threshold and source, read from the data) and counts. A run that fails before its results are written
leaves no empty version folder. Descriptors are cached in ``<out_dir>/descriptors/``, reused when the
network (settings and weights), images, preprocessing and precision are the same and the file passes
its checks (shape, checksum, finite rows); a cache folder that cannot be written is skipped with a note.

Images are evaluated at the size the checkpoint records (the validation size of its run,
``data.eval_image_size`` in training), else the model's image size; ``--data.eval_image_size`` overrides.

Unreadable images stop the run with their path. With ``--data.skip_unreadable true`` (as in training)
they are left out: an
unreadable database image leaves the database (a query whose only positives were unreadable keeps
counting, as a miss), an unreadable query leaves the evaluation (the denominator shrinks); the count
is printed and recorded, and the paths are listed in ``skipped_<benchmark>.txt``.
"""
from pathlib import Path
from typing import Optional, Sequence

from jsonargparse.typing import PositiveInt

from dataloaders.eval import FOLDER_PREFIX, build_eval_set, is_eval_set
from dataloaders.roots import data_roots
from models.commands import architecture_settings, checkpoints_of, command_parser, searcher_of
from models.descriptor_cache import network_identity, usable_cache_dir
from models.evaluation import (benchmark_title, evaluate_benchmark, learned_whitening, load_for_evaluation, model_labels,
                               write_results)
from utils.allocator import keep_freed_memory
from utils.cli import run_command
from utils.errors import ConfigError
from utils.files import reserved_version
from utils.recall import DEFAULT_K


def parse_args(argv: Optional[Sequence[str]] = None):
    """The settings of eval.py."""
    parser = command_parser("python eval.py", __doc__.split("\n")[0])
    parser.add_argument("--names", type=Optional[list[str]], default=None,
                        help="one label per checkpoint (default: from the file names)")
    parser.add_argument("--benchmarks", type=Optional[list[str]], default=None,
                        help="sets to evaluate (default: data.test_sets): pitts30k_val, pitts30k_test, "
                             "pitts250k_val, pitts250k_test, msls_val, folder:<root>")
    parser.add_argument("--out_dir", type=str, default="LOGS/eval", help="results go to <out_dir>/version_<n>")
    parser.add_argument("--k", type=list[PositiveInt], default=list(DEFAULT_K), help="recall@K values")
    parser.add_argument("--visualize", type=int, default=0,
                        help="retrieval pictures of the first N queries per benchmark (-1: all; 0: none)")
    parser.add_argument("--failures_only", type=bool, default=False, help="pictures and record of failed queries only")
    parser.add_argument("--top_k", type=PositiveInt, default=5, help="predictions shown per query")
    parser.add_argument("--synthetic_titles", type=Optional[bool], default=None,
                        help="say 'synthetic' in titles (default: when data.synthetic)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the evaluation; returns {model label: record}, as written to recalls.json."""
    cfg = parse_args(argv)
    checkpoints = checkpoints_of(cfg)
    labels = model_labels(checkpoints, cfg.names)
    data = cfg.data
    benchmarks = list(cfg.benchmarks or data.test_sets)
    unknown = [b for b in benchmarks if not is_eval_set(b)]
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {unknown}: use pitts30k_val, pitts30k_test, pitts250k_val, "
                          f"pitts250k_test, msls_val or {FOLDER_PREFIX}<root>")
    if data.synthetic:
        from dataloaders.synthetic import generate_synthetic
        generate_synthetic(data.synthetic_dir, scale=data.synthetic_scale, seed=data.seed)
    roots = data_roots(data.gsv_root, data.pitts_root, data.msls_root, data.synthetic, data.synthetic_dir,
                       data.synthetic_scale, data.seed)
    # open every benchmark first: a missing root or ground-truth file fails before any embedding. The
    # images are read and transformed (the evaluation transform at each model's size) when embedded.
    datasets = {}
    for name in benchmarks:
        dataset = build_eval_set(name, roots, None, pos_radius=data.pos_radius)
        if dataset.name in datasets:
            raise ConfigError(f"two benchmarks are named {dataset.name!r}: give folder: sets distinct folder names")
        datasets[dataset.name] = dataset
    synthetic = data.synthetic if cfg.synthetic_titles is None else cfg.synthetic_titles
    titles = {name: benchmark_title(name, synthetic and not name.startswith(FOLDER_PREFIX)) for name in datasets}
    out_root = Path(cfg.out_dir)
    cache_dir = usable_cache_dir(cfg.cache_dir or out_root / "descriptors") if cfg.cache else None
    k_values = sorted(set(cfg.k))
    arch = architecture_settings(cfg)
    searcher = searcher_of(cfg)
    with reserved_version(out_root) as out_dir:
        results = {}
        for path, label in zip(checkpoints, labels):
            net, fingerprint, own_settings = load_for_evaluation(path, arch, data.eval_image_size)
            size = net.preprocessing.image_size
            print(f"{label}: {path} ({net.descriptor_dim}-d, {size[0]} x {size[1]} images"
                  f"{'' if own_settings else ', architecture from the settings'})")
            results[label] = {"checkpoint": str(path), "weights_sha256": fingerprint,
                              "descriptor_dim": net.descriptor_dim, "image_size": list(size),
                              "preprocessing": net.preprocessing.with_size(size).as_dict(), "benchmarks": {}}
            settings = {"image_size": size, "precision": cfg.precision, "skip_unreadable": cfg.data.skip_unreadable,
                        "batch_size": cfg.batch_size, "device": cfg.device, "num_workers": cfg.num_workers,
                        "progress": cfg.progress, "k": k_values, "faiss_gpu": cfg.faiss_gpu,
                        "visualize": cfg.visualize, "failures_only": cfg.failures_only, "top_k": cfg.top_k,
                        "name": f"{label} ({path})", "search": searcher, "cache_dtype": cfg.cache_dtype}
            searcher.check(searcher.whitening_dim or net.descriptor_dim)  # before anything is embedded
            identity = network_identity(net) if cache_dir is not None else None
            settings["whitening"] = learned_whitening(net, identity, searcher, settings, cache_dir)
            for name, dataset in datasets.items():
                results[label]["benchmarks"][name] = evaluate_benchmark(net, identity, dataset, label, settings,
                                                                        out_dir, cache_dir)
        protocol = {"k": k_values, "precision": cfg.precision, "synthetic": bool(synthetic), "search": searcher.record(),
                    "benchmarks": {name: dataset.protocol for name, dataset in datasets.items()}}
        files = write_results(results, list(datasets), out_dir, k_values, protocol, titles)
    print(files["md"].read_text())
    print("written: " + ", ".join(str(p) for p in files.values()))
    return results


if __name__ == "__main__":
    keep_freed_memory()  # CPU embedding without glibc's page-fault cycle (utils/allocator.py)
    run_command(main)
