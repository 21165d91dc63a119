"""Wall-clock timing for the benchmarks: the least disturbed of several runs."""
import time
from typing import Callable


def best_seconds(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Shortest wall time of ``fn()`` over ``reps`` runs after ``warmup`` runs: the least disturbed run
    (as ``timeit`` recommends; other processes only ever add time)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, reps)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
