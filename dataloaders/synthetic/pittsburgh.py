"""Pittsburgh-format evaluation splits: NetVLAD's ``datasets/<split>.mat`` dbStruct and the images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import json

from utils.files import atomic_write_text

from .formats import write_mat
from .render import IMAGE_SIZE, plan_view, render_views
from .world import STREET_SPACING_M, make_streets, route_positions, seeded_rng

# split -> (database size, query count) of the default scale
DEFAULT_SPLITS = {"pitts30k_val": (800, 240), "pitts30k_test": (400, 120),
                  "pitts250k_val": (300, 100), "pitts250k_test": (400, 120)}
PITTSBURGH_SPLITS = tuple(DEFAULT_SPLITS)
_UTM_ORIGIN = (584000.0, 4476000.0)


def _db_struct(which_set: str, db_fns: list[str], utm_db: np.ndarray, q_fns: list[str],
               utm_q: np.ndarray) -> np.ndarray:
    """A (1, 1) struct array that ``loadmat`` reads back as NetVLAD's dbStruct, fields in its order.

    ``utm_db`` (N, 2) and ``utm_q`` (M, 2) are (east, north) metres; the struct holds them as 2 x N.
    """
    fields = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages", "numQueries",
              "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")
    struct = np.empty((1, 1), dtype=[(f, object) for f in fields])
    cell = lambda names: np.array(names, dtype=object).reshape(-1, 1)
    values = (which_set, cell(db_fns), utm_db.T.astype(np.float64), cell(q_fns), utm_q.T.astype(np.float64),
              float(len(db_fns)), float(len(q_fns)), 25.0, 625.0, 100.0)
    for f, val in zip(fields, values):
        struct[0, 0][f] = val
    return struct


def make_pittsburgh(root: str | Path, splits: dict[str, tuple[int, int]] | None = None, seed: int = 0,
                    image_size: tuple[int, int] = IMAGE_SIZE, workers: int | None = None) -> Path:
    """Write Pittsburgh-format splits under ``root``: ``datasets/<name>.mat`` and the images.

    ``splits`` maps split name -> (database size, query count); default: ``DEFAULT_SPLITS``.
    Each split is its own synthetic city (6 streets or fewer). Database views every ~9 m along the
    streets (mild conditions), paths ``000/000123_pitch1_yaw1.jpg`` relative to ``root``; queries at
    random positions (strong conditions, a few beyond the database's end, without positives), paths
    relative to ``root/queries_real``. Image numbers are unique across splits. ``workers``: rendering
    processes, as for ``make_gsv_cities``. Returns ``root``.
    """
    root = Path(root)
    splits = DEFAULT_SPLITS if splits is None else splits
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    next_db, next_q = 0, 0
    views = []
    for name, (n_db, n_q) in splits.items():
        rng = seeded_rng(seed, "pitts", name)
        n_streets = min(6, max(1, n_db // 40))
        db_street, db_x, q_street, q_x, length = route_positions(rng, n_db, n_q, n_streets, spacing=9.0)
        facades = make_streets(seed, f"pitts/{name}", n_streets, length)
        e0, n0 = _UTM_ORIGIN
        utm = lambda street, x: np.stack([e0 + x, n0 + street * STREET_SPACING_M], axis=1)
        db_fns, q_fns = [], []
        for i in range(n_db):
            vrng = seeded_rng(seed, "pitts", name, "db", i)
            yaw_idx = int(vrng.integers(1, 13))
            fn = f"{next_db // 1000:03d}/{next_db:06d}_pitch1_yaw{yaw_idx}.jpg"
            views.append(plan_view(root / fn, facades[db_street[i]], db_x[i], vrng.normal(0, 2.0), "db", vrng,
                                   image_size))
            db_fns.append(fn)
            next_db += 1
        for i in range(n_q):
            vrng = seeded_rng(seed, "pitts", name, "q", i)
            yaw_idx = int(vrng.integers(1, 13))
            fn = f"{next_q // 1000:03d}/{next_q:06d}_pitch1_yaw{yaw_idx}.jpg"
            views.append(plan_view(root / "queries_real" / fn, facades[q_street[i]], q_x[i], vrng.normal(0, 4.0),
                                   "query", vrng, image_size))
            q_fns.append(fn)
            next_q += 1
        which = "val" if name.endswith("_val") else "test"
        struct = _db_struct(which, db_fns, utm(db_street, db_x), q_fns, utm(q_street, q_x))
        write_mat(root / "datasets" / f"{name}.mat", {"dbStruct": struct})
    # the stand-in's own counts, which the loaders check instead of the published ones
    atomic_write_text(root / "synthetic_standin.json", json.dumps(
        {"generator": "dataloaders.synthetic", "counts": {name: list(size) for name, size in splits.items()}}, indent=1))
    render_views(views, workers)
    return root
