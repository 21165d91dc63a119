"""Recall@K at Pittsburgh-250k scale: is the time the faiss search's, or ours?

    python bench/recall_speed.py               # 83,952 database x 8,280 queries x 4,096 dims (about 1.5 GB)
    python bench/recall_speed.py --scale 0.25  # a quarter of the database and queries, for a quick look

Given the descriptors, the evaluation computes recall through ``VPRModel.evaluate_descriptors`` ->
``models.evaluation.evaluation_recalls`` (faiss exact search for the largest K, 100, then counting hits).
This times that whole path and, within the same call, the time spent inside faiss (``faiss.knn``, the
exact search of ``utils.search``), on random L2-normalised descriptors with a ground truth of 5-50 random
positives per query (Pittsburgh has tens per query); the difference is our share. Measuring both in
one call keeps the share honest on a busy machine; absolute times are only comparable on an idle one.
"""
import argparse
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.vpr_model import VPRModel  # noqa: E402
from utils.recall import DEFAULT_K, recall_at_k  # noqa: E402
from utils.search import Searcher  # noqa: E402

PITTS250K_TEST = (83_952, 8_280)  # database images, queries
DIM = 4096


def random_descriptors(rng: np.random.Generator, n: int, dim: int, chunk: int = 8192) -> np.ndarray:
    """(n, dim) float32 rows of unit L2 norm, drawn in chunks to keep the peak memory at the array's size."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + len(block)] = block
    return out


def random_ground_truth(rng: np.random.Generator, num_queries: int, num_references: int,
                        low: int = 5, high: int = 50) -> list[np.ndarray]:
    """Per query, ``low``..``high`` distinct random database indices (sorted)."""
    counts = rng.integers(low, high + 1, num_queries)
    return [np.sort(rng.choice(num_references, c, replace=False)) for c in counts]


class TimedKnn:
    """faiss.knn (what exact search calls per shard: ``utils.search``) that adds the seconds spent in it to
    ``seconds`` and keeps the last predictions; put in place of faiss.knn while the evaluation runs."""

    original = faiss.knn
    seconds = 0.0
    predictions = None

    @classmethod
    def knn(cls, xq, xb, k, *args, **kwargs):
        start = time.perf_counter()
        distances, cls.predictions = cls.original(xq, xb, k, *args, **kwargs)
        cls.seconds += time.perf_counter() - start
        return distances, cls.predictions


class RandomSet(SimpleNamespace):
    """What the evaluation reads of a benchmark: name, counts, ground truth (database first, then queries)."""

    def __len__(self) -> int:
        return self.num_references + len(self.ground_truth)


def timed_evaluation(descriptors: np.ndarray, dataset, k_values) -> tuple[float, float, dict, np.ndarray]:
    """(whole seconds, seconds inside faiss, recalls, predictions) of one evaluation of ``descriptors``,
    through the path eval.py and validation take: VPRModel.evaluate_descriptors."""
    model = SimpleNamespace(hparams=SimpleNamespace(recall_k=k_values, faiss_gpu=False),
                            evaluation_searcher=Searcher)
    TimedKnn.seconds = 0.0
    faiss.knn = TimedKnn.knn
    try:
        start = time.perf_counter()
        recalls = VPRModel.evaluate_descriptors(model, descriptors, dataset)
        total = time.perf_counter() - start
    finally:
        faiss.knn = TimedKnn.original
    return total, TimedKnn.seconds, recalls, TimedKnn.predictions


def main(argv=None) -> dict:
    """Run the benchmark and print a Markdown summary; returns the figures of the fastest repetition."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of Pitts250k-test's database and queries")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--repeats", type=int, default=1, help="evaluations timed; the fastest is reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    num_references, num_queries = (max(200, int(round(n * args.scale))) for n in PITTS250K_TEST)
    k_values = list(DEFAULT_K)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    descriptors = random_descriptors(rng, num_references + num_queries, args.dim)
    gt = random_ground_truth(rng, num_queries, num_references)
    print(f"{num_references} x {num_queries} x {args.dim} descriptors ({descriptors.nbytes / 2**30:.2f} GiB) and "
          f"ground truth ({sum(map(len, gt))} positives) drawn in {time.perf_counter() - start:.1f} s; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {platform.processor() or platform.machine()}")
    dataset = RandomSet(name="pitts250k_test (random)", num_references=num_references, num_queries=num_queries,
                        ground_truth=gt)
    runs = []
    for _ in range(args.repeats):
        total_s, faiss_s, recalls, predictions = timed_evaluation(descriptors, dataset, k_values)
        print(f"evaluate_descriptors: {total_s:.2f} s, of which inside faiss (knn): {faiss_s:.2f} s")
        runs.append((total_s, faiss_s))
    total_s, faiss_s = min(runs)
    # the counting of hits alone, on the predictions of the search
    start = time.perf_counter()
    counted = recall_at_k(predictions, gt, num_references, k_values)
    hits_s = time.perf_counter() - start
    assert counted == recalls, "hit counting on the captured predictions disagrees with the evaluation"
    figures = {"num_references": num_references, "num_queries": num_queries, "dim": args.dim, "total_s": total_s,
               "faiss_s": faiss_s, "hits_s": hits_s, "share_outside": (total_s - faiss_s) / total_s}
    print()
    print("| database x queries x dim | whole recall (s) | inside faiss (s) | outside faiss (s) | share outside "
          "| hit counting alone (s) |")
    print("|---|--:|--:|--:|--:|--:|")
    print(f"| {num_references:,} x {num_queries:,} x {args.dim:,} | {total_s:.2f} | {faiss_s:.2f} | "
          f"{total_s - faiss_s:.2f} | {100 * figures['share_outside']:.2f} % | {hits_s:.3f} |")
    return figures


if __name__ == "__main__":
    main()
