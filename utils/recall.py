"""Recall@K of place recognition: nearest neighbours with faiss (``utils.search``), hits counted without a loop."""
from dataclasses import replace
from typing import Sequence

import numpy as np

from .errors import ConfigError

DEFAULT_K = (1, 5, 10, 15, 20, 50, 100)


def check_k(k_values: Sequence[int], setting: str) -> list[int]:
    """``k_values`` as a list of ints, or a ConfigError naming ``setting`` when one is not a positive integer."""
    k_values = list(k_values)
    wrong = [k for k in k_values if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if wrong or not k_values:
        raise ConfigError(f"{setting}: the K of recall@K must be positive integers, got {k_values}; "
                          f"e.g. [1, 5, 10]")
    return [int(k) for k in k_values]


def check_faiss_gpu(setting: str = "faiss_gpu=True") -> None:
    """ConfigError unless faiss can search on a GPU (a faiss-gpu build that sees one); ``setting`` names the
    flag in the message. Commands call it before they write anything."""
    import faiss

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return
    build = "sees no GPU" if hasattr(faiss, "StandardGpuResources") else "is a CPU-only build (faiss-cpu)"
    raise ConfigError(f"{setting}: this faiss {build}, so it cannot search on a GPU; drop the flag (exact search on "
                      f"the CPU gives the same recall) or install faiss-gpu on a machine with a GPU")


def search_nearest(r_list: np.ndarray, q_list: np.ndarray, k: int, faiss_gpu: bool = False,
                   return_distances: bool = False, searcher=None):
    """Indices (num_queries, k) of the k nearest references of each query (by default exact L2 search).

    On L2-normalised descriptors L2 order equals cosine order; ties are ordered by reference index.
    ``searcher`` (``utils.search.Searcher``; default: exact search in one shard, one faiss IndexFlatL2
    search) says how; ``faiss_gpu`` uses a GPU when faiss has GPU support, and says so when it does not.
    ``return_distances``: return ``(squared L2 distances, indices)``, both (num_queries, k).
    """
    from .search import Searcher  # faiss is imported when searching: recall tables and hit counting do not need it

    if searcher is None:
        searcher = Searcher(faiss_gpu=faiss_gpu)
    elif faiss_gpu and not searcher.faiss_gpu:
        searcher = replace(searcher, faiss_gpu=True)
    distances, predictions = searcher.search(r_list, q_list, k)
    return (distances, predictions) if return_distances else predictions


def hit_matrix(predictions: np.ndarray, gt: Sequence[np.ndarray], num_references: int) -> np.ndarray:
    """Boolean (num_queries, k): whether prediction j of query i is one of its positives."""
    counts = np.fromiter((len(p) for p in gt), dtype=np.int64, count=len(gt))
    positives = np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in gt]) if counts.sum() else np.zeros(0, np.int64)
    # one integer key per (query, reference) pair turns the per-query membership test into one np.isin
    pos_keys = np.repeat(np.arange(len(gt), dtype=np.int64), counts) * num_references + positives
    pred_keys = np.arange(len(gt), dtype=np.int64)[:, None] * num_references + predictions
    return np.isin(pred_keys, pos_keys) & (predictions >= 0)


def recall_at_k(predictions: np.ndarray, gt: Sequence[np.ndarray], num_references: int,
                k_values: Sequence[int] = DEFAULT_K) -> dict[int, float]:
    """{k: fraction of queries with a positive among their first k predictions}.

    Queries without positives stay in the denominator (they are misses).
    """
    if len(gt) != len(predictions):
        raise ValueError(f"{len(predictions)} queries predicted but ground truth has {len(gt)} entries")
    hits = np.logical_or.accumulate(hit_matrix(predictions, gt, num_references), axis=1)
    return {k: float(hits[:, min(k, hits.shape[1]) - 1].mean()) for k in k_values}


def format_recall_table(recalls: dict[int, float], dataset_name: str = "") -> str:
    """A two-row text table: K, then recall@K in percent with two decimals."""
    ks = [f"R@{k}" for k in recalls]
    vals = [f"{100 * v:.2f}" for v in recalls.values()]
    widths = [max(len(a), len(b)) for a, b in zip(ks, vals)]
    title = f"Recall@K (%) on {dataset_name}" if dataset_name else "Recall@K (%)"
    row = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
    rule = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    return "\n".join([title, rule, row(ks), rule, row(vals), rule])


def get_validation_recalls(r_list, q_list, k_values, gt, print_results=True, faiss_gpu=False,
                           dataset_name="dataset without name ?", searcher=None) -> dict[int, float]:
    """Recall@K of queries ``q_list`` against references ``r_list``; ``gt[i]`` holds the positive
    reference indices of query i. Returns ``{k: fraction}``, optionally printing the table.
    ``searcher`` (``utils.search.Searcher``, default exact): how the references are searched; ``r_list``
    may be an array on disk (``utils.npy_rows.NpyRows``), searched shard by shard within its memory budget."""
    k_values = list(k_values)
    k_max = min(max(k_values), len(r_list))
    predictions = search_nearest(r_list, q_list, k_max, faiss_gpu=faiss_gpu, searcher=searcher)
    recalls = recall_at_k(predictions, gt, len(r_list), k_values)
    if print_results:
        print("\n" + format_recall_table(recalls, dataset_name) + "\n")
    return recalls
