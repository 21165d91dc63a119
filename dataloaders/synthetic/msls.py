"""An MSLS-format set: MSLS-val (per-city images and CSVs under ``train_val/``, ground truth in ``msls_val_*.npy``)
and MSLS-test (images under ``test/``, the SALAD authors' ``msls_test_{dbImages,qImages}.npy`` image lists)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.spatial import KDTree

import json

from utils.files import atomic_write_text

from .formats import write_csv, write_npy
from .render import IMAGE_SIZE, plan_view, render_views
from .world import METRES_PER_DEG, STREET_SPACING_M, make_streets, random_key, route_positions, seeded_rng

MSLS_CITIES = ("cph", "sf")
MSLS_TEST_CITIES = ("miami", "kampala")
# city -> (UTM origin (east, north), lat/lon origin); another city name gets a default one
_ORIGINS = {"cph": ((724000.0, 6175000.0), (55.6761, 12.5683)),
            "sf": ((551000.0, 4180000.0), (37.7749, -122.4194))}


def _positives_within(db_utm: np.ndarray, q_utm: np.ndarray, radius: float = 25.0) -> list[np.ndarray]:
    """Per query, the sorted indices of database views within ``radius`` metres ((N, 2) and (M, 2) utm)."""
    # a k-d tree: memory and time grow with N + M and the positives found, not N * M
    found = KDTree(db_utm).query_ball_point(q_utm, radius, return_sorted=True)
    return [np.array(i, dtype=np.int64) for i in found]


def make_msls(root: str | Path, cities: Sequence[str] = MSLS_CITIES, db_per_city: int = 250, q_per_city: int = 60,
              seed: int = 0, image_size: tuple[int, int] = IMAGE_SIZE, workers: int | None = None) -> Path:
    """Write an MSLS-val-format set under ``root`` (the MSLS root).

    Images: ``train_val/<city>/{database,query}/images/<key>.jpg``, with per-folder ``postprocessed.csv``
    (key, easting, northing, night, view_direction) and ``raw.csv`` (key, lon, lat, ca, captured_at, pano).
    Ground truth, as MixVPR's evaluation reads it: ``msls_val_dbImages.npy`` (every city's database, merged),
    ``msls_val_qImages.npy`` (every query), ``msls_val_qIdx.npy`` (the queries with a positive) and
    ``msls_val_pIdx.npy`` (object array: database indices within 25 m, one array per ``qIdx`` entry).
    A few queries per city have no positive and are left out of ``qIdx``. ``workers``: rendering processes,
    as for ``make_gsv_cities``. Returns ``root``.
    """
    root = Path(root)
    db_images, q_images, db_utm, q_utm, db_city, q_city = [], [], [], [], [], []
    views = []
    for c, city in enumerate(cities):
        rng = seeded_rng(seed, "msls", city)
        n_streets = min(4, max(1, db_per_city // 40))
        db_street, db_x, q_street, q_x, length = route_positions(rng, db_per_city, q_per_city, n_streets, 10.0)
        facades = make_streets(seed, f"msls/{city}", n_streets, length)
        (e0, n0), (lat0, lon0) = _ORIGINS.get(city, ((500000.0, 5000000.0), (45.0, 10.0)))
        for part, streets, xs, regime in (("database", db_street, db_x, "db"), ("query", q_street, q_x, "query")):
            meta, raw = [], []
            for i, (k, x) in enumerate(zip(streets, xs)):
                vrng = seeded_rng(seed, "msls", city, part, i)
                key = random_key(vrng)
                captured_at = 1_400_000_000_000 + int(vrng.integers(0, 2 * 10**11))
                view = plan_view(root / "train_val" / city / part / "images" / f"{key}.jpg", facades[k], x,
                                 vrng.normal(0, 2.0 if regime == "db" else 4.0), regime, vrng, image_size)
                views.append(view)
                east, north = e0 + x, n0 + k * STREET_SPACING_M
                lat = lat0 + k * STREET_SPACING_M / METRES_PER_DEG
                lon = lon0 + x / (METRES_PER_DEG * math.cos(math.radians(lat0)))
                meta.append({"": i, "key": key, "easting": repr(float(east)), "northing": repr(float(north)),
                             "night": view.condition["kind"] == "night", "view_direction": "Sideways"})
                raw.append({"": i, "key": key, "lon": repr(round(float(lon), 7)), "lat": repr(round(float(lat), 7)),
                            "ca": repr(round(math.degrees(view.camera.yaw) % 360.0, 2)), "captured_at": captured_at,
                            "pano": False})
                path = f"train_val/{city}/{part}/images/{key}.jpg"
                (db_images if part == "database" else q_images).append(path)
                (db_utm if part == "database" else q_utm).append((east, north))
                (db_city if part == "database" else q_city).append(c)
            write_csv(root / "train_val" / city / part / "postprocessed.csv", meta)
            write_csv(root / "train_val" / city / part / "raw.csv", raw)
    db_utm, q_utm = np.array(db_utm), np.array(q_utm)
    db_city, q_city = np.array(db_city), np.array(q_city)
    # positives within a city only: the cities' UTM zones differ
    positives = [p[db_city[p] == q_city[i]] for i, p in enumerate(_positives_within(db_utm, q_utm))]
    q_idx = np.array([i for i, p in enumerate(positives) if len(p)], dtype=np.int64)
    p_idx = np.empty(len(q_idx), dtype=object)
    for j, i in enumerate(q_idx):
        p_idx[j] = positives[i]
    for name, arr in (("dbImages", np.array(db_images)), ("qImages", np.array(q_images)), ("qIdx", q_idx),
                      ("pIdx", p_idx)):
        write_npy(root / f"msls_val_{name}.npy", arr)
    test_counts = _plan_test(root, MSLS_TEST_CITIES, max(2, db_per_city // 2), max(1, q_per_city // 2), seed,
                             image_size, views)
    # the stand-in's own counts, which the loaders check instead of the published ones
    atomic_write_text(root / "synthetic_standin.json", json.dumps({"generator": "dataloaders.synthetic", "counts": {
        "msls_val": [len(db_images), len(q_idx)], "msls_test": list(test_counts)}}, indent=1))
    render_views(views, workers)
    return root


def _plan_test(root: Path, cities: Sequence[str], db_per_city: int, q_per_city: int, seed: int, image_size,
               views: list) -> tuple[int, int]:
    """Plan MSLS-test images (``test/<city>/{database,query}/images/<key>.jpg``, no CSVs: the labels are not
    public) and write the SALAD authors' image lists, object arrays of str; returns (database, queries)."""
    lists = {"database": [], "query": []}
    for city in cities:
        rng = seeded_rng(seed, "msls-test", city)
        db_street, db_x, q_street, q_x, length = route_positions(rng, db_per_city, q_per_city, 1, 10.0)
        facades = make_streets(seed, f"msls-test/{city}", 1, length)
        for part, xs, regime in (("database", db_x, "db"), ("query", q_x, "query")):
            for i, x in enumerate(xs):
                vrng = seeded_rng(seed, "msls-test", city, part, i)
                path = f"test/{city}/{part}/images/{random_key(vrng)}.jpg"
                views.append(plan_view(root / path, facades[0], x, vrng.normal(0, 2.0 if regime == "db" else 4.0),
                                       regime, vrng, image_size))
                lists[part].append(path)
    write_npy(root / "msls_test_dbImages.npy", np.array(lists["database"], dtype=object))
    write_npy(root / "msls_test_qImages.npy", np.array(lists["query"], dtype=object))
    return len(lists["database"]), len(lists["query"])
