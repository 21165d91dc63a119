"""Evaluate checkpoints on benchmarks: recall tables, recall curves and retrieval pictures.

    python eval.py --checkpoint LOGS/my_run/version_0/checkpoints/last.ckpt \\
        --benchmarks '[pitts30k_test, pitts250k_test, msls_val, folder:/data/tokyo247]' \\
        --data.pitts_root /data/pittsburgh --data.msls_root /data/msls --out_dir LOGS/eval/my_run
    python eval.py --checkpoint "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt" \\
        --config configs/mixvpr_resnet50_4096.yaml --benchmarks '[pitts30k_test]' --data.pitts_root /data/pittsburgh
    python eval.py --checkpoint LOGS/synthetic_demo/version_0/checkpoints/last.ckpt --data.synthetic true \\
        --benchmarks '[pitts30k_test, msls_val]' --visualize 5
    python eval.py --checkpoint weights.ckpt --benchmarks '[suite:boq]' --data.benchmarks_root /data/vpr \\
        --data.pitts_root /data/pittsburgh --data.msls_root /data/msls --save_predictions 25

Settings are those of main.py (``--data.pitts_root``, ``--model.agg_config`` ...; ``--config`` takes a
training recipe). Each checkpoint is our Lightning ``.ckpt`` (architecture from its saved
hyper-parameters) or a bare state_dict such as the authors' releases (architecture from the recipe's
model section; without ``--config``, the paper's ResNet50-MixVPR-4096). Benchmarks (default: the
recipe's ``data.test_sets``) are the registered benchmarks (``dataloaders.eval.BENCHMARKS``: Pittsburgh,
msls_val with its 740-query protocol, msls_val_all, Nordland in two versions, SPED, Tokyo 24/7, ...), each
with its published protocol and counts (checked; ``--data.check_counts false`` makes a mismatch a note),
``suite:<paper>`` for the columns of a paper's table (recalls.md then takes that table's layout), or
``folder:<root>`` for any set in the generic folder format, positives within ``--data.pos_radius`` metres.
Each benchmark's root is ``--data.<set>_root`` (or its environment variable), else its folder under
``--data.benchmarks_root`` in VPR-datasets-downloader's layout. A set without public labels (``msls_test``,
the MSLS challenge) gets no recall: its prediction file for the challenge server,
``msls_challenge_<model>.txt``, is written instead.

The evaluation is the one used in training: the same EvalDataset classes, the evaluation transform,
and faiss exact search for recall@K (``--search.memory_budget 4GB``: shard by shard, the same result;
``--search.index IVF4096,PQ64`` or any faiss index_factory string, ``--search.params nprobe=32``: approximate,
and the tables say so; ``--search.whitening <training images>``: PCA whitening learned on them first). Each run writes into a new ``<out_dir>/version_<n>/``:
``recalls.csv``, ``recalls.json``, ``recalls.md`` (one row per model, one column per benchmark),
``recall_curves.png`` and ``recall_<benchmark>.png``, and with ``--visualize`` ``retrievals/<model>/
<benchmark>/`` (pictures and a CSV record), with ``--save_descriptors float16|float32``
``descriptors/<model>/<benchmark>/{database,queries}.{npy,txt}`` (descriptors and their image lists), with
``--save_predictions K`` ``predictions/<model>/<benchmark>.npz`` (top-K indices, distances, positive
flags, image lists); recalls.md and recalls.json state each benchmark's positives (threshold and source,
read from the data), counts, pinned protocol and source. A run that fails before its results are written
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
from typing import Literal, Optional, Sequence

from jsonargparse.typing import PositiveInt

from dataloaders.eval import BENCHMARKS, FOLDER_PREFIX, SUITES, build_eval_set, expand_benchmarks, is_eval_set
from dataloaders.roots import roots_of
from models.commands import TRAINING_DATA, architecture_settings, checkpoints_of, command_parser
from models.commands import refuse_unused_flags, resolve_faiss_gpu, searcher_of
from models.descriptor_cache import network_identity, usable_cache_dir
from models.evaluation import (DESCRIPTOR_DTYPES, benchmark_title, evaluate_benchmark, learned_whitening,
                               load_for_evaluation, model_labels,
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
                        help="sets to evaluate (default: data.test_sets): registered benchmarks (pitts30k_test, "
                             "msls_val, nordland, sped, tokyo247, msls_test, ...), suite:<paper> (the columns of a "
                             f"paper's table: {', '.join('suite:' + s for s in SUITES)}), folder:<root>")
    parser.add_argument("--out_dir", type=str, default="LOGS/eval", help="results go to <out_dir>/version_<n>")
    parser.add_argument("--k", type=list[PositiveInt], default=list(DEFAULT_K), help="recall@K values")
    parser.add_argument("--visualize", type=int, default=0,
                        help="retrieval pictures of the first N queries per benchmark (-1: all; 0: none)")
    parser.add_argument("--failures_only", type=bool, default=False, help="pictures and record of failed queries only")
    parser.add_argument("--top_k", type=PositiveInt, default=5, help="predictions shown per query")
    parser.add_argument("--save_descriptors", type=Optional[Literal[DESCRIPTOR_DTYPES]], default=None,
                        help="save each benchmark's database and query descriptors in this dtype (float16, float32), "
                             "with their image lists, under descriptors/<model>/<benchmark>/")
    parser.add_argument("--save_predictions", type=Optional[PositiveInt], default=None,
                        help="save the top-K predictions of every query (indices, distances, whether each is a "
                             "positive) under predictions/<model>/<benchmark>.npz")
    parser.add_argument("--synthetic_titles", type=Optional[bool], default=None,
                        help="say 'synthetic' in titles (default: when data.synthetic)")
    cfg = parser.parse_args(argv)
    # a flag this command accepts takes effect: training-only ones are refused; --model.faiss_gpu is --faiss_gpu
    refuse_unused_flags(parser, argv, "python eval.py", TRAINING_DATA, aliases=("model.faiss_gpu",))
    resolve_faiss_gpu(cfg, argv)
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the evaluation; returns {model label: record}, as written to recalls.json."""
    cfg = parse_args(argv)
    checkpoints = checkpoints_of(cfg)
    labels = model_labels(checkpoints, cfg.names)
    data = cfg.data
    benchmarks, suite = expand_benchmarks(list(cfg.benchmarks or data.test_sets))
    unknown = [b for b in benchmarks if not is_eval_set(b)]
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {unknown}: use one of {sorted(BENCHMARKS)}, suite:<paper> "
                          f"({', '.join('suite:' + s for s in SUITES)}) or {FOLDER_PREFIX}<root>")
    if data.synthetic:
        from dataloaders.synthetic import generate_synthetic
        generate_synthetic(data.synthetic_dir, scale=data.synthetic_scale, seed=data.seed)
    roots = roots_of(data)
    # open every benchmark first: a missing root or ground-truth file fails before any embedding. The
    # images are read and transformed (the evaluation transform at each model's size) when embedded.
    datasets = {}
    for name in benchmarks:
        dataset = build_eval_set(name, roots, None, pos_radius=data.pos_radius, check_counts=data.check_counts)
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
            print(f"{label}: {path} ({net.descriptor_dim}-d, {net.preprocessing.describe()}"
                  f"{'' if own_settings else ', architecture from the settings'})")
            results[label] = {"checkpoint": str(path), "weights_sha256": fingerprint,
                              "descriptor_dim": net.descriptor_dim, "image_size": list(size),
                              "preprocessing": net.preprocessing.with_size(size).as_dict(), "benchmarks": {}}
            settings = {"image_size": size, "precision": cfg.precision, "skip_unreadable": cfg.data.skip_unreadable,
                        "batch_size": cfg.batch_size, "device": cfg.device, "num_workers": cfg.num_workers,
                        "progress": cfg.progress, "k": k_values, "faiss_gpu": cfg.faiss_gpu,
                        "visualize": cfg.visualize, "failures_only": cfg.failures_only, "top_k": cfg.top_k,
                        "name": f"{label} ({path})", "save_descriptors": cfg.save_descriptors,
                        "save_predictions": cfg.save_predictions, "search": searcher, "cache_dtype": cfg.cache_dtype}
            searcher.check(searcher.whitening_dim or net.descriptor_dim)  # before anything is embedded
            identity = network_identity(net) if cache_dir is not None else None
            settings["whitening"] = learned_whitening(net, identity, searcher, settings, cache_dir)
            for name, dataset in datasets.items():
                results[label]["benchmarks"][name] = evaluate_benchmark(net, identity, dataset, label, settings,
                                                                        out_dir, cache_dir)
        protocol = {"k": k_values, "precision": cfg.precision, "synthetic": bool(synthetic), "search": searcher.record(),
                    "benchmarks": {name: dataset.protocol for name, dataset in datasets.items()}}
        files = write_results(results, list(datasets), out_dir, k_values, protocol, titles, suite)
    print(files["md"].read_text())
    print("written: " + ", ".join(str(p) for p in files.values()))
    return results


if __name__ == "__main__":
    keep_freed_memory()  # CPU embedding without glibc's page-fault cycle (utils/allocator.py)
    run_command(main)
