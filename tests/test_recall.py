"""Recall@K: hand-made cases, agreement with a per-query loop, and the compatible entry point."""
import numpy as np
import pytest

from utils import get_validation_recalls
from utils.recall import recall_at_k


def test_recall_counts_query_without_positive_as_miss():
    predictions = np.array([[0, 1, 2], [2, 1, 0], [1, 2, 0]])
    gt = [np.array([0]), np.array([1]), np.array([], dtype=np.int64)]
    recalls = recall_at_k(predictions, gt, num_references=3, k_values=[1, 2, 3])
    assert recalls == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3)}


def test_recall_matches_a_per_query_loop():
    rng = np.random.default_rng(0)
    num_db, num_q, k = 50, 40, 10
    predictions = np.stack([rng.permutation(num_db)[:k] for _ in range(num_q)])
    gt = [rng.choice(num_db, size=rng.integers(0, 4), replace=False) for _ in range(num_q)]
    expected = {kk: np.mean([np.isin(predictions[q, :kk], gt[q]).any() for q in range(num_q)]) for kk in (1, 5, 10)}
    assert recall_at_k(predictions, gt, num_db, (1, 5, 10)) == pytest.approx(expected)


def test_get_validation_recalls_searches_exact_neighbours(capsys):
    rng = np.random.default_rng(1)
    db = rng.normal(size=(20, 8)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = db[[3, 7, 11]] + 0.01 * rng.normal(size=(3, 8)).astype(np.float32)
    gt = [np.array([3]), np.array([8]), np.array([11, 12])]  # query 1's true match (7) is not a positive
    recalls = get_validation_recalls(db, queries, [1, 5, 100], gt, print_results=True, dataset_name="toy")
    assert recalls[1] == pytest.approx(2 / 3)
    assert recalls[100] == pytest.approx(1.0)  # K beyond the database size means the whole database
    printed = capsys.readouterr().out
    assert "toy" in printed and "R@1" in printed and "66.67" in printed
