"""The evaluation-set contract shared by all benchmarks: database first, then queries, and the protocol
record that says which positives were used and where they came from."""
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.spatial import cKDTree

from utils.errors import DataError

from ..image_list import ImageList


@dataclass(frozen=True)
class Protocol:
    """How a benchmark's positives were decided and how it is scored, read from what was used (written into
    recalls.md/json).

    positives: the rule as text, naming its source ('database images within 25 m (posDistThr of <file>)').
    source: the file or folder the ground truth came from.
    threshold_m: the distance threshold in metres where the rule is one (None: positives listed by the data).
    benchmark, title, citation, protocol: the named benchmark the set was opened as (``registry.Benchmark``):
        its name, the title tables show, where it is published and its pinned protocol in words; empty for
        a ``folder:<root>`` set.
    expected_counts: the (database, queries) counts the benchmark pins (None: none published, or not a named
        benchmark); counts_checked: whether the set's counts were checked against them (``check_counts``).
    synthetic: the set is one of the generator's stand-ins (its counts are the stand-in's own).
    scoring: 'recall' (recall@K against the positives) or 'predictions' (no public labels: predictions only,
        e.g. the MSLS challenge, whose server scores them).
    """

    positives: str
    source: str = ""
    threshold_m: Optional[float] = None
    benchmark: str = ""
    title: str = ""
    citation: str = ""
    protocol: str = ""
    expected_counts: Optional[tuple[Optional[int], Optional[int]]] = None
    counts_checked: bool = False
    synthetic: bool = False
    scoring: str = "recall"


class EvalDataset(ImageList):
    """Database images then query images, never shuffled.

    ``ground_truth[i]`` holds the database indices that are positives of query i; items are
    ``(image, index, readable)`` (see ``ImageList``: the decoded uint8 image through ``transform``, or with
    ``encoded`` the file's bytes) so descriptors can be put back in order after distribution. ``utm``:
    (east, north) metres of every image (database then queries) where the set records them (Pittsburgh,
    folder sets), else None; pictures show distances with it. ``protocol``: how the positives were decided
    (``Protocol``; default: 'the given ground truth').
    """

    def __init__(self, name: str, db_paths: Sequence[Path], q_paths: Sequence[Path],
                 ground_truth: Sequence[np.ndarray], transform: Optional[Callable] = None,
                 skip_unreadable: bool = False, image_size: Optional[Sequence[int]] = None,
                 utm: Optional[np.ndarray] = None, encoded: bool = False, protocol: Optional[Protocol] = None):
        if len(ground_truth) != len(q_paths):
            raise DataError(f"{name}: {len(q_paths)} queries but ground truth for {len(ground_truth)}")
        if utm is not None and len(utm) != len(db_paths) + len(q_paths):
            raise DataError(f"{name}: {len(utm)} coordinates for {len(db_paths) + len(q_paths)} images")
        self.utm = None if utm is None else np.asarray(utm, dtype=np.float64)
        super().__init__([*db_paths, *q_paths], transform, skip_unreadable, image_size, encoded)
        self.name = name
        self.num_references = len(db_paths)
        self.num_queries = len(q_paths)
        self.ground_truth = list(ground_truth)
        self.positive_rule = protocol or Protocol("the given ground truth")

    @property
    def labelled(self) -> bool:
        """Whether the set has positives to score recall against (False: predictions only, e.g. the MSLS
        challenge, whose labels are not public)."""
        return self.positive_rule.scoring == "recall"

    @property
    def protocol(self) -> dict:
        """The protocol record of this set as evaluated: the positive rule, its source and threshold, and the
        numbers of database images and queries."""
        record = asdict(self.positive_rule)
        if record["expected_counts"] is not None:
            record["expected_counts"] = list(record["expected_counts"])
        return {**record, "num_references": self.num_references, "num_queries": self.num_queries}

    @property
    def database_paths(self) -> list[str]:
        """Paths of the database images, in index order."""
        return self.images[: self.num_references]

    @property
    def query_paths(self) -> list[str]:
        """Paths of the query images, in query order."""
        return self.images[self.num_references:]

    def without(self, indices: Sequence[int]) -> "EvalDataset":
        """This set without the images at ``indices`` (database first, then queries), e.g. unreadable ones:
        a database image leaves the database (ground-truth indices are renumbered; a query whose only
        positives left keeps counting, as a miss), a query leaves the evaluation."""
        indices = np.asarray(indices, dtype=np.int64)
        keep = np.ones(len(self), dtype=bool)
        keep[indices] = False
        keep_db, keep_q = keep[: self.num_references], keep[self.num_references:]
        renumber = np.cumsum(keep_db) - 1
        gt = [renumber[p[keep_db[p]]] for p, kept in zip(self.ground_truth, keep_q) if kept]
        db = [p for p, k in zip(self.database_paths, keep_db) if k]
        queries = [p for p, k in zip(self.query_paths, keep_q) if k]
        utm = self.utm[keep] if self.utm is not None else None
        return EvalDataset(self.name, db, queries, gt, self.transform, self.skip_unreadable, self.image_size,
                           utm=utm, encoded=self.encoded, protocol=self.positive_rule)


def check_set(name: str, db_paths: Sequence, q_paths: Sequence, ground_truth: Sequence[np.ndarray],
              source: str, fix: str) -> None:
    """DataError for a set that cannot give a meaningful recall: the same path twice in the database (or in
    the queries), or no query with any positive (every query a miss: R@K = 0 % whatever the model).
    ``source`` names where the ground truth came from, ``fix`` says what to do."""
    for part, paths in (("database", db_paths), ("queries", q_paths)):
        seen: set = set()
        for path in map(str, paths):
            if path in seen:
                count = sum(str(p) == path for p in paths)
                raise DataError(f"{name}: {path} is listed {count} times in the {part} of {source}: each image "
                                f"must appear once (a duplicate counts twice in the recall). {fix}")
            seen.add(path)
    if len(ground_truth) and not any(len(g) for g in ground_truth):
        raise DataError(f"{name}: none of the {len(ground_truth)} queries has a positive in {source}: every "
                        f"recall would be 0 %. {fix}")


# a query whose positives are more than this share of the database: the coordinates are not metres
MOST_OF_THE_DATABASE = 0.5


def check_positives(name: str, ground_truth: Sequence[np.ndarray], num_references: int, radius: float,
                    source: str) -> None:
    """Stop when most queries have most of the database as positives: every retrieval would be a hit (R@1
    = 100 %). That happens when the coordinates are not metres (latitude/longitude degrees: a whole city
    lies within 25 "metres") or the radius is far too large. ``source`` names where the coordinates come from."""
    if num_references < 2 or not len(ground_truth):
        return
    share = np.fromiter((len(g) for g in ground_truth), dtype=np.float64, count=len(ground_truth)) / num_references
    degenerate = share > MOST_OF_THE_DATABASE
    if degenerate.mean() > 0.5:
        raise DataError(
            f"{name}: {int(degenerate.sum())} of {len(ground_truth)} queries have more than half of the "
            f"{num_references} database images within {radius:g} m (median {np.median(share):.0%}): every "
            f"retrieval would count as correct. The coordinates of {source} are probably not UTM metres "
            f"(latitude/longitude degrees?) or the positive radius is too large. Give easting/northing in metres "
            f"(the generic format is @UTM_east@UTM_north@UTM_zone_number@UTM_zone_letter@latitude@longitude@...), "
            f"or a smaller --data.pos_radius.")


def positives_within(db_xy: np.ndarray, q_xy: np.ndarray, radius: float) -> np.ndarray:
    """Object array: for each query (M, 2) the database indices (of (N, 2)) within ``radius`` metres
    (inclusive), nearest first (ties by index)."""
    db_xy, q_xy = np.asarray(db_xy, dtype=np.float64), np.asarray(q_xy, dtype=np.float64)
    found = cKDTree(db_xy).query_ball_point(q_xy, r=radius)
    counts = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
    flat = np.fromiter((i for row in found for i in row), dtype=np.int64, count=int(counts.sum()))
    query = np.repeat(np.arange(len(found)), counts)
    distance = np.linalg.norm(db_xy[flat] - q_xy[query], axis=1)
    order = np.lexsort((flat, distance, query))
    out = np.empty(len(found), dtype=object)
    # element by element: a list of equal-length arrays would be broadcast as one 2-D array
    for i, positives in enumerate(np.split(flat[order], np.cumsum(counts)[:-1]) if len(found) else []):
        out[i] = positives
    return out
