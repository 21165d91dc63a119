"""Search at city scale: what each faiss index costs (build time, memory, disk, queries/s) and loses (recall of
the true nearest neighbours, and place recall) against exact search, on generated descriptors.

    python bench/search_scale.py indexes --n 100000 --d 512 4096              # the index table
    python bench/search_scale.py indexes --n 1000000 --d 512 --indexes Flat "IVF4096,PQ64" --params "" nprobe=16
    python bench/search_scale.py exact --n 1000000 --d 4096 --budget 4GB     # peak memory of an exact evaluation
    python bench/search_scale.py place --checkpoint LOGS/synthetic_demo/version_0/checkpoints/last.ckpt

Descriptors (``generate``) are clusters of places with views, not i.i.d. Gaussian. Component variances fall
off as i^-1.5 (over a random permutation of the axes, so that no PQ sub-vector gets all of it), as the PCA
spectrum of trained VPR descriptors does (PCA to 256-d keeps almost all of their recall). A place's direction
is 0.5 of its district's (100 places), 0.7 of its street's (10 neighbouring places, which look alike: the
confusions of place recognition) and the rest its own. It is seen in 4 database views, each the direction
plus noise of norm 0.6 (half along the spectrum: viewpoint and light move the principal components too,
half isotropic); each query is a new view of a random place (noise 0.85). A place's views are its
positives: exact search puts one first for about three queries in four (R@10 about 95 %), so a place
recall (R@K) is measured beside the recall of the true k nearest neighbours. Rows are drawn block by block
from seeded generators, so a set of any size is written to disk in bounded memory.

Every index is built and searched in its own process (``child``), so the resident memory reported (peak RSS
of that process less its RSS before building: the index, its training sample, its working memory) is its
own. Disk is the size of the index file (``faiss.write_index``; Flat: the descriptors). QPS: all queries
searched at once for their 10 nearest neighbours. ``exact`` measures the peak resident memory of the whole
exact evaluation path (``models.evaluation.evaluation_recalls`` over descriptors on disk) under a memory
budget. ``place`` evaluates a trained model on the synthetic sets with eval.py once per index.
Timings are of this machine at the load printed with them; run when it is otherwise idle.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.npy_rows import NpyRows, create_npy, write_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VIEWS, QUERIES, PLACES_PER_STREET, STREETS_PER_DISTRICT, PLACES_PER_BLOCK = 4, 1000, 10, 10, 2048
# shares of a place's direction (squared weights sum to 1) and the noise of its views and of the queries
DISTRICT, STREET, VIEW_NOISE, QUERY_NOISE, SPECTRAL, DECAY = 0.5, 0.7, 0.6, 0.85, 0.5, 1.5


def _spectrum(d: int, seed: int) -> np.ndarray:
    """Per-axis standard deviations: variance i^-DECAY over a random permutation of the axes, total 1."""
    s = np.arange(1, d + 1) ** (-DECAY / 2)
    s = s[np.random.default_rng([seed, 0]).permutation(d)]
    return (s / np.linalg.norm(s)).astype(np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _noise(rng: np.random.Generator, count: int, d: int, spectrum: np.ndarray) -> np.ndarray:
    """(count, d) unit noise of a view: SPECTRAL of it along the descriptors' spectrum (what changes with
    viewpoint and light moves the principal components too), the rest isotropic."""
    shaped = _normalize(rng.standard_normal((count, d), dtype=np.float32) * spectrum)
    flat = _normalize(rng.standard_normal((count, d), dtype=np.float32))
    return _normalize(np.sqrt(SPECTRAL) * shaped + np.sqrt(1 - SPECTRAL) * flat)


def _direction(seed: int, kind: int, i: int, d: int, spectrum: np.ndarray) -> np.ndarray:
    """The unit direction number ``i`` of a kind (1 place, 5 street, 6 district), from its own generator."""
    v = np.random.default_rng([seed, kind, i]).standard_normal(d, dtype=np.float32) * spectrum
    return v / np.linalg.norm(v)


def _places(first: int, count: int, d: int, seed: int, spectrum: np.ndarray) -> np.ndarray:
    """(count, d) directions of places first..first+count-1: district + street + own part."""
    ids = np.arange(first, first + count)
    streets, districts = ids // PLACES_PER_STREET, ids // (PLACES_PER_STREET * STREETS_PER_DISTRICT)
    table = lambda kind, keys: {int(k): _direction(seed, kind, int(k), d, spectrum) for k in np.unique(keys)}
    own, street, district = table(1, ids), table(5, streets), table(6, districts)
    rest = np.sqrt(max(0.0, 1 - DISTRICT ** 2 - STREET ** 2))
    return _normalize(np.stack([DISTRICT * district[int(k)] for k in districts])
                      + np.stack([STREET * street[int(k)] for k in streets]) + rest * np.stack([own[int(k)] for k in ids]))


def generate(folder: Path, n: int, d: int, seed: int = 0, dtype: str = "float32") -> dict:
    """``folder/descriptors.npy``: n database views (place i // VIEWS) then the queries, as the descriptor cache
    holds a benchmark; ``query_places.npy``: each query's place. Reuses a set generated with the same settings."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"n": n, "d": d, "seed": seed, "dtype": dtype, "views": VIEWS, "queries": QUERIES, "version": 4}
    marker = folder / "generated.json"
    paths = {"all": folder / "descriptors.npy", "places": folder / "query_places.npy"}
    if marker.is_file() and json.loads(marker.read_text()) == meta:
        return paths
    (folder / "true.npy").unlink(missing_ok=True)  # the exact neighbours of an earlier set
    spectrum = _spectrum(d, seed)
    num_places = -(-n // VIEWS)
    rng = np.random.default_rng([seed, 3])
    places = np.sort(rng.choice(n // VIEWS, size=min(QUERIES, n // VIEWS), replace=False))
    create_npy(paths["all"], (n + len(places), d), dtype)
    start = time.perf_counter()
    for first in range(0, num_places, PLACES_PER_BLOCK):
        count = min(PLACES_PER_BLOCK, num_places - first)
        centres = _places(first, count, d, seed, spectrum)
        noise = _noise(np.random.default_rng([seed, 2, first]), count * VIEWS, d, spectrum)
        views = _normalize(np.repeat(centres, VIEWS, axis=0) + VIEW_NOISE * noise)
        write_rows(paths["all"], first * VIEWS, views[: n - first * VIEWS], sync=False)
    centres = np.concatenate([_places(int(p), 1, d, seed, spectrum) for p in places])
    write_rows(paths["all"], n, _normalize(centres + QUERY_NOISE * _noise(rng, len(places), d, spectrum)))
    np.save(paths["places"], places)
    marker.write_text(json.dumps(meta))
    print(f"generated {n:,} x {d} {dtype} descriptors in {folder} in {time.perf_counter() - start:.0f} s", flush=True)
    return paths


def split(folder: Path) -> tuple[NpyRows, np.ndarray, np.ndarray]:
    """(database rows on disk, queries in memory, query places) of a generated set."""
    places = np.load(folder / "query_places.npy")
    rows = NpyRows(folder / "descriptors.npy")
    n = len(rows) - len(places)
    return rows.take(np.arange(n)), np.asarray(rows.read(n, len(rows)), dtype=np.float32), places


def ground_truth(places: np.ndarray, n: int) -> list[np.ndarray]:
    """Per query, the database views of its place."""
    return [np.arange(p * VIEWS, min(n, (p + 1) * VIEWS)) for p in places]


def rss_mb() -> float:
    """Current resident memory of this process (MB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> str:
    """'load 0.42, 12.3 GB available': the machine's state when a figure was taken."""
    one = os.getloadavg()[0]
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 1e6
    return f"load {one:.2f}, {available:.1f} GB available"


def child(args) -> None:
    """One index, in this process: build, save (disk size), search; print one JSON line of figures."""
    import faiss

    from utils.recall import recall_at_k
    from utils.search import FaissIndex, Searcher, recall_of_neighbours

    folder = Path(args.folder)
    db, queries, places = split(folder)
    true = np.load(folder / "true.npy")
    gt = ground_truth(places, len(db))
    before = rss_mb()
    searcher = Searcher(args.index, params=args.params or None, memory_budget=args.budget, train_size=args.train_size)
    start = time.perf_counter()
    index = searcher.build(db)
    built = time.perf_counter() - start
    resident = peak_rss_mb() - before
    if isinstance(index, FaissIndex):
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            disk = sum(p.stat().st_size for p in index.save(Path(tmp) / "index.faiss"))
    else:
        disk = len(db) * db.shape[1] * db.dtype.itemsize
    start = time.perf_counter()
    _, found = index.search(queries, 10)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "index": args.index, "params": args.params, "n": len(db), "d": db.shape[1], "dtype": str(db.dtype),
        "build_s": round(built, 2), "train_s": index.stats.get("seconds_train", 0.0),
        "train_rows": index.stats.get("train_rows", 0), "resident_mb": round(max(resident, peak_rss_mb() - before), 1),
        "disk_mb": round(disk / 1e6, 1), "qps": round(len(queries) / seconds, 1),
        "knn_recall": recall_of_neighbours(found, true), "place_recall": recall_at_k(found, gt, len(db), (1, 5, 10)),
        "threads": faiss.omp_get_max_threads(), "machine": load()}))


def exact_truth(folder: Path, budget: str) -> np.ndarray:
    """The exact 10 nearest neighbours of the queries (sharded exact search), cached as ``true.npy``."""
    from utils.search import Searcher

    path = folder / "true.npy"
    if not path.is_file():
        start = time.perf_counter()
        db, queries, _ = split(folder)
        _, true = Searcher(memory_budget=budget).search(db, queries, 10)
        np.save(path, true)
        print(f"exact neighbours in {time.perf_counter() - start:.0f} s ({load()})", flush=True)
    return np.load(path)


def indexes(args) -> list[dict]:
    """The index table: every (n, d) x index, each in its own process."""
    rows = []
    params = args.params or [""] * len(args.indexes)
    if len(params) != len(args.indexes):
        raise SystemExit("--params: one entry per --indexes entry ('' for none)")
    for n in args.n:
        for d in args.d:
            folder = Path(args.work) / f"n{n}-d{d}-{args.dtype}-s{args.seed}"
            generate(folder, n, d, args.seed, args.dtype)
            exact_truth(folder, args.budget)
            for index, param in zip(args.indexes, params):
                command = [sys.executable, __file__, "child", str(folder), index, "--params", param,
                           "--budget", args.budget] + (["--train_size", str(args.train_size)] if args.train_size else [])
                proc = subprocess.run(command, capture_output=True, text=True)
                if proc.returncode:
                    print(f"{index} on {n:,} x {d}: failed: {proc.stderr.strip().splitlines()[-1]}", flush=True)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(table([row], header=not rows[:-1]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(table(rows) + "\n")
    return rows


def table(rows: list[dict], header: bool = True) -> str:
    lines = ["| N x d (stored) | index | params | build s (train s, rows) | resident MB | disk MB | QPS | "
             "kNN R@1 / R@5 / R@10 | place R@1 / R@5 / R@10 | machine |",
             "|---|---|---|--:|--:|--:|--:|---|---|---|"] if header else []
    for r in rows:
        knn = " / ".join(f"{100 * r['knn_recall'][k]:.1f}" for k in ("1", "5", "10"))
        place = " / ".join(f"{100 * r['place_recall'][k]:.1f}" for k in ("1", "5", "10"))
        lines.append(f"| {r['n']:,} x {r['d']} ({r['dtype']}) | {r['index']} | {r['params'] or '-'} | {r['build_s']:.1f} "
                     f"({r['train_s']:.1f}, {r['train_rows']:,}) | {r['resident_mb']:,.0f} | {r['disk_mb']:,.0f} | "
                     f"{r['qps']:,.0f} | {knn} | {place} | {r['machine']}, {r['threads']} threads |")
    return "\n".join(lines)


class GeneratedSet:
    """What ``evaluation_recalls`` reads of a benchmark, for a generated set: counts and ground truth."""

    def __init__(self, n: int, places: np.ndarray):
        self.name, self.num_references, self.num_queries = "generated", n, len(places)
        self.ground_truth = ground_truth(places, n)

    def __len__(self) -> int:
        return self.num_references + self.num_queries


def exact(args) -> None:
    """Peak resident memory of an exact evaluation (recall@1..100 of all queries over descriptors on disk,
    ``models.evaluation.evaluation_recalls``) at ``--budget``, in this process."""
    from models.evaluation import evaluation_recalls
    from utils.search import Searcher

    n, d = args.n[0], args.d[0]
    folder = Path(args.work) / f"n{n}-d{d}-{args.dtype}-s{args.seed}"
    # generated in another process: this one's peak memory is the evaluation's alone
    subprocess.run([sys.executable, __file__, "generate", "--n", str(n), "--d", str(d), "--dtype", args.dtype,
                    "--seed", str(args.seed), "--work", args.work], check=True)
    paths = generate(folder, n, d, args.seed, args.dtype)
    dataset = GeneratedSet(n, np.load(paths["places"]))
    print(f"exact evaluation of {dataset.num_queries:,} queries against {n:,} x {d} {args.dtype} descriptors on disk, "
          f"memory budget {args.budget} ({load()}); resident before: {rss_mb():.0f} MB", flush=True)
    base = peak_rss_mb()
    stats = {}
    start = time.perf_counter()
    recalls, _, _ = evaluation_recalls(NpyRows(paths["all"]), dataset, (1, 5, 10, 100), searcher=Searcher(memory_budget=args.budget),
                                       stats=stats)
    seconds = time.perf_counter() - start
    print(f"| N x d (stored) | memory budget | shards | peak resident MB (process) | before MB | seconds | R@1 / R@5 / "
          f"R@10 / R@100 | machine |\n|---|--:|--:|--:|--:|--:|---|---|\n"
          f"| {n:,} x {d} ({args.dtype}) | {args.budget} | {stats.get('shards')} | {peak_rss_mb():,.0f} | {base:,.0f} | "
          f"{seconds:.0f} | {' / '.join(f'{100 * v:.1f}' for v in recalls.values())} | {load()} |", flush=True)


def place(args) -> None:
    """eval.py on the synthetic sets with a trained model, once per index (descriptors cached once)."""
    params = args.params or [""] * len(args.indexes)
    out = Path(args.work) / "place"
    lines = ["| index | params | " + " | ".join(f"{b} R@1 / R@5 / R@10" for b in args.benchmarks) + " |",
             "|---|---|" + "---|" * len(args.benchmarks)]
    for index, param in zip(args.indexes, params):
        run_dir = out / "".join(c if c.isalnum() else "_" for c in f"{index}-{param}")
        subprocess.run([sys.executable, str(REPO / "eval.py"), "--checkpoint", args.checkpoint, "--benchmarks",
                        json.dumps(args.benchmarks), "--data.synthetic", "true", "--names", "[m]", "--out_dir",
                        str(run_dir), "--progress", "false", "--cache_dir", str(out / "descriptors"),
                        "--search.index", index, "--search.params", param or "null", "--k", "[1, 5, 10]"],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        latest = max(run_dir.glob("version_*/recalls.json"), key=lambda p: int(p.parent.name.split("_")[1]))
        results = json.loads(latest.read_text())["models"]["m"]["benchmarks"]
        cells = [" / ".join(f"{100 * r['recall'][k]:.1f}" for k in ("1", "5", "10")) for r in results.values()]
        lines.append(f"| {index} | {param or '-'} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("indexes", "exact", "place", "generate"):
        p = sub.add_parser(name)
        p.add_argument("--n", type=int, nargs="+", default=[100_000])
        p.add_argument("--d", type=int, nargs="+", default=[512])
        p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--work", default=str(REPO / "LOGS" / "bench" / "search_scale"), help="generated sets")
        p.add_argument("--budget", default="4GB", help="memory budget of exact search")
        p.add_argument("--indexes", nargs="+", default=["Flat", "SQfp16", "PCAR128,Flat", "IVF1024,PQ64",
                                                         "IVF1024,PQ64,RFlat", "HNSW32", "BFlat", "BIVF1024"])
        p.add_argument("--params", nargs="+", default=None, help="per index (e.g. nprobe=16; '' for none)")
        p.add_argument("--train_size", type=int, default=None)
        p.add_argument("--out", default=None, help="append the Markdown table to this file")
        p.add_argument("--checkpoint", default=None, help="place: a trained model")
        p.add_argument("--benchmarks", nargs="+", default=["pitts30k_test", "msls_val"], help="place: synthetic sets")
    p = sub.add_parser("child")
    p.add_argument("folder")
    p.add_argument("index")
    p.add_argument("--params", default="")
    p.add_argument("--budget", default="4GB")
    p.add_argument("--train_size", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "generate":
        for n in args.n:
            for d in args.d:
                generate(Path(args.work) / f"n{n}-d{d}-{args.dtype}-s{args.seed}", n, d, args.seed, args.dtype)
        return
    {"indexes": indexes, "exact": exact, "place": place, "child": child}[args.command](args)


if __name__ == "__main__":
    main()
