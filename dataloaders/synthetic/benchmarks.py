"""Stand-ins of the other benchmarks, each in its real format, in one folder laid out as a
``--data.benchmarks_root`` (VPR-datasets-downloader's folder names).

- ``tokyo247``, ``st_lucia``, ``eynsham``: the generic folder format, ``images/test/{database,queries}/``,
  files named ``@east@north@zone@letter@lat@lon@key@@@@@@@@.jpg`` (UTM metres), streets as in Pittsburgh;
- ``svox``: ``images/test/gallery/`` and one ``images/test/queries_<condition>/`` per SVOX condition;
- ``sf_xl``: ``processed/test/database/``, ``queries_v1/`` and ``queries_v2/``;
- ``amstertime`` and ``sped``: pairs (a database view and a query of the same place) named with the
  downloader's fake coordinates, pair n at north 1000 n (``@0@<1000 n>@@@@@<n>@@@@@@@@.jpg``);
- ``nordland``: VPR-datasets-downloader's Nordland, a sequence of frames along one street, summer views as
  the database and winter views as queries, at north = frame x 25 / 10.5 m (``@0@<north>@@@@@<frame>@...``);
- ``nordland_vprbench`` and ``sped_vprbench``: VPR-Bench's layout, ``ref/0000000.jpg``... and
  ``query/0000000.jpg``... (hard links to the images above: Nordland's winter frames as ``ref/``, every
  10th summer frame as ``query/``), with ``Nordland_{dbImages,qImages,gt}.npy`` (gt: object array, query i's
  positives the frames 10 i - 1 .. 10 i + 1) and ``SPED_{dbImages,qImages,gt}.npy`` (gt: (N, 1) int64, the
  exact match) as the SALAD authors publish them.

Every stand-in's root holds ``synthetic_standin.json`` with the counts of the benchmarks it stands in for:
the loaders check those instead of the published counts, and the results say the set is a stand-in.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from utils.files import atomic_write_text

from .formats import write_npy
from .render import IMAGE_SIZE, plan_view, render_views
from .world import METRES_PER_DEG, STREET_SPACING_M, make_streets, random_key, route_positions, seeded_rng

STANDIN_FILE = "synthetic_standin.json"  # dataloaders.eval.registry reads it
SVOX_CONDITIONS = ("night", "overcast", "rain", "snow", "sun")
# stand-in -> (UTM origin (east, north), zone number, zone letter, lat/lon origin)
_PLACES = {"tokyo247": ((380000.0, 3950000.0), 54, "S", (35.68, 139.69)),
           "st_lucia": ((500000.0, 6960000.0), 56, "J", (-27.50, 153.00)),
           "eynsham": ((600000.0, 5740000.0), 30, "U", (51.78, -1.37)),
           "svox": ((620000.0, 5735000.0), 30, "U", (51.75, -1.25)),
           "sf_xl": ((550000.0, 4180000.0), 10, "S", (37.77, -122.42))}
METRES_PER_FRAME = 25.0 / 10.5  # the downloader's fake spacing: +-10 frames within 25 m


def downloader_name(east: float, north: float, zone: int | str = "", letter: str = "", lat: str = "", lon: str = "",
                    key: str = "") -> str:
    """A file name in VPR-datasets-downloader's convention: @east@north@zone@letter@lat@lon@pano_id@ then the
    empty tile, heading, pitch, roll, height, timestamp and note fields."""
    zone = f"{int(zone):02d}" if zone != "" else ""
    return "@" + "@".join([f"{east:.2f}" if east else "0", f"{north:.2f}", zone, letter, lat, lon, key] + [""] * 7) + "@.jpg"


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy where the file system has none)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_standin(root: Path, counts: dict[str, tuple[int, int]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / STANDIN_FILE, json.dumps({"generator": "dataloaders.synthetic",
                                                      "counts": {k: list(v) for k, v in counts.items()}}, indent=1))


def _street_set(root: Path, name: str, database: str, queries: dict[str, str], n_db: int, n_q: int, seed: int,
                image_size, views: list) -> dict[str, int]:
    """Plan a street-like set under ``root``: ``n_db`` database views along up to 3 streets into ``database``,
    ``n_q`` queries per folder of ``queries`` (folder -> key), named with UTM metres of ``_PLACES[name]``.
    Returns {query folder key: queries}."""
    (e0, n0), zone, letter, (lat0, lon0) = _PLACES[name]
    rng = seeded_rng(seed, "bench", name)
    n_streets = min(3, max(1, n_db // 30))
    db_street, db_x, q_street, q_x, length = route_positions(rng, n_db, n_q, n_streets, 9.0)
    facades = make_streets(seed, f"bench/{name}", n_streets, length)
    name_of = lambda street, x, key: downloader_name(
        e0 + x, n0 + street * STREET_SPACING_M, zone, letter, f"{lat0 + street * STREET_SPACING_M / METRES_PER_DEG:.5f}",
        f"{lon0 + x / (METRES_PER_DEG * math.cos(math.radians(lat0))):.5f}", key)
    for i, (k, x) in enumerate(zip(db_street, db_x)):
        vrng = seeded_rng(seed, "bench", name, "db", i)
        views.append(plan_view(root / database / name_of(k, x, random_key(vrng)), facades[k], x, vrng.normal(0, 2.0),
                               "db", vrng, image_size))
    for folder, key in queries.items():
        # each query folder sees the same places under its own conditions (SVOX: one folder per weather)
        for i, (k, x) in enumerate(zip(q_street, q_x)):
            vrng = seeded_rng(seed, "bench", name, key, i)
            month = 1 if key == "snow" else None
            views.append(plan_view(root / folder / name_of(k, x, random_key(vrng)), facades[k], x, vrng.normal(0, 4.0),
                                   "query", vrng, image_size, month=month))
    return {key: n_q for key in queries.values()}


def _pairs(root: Path, name: str, n: int, seed: int, image_size, views: list) -> None:
    """``n`` pairs under ``root/images/test``: pair i a database view and a query of one place, 100 m from the
    next pair's along one street, named ``@0@<1000 i>@@@@@<i:07d>@...`` (the downloader's AmsterTime/SPED)."""
    facades = make_streets(seed, f"bench/{name}", 1, n * 100.0)
    for i in range(n):
        file = downloader_name(0.0, 1000.0 * i, key=f"{i:07d}")
        for part, regime, month in (("database", "db", 7), ("queries", "query", 1)):
            vrng = seeded_rng(seed, "bench", name, part, i)
            views.append(plan_view(root / "images" / "test" / part / file, facades[0], 100.0 * i,
                                   vrng.normal(0, 2.0), regime, vrng, image_size, month=month))


def _frames(root: Path, n: int, seed: int, image_size, views: list) -> None:
    """Nordland in the downloader's layout: ``n`` frames 1.2 m apart along one street, summer views as the
    database, winter views as queries, at the fake north frame x 25 / 10.5 m."""
    facades = make_streets(seed, "bench/nordland", 1, n * 1.2)
    for frame in range(n):
        file = f"@0@{frame * METRES_PER_FRAME:07.1f}@@@@@{frame}@@@@@@@@.jpg"
        for part, regime, month in (("database", "db", 7), ("queries", "query", 1)):
            vrng = seeded_rng(seed, "bench", "nordland", part, frame)
            views.append(plan_view(root / "images" / "test" / part / file, facades[0], 1.2 * frame,
                                   vrng.normal(0, 1.0), regime, vrng, image_size, month=month))


def _vpr_bench(root: Path, prefix: str, refs: list[Path], queries: list[Path], gt) -> None:
    """VPR-Bench's layout under ``root`` (``ref/``, ``query/`` as hard links to ``refs`` and ``queries``) with the
    SALAD authors' ``<prefix>_{dbImages,qImages,gt}.npy``."""
    db_images = [f"ref/{i:07d}.jpg" for i in range(len(refs))]
    q_images = [f"query/{i:07d}.jpg" for i in range(len(queries))]
    for source, name in [*zip(refs, db_images), *zip(queries, q_images)]:
        _link(source, root / name)
    write_npy(root / f"{prefix}_dbImages.npy", np.array(db_images))
    write_npy(root / f"{prefix}_qImages.npy", np.array(q_images))
    write_npy(root / f"{prefix}_gt.npy", gt)


def make_benchmarks(root: str | Path, sizes: dict, seed: int = 0, image_size: tuple[int, int] = IMAGE_SIZE,
                    workers: int | None = None) -> Path:
    """Write every stand-in (see the module's docstring) under ``root``; ``sizes``: 'street' (database, queries)
    of the street-like sets, 'pairs' (AmsterTime and SPED pairs), 'frames' (Nordland frames). Returns ``root``."""
    root = Path(root)
    n_db, n_q = sizes["street"]
    views: list = []
    counts = {}
    for name, database, queries in (
            ("tokyo247", "images/test/database", {"images/test/queries": "tokyo247"}),
            ("st_lucia", "images/test/database", {"images/test/queries": "st_lucia"}),
            ("eynsham", "images/test/database", {"images/test/queries": "eynsham"}),
            ("svox", "images/test/gallery", {f"images/test/queries_{c}": c for c in SVOX_CONDITIONS}),
            ("sf_xl", "processed/test/database", {"processed/test/queries_v1": "v1", "processed/test/queries_v2": "v2"})):
        found = _street_set(root / name, name, database, queries, n_db, n_q, seed, image_size, views)
        named = {"svox": lambda k: f"svox_{k}", "sf_xl": lambda k: f"sf_xl_test_{k}"}.get(name, lambda k: k)
        counts[name] = {named(k): (n_db, q) for k, q in found.items()}
    for name in ("amstertime", "sped"):
        _pairs(root / name, name, sizes["pairs"], seed, image_size, views)
        counts[name] = {name: (sizes["pairs"], sizes["pairs"])}
    frames = sizes["frames"]
    _frames(root / "nordland", frames, seed, image_size, views)
    counts["nordland"] = {"nordland_10frames": (frames, frames)}
    render_views(views, workers)

    nordland = root / "nordland" / "images" / "test"
    summer, winter = sorted((nordland / "database").iterdir()), sorted((nordland / "queries").iterdir())
    frame_of = lambda p: int(p.name.split("@")[7])
    summer, winter = sorted(summer, key=frame_of), sorted(winter, key=frame_of)
    q_frames = list(range(0, frames, 10))
    gt = np.empty(len(q_frames), dtype=object)
    for i, f in enumerate(q_frames):
        gt[i] = np.arange(max(0, f - 1), min(frames, f + 2), dtype=np.int64)
    _vpr_bench(root / "nordland_vprbench", "Nordland", winter, [summer[f] for f in q_frames], gt)
    counts["nordland_vprbench"] = {"nordland": (frames, len(q_frames))}
    pairs = root / "sped" / "images" / "test"
    _vpr_bench(root / "sped_vprbench", "SPED", sorted((pairs / "database").iterdir()),
               sorted((pairs / "queries").iterdir()), np.arange(sizes["pairs"], dtype=np.int64).reshape(-1, 1))
    counts["sped_vprbench"] = {"sped": (sizes["pairs"], sizes["pairs"])}
    for folder, named in counts.items():
        _write_standin(root / folder, named)
    return root
