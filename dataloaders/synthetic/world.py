"""The synthetic world: seeded random streams, building styles, street facades, imaging conditions, layouts.

A city is a set of straight east-west streets 300 m apart (so no view has a positive on another street).
Along each street runs a one-dimensional facade: buildings 5-15 m wide (and a few empty lots), each drawn
from a small palette of building styles shared by every city (wall tone, window grid, floor height, door,
shop front, cornice). Several styles share a wall tone, so colour statistics say little; what identifies a
place is the arrangement of buildings. A camera on the street at coordinate x looks at the facade from
25 m away with a pinhole lens that spans [x - 20 m, x + 20 m] at yaw 0: views 10 m apart share ~75 % of
their content, shifted; views more than ~45 m apart share nothing.

Nuisances per view: yaw (a few degrees, i.e. metres of shift), distance (scale), roll, camera height,
time of day (day, overcast, dusk, night with randomly lit windows), season (snow, colour), brightness,
contrast, gamma, colour cast, saturation, haze, smooth shading, occluders (cars, trees, poles, people),
blur and sensor noise. Database views get mild conditions; queries and training images get strong ones,
so that matching needs appearance invariance as in real VPR.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

HALF_VIEW_M = 20.0  # half the facade width seen at yaw 0
FACADE_DISTANCE_M = 25.0
CAMERA_HEIGHT_M = 9.0
STREET_SPACING_M = 300.0
METRES_PER_DEG = 111_320.0

_KEY_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))


def seeded_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Generator seeded by (seed, keys): the same keys give the same stream in any process."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(words)


def random_key(rng: np.random.Generator, length: int = 22) -> str:
    """A GSV panoid / Mapillary key look-alike: ``length`` characters of [A-Za-z0-9_-]."""
    return "".join(_KEY_CHARS[rng.integers(0, len(_KEY_CHARS), length)])


# --------------------------------------------------------------------------------------------------
# Styles and facades
# --------------------------------------------------------------------------------------------------

# wall tones (RGB albedo); 16 styles share 8 tones so a colour histogram barely tells buildings apart
_WALL_TONES = np.array([[0.72, 0.62, 0.52], [0.60, 0.36, 0.29], [0.80, 0.78, 0.72], [0.50, 0.51, 0.54],
                        [0.76, 0.68, 0.46], [0.45, 0.55, 0.65], [0.85, 0.55, 0.45], [0.55, 0.65, 0.45]],
                       dtype=np.float32)
_GLASS_TONES = np.array([[0.16, 0.20, 0.28], [0.10, 0.12, 0.12], [0.35, 0.45, 0.55],
                         [0.22, 0.26, 0.22]], dtype=np.float32)
_N_STYLES = 16


@dataclass
class Facade:
    """One street's buildings, per-building attributes as arrays indexed by building."""
    edges: np.ndarray  # (n + 1,) building boundaries along the street, metres
    attrs: dict  # name -> (n,) or (n, 3) array


def make_styles(seed: int) -> dict:
    """The building styles shared by every city of this seed: name -> (n_styles, ...) array."""
    rng = seeded_rng(seed, "styles")
    n = _N_STYLES
    floor_h = rng.uniform(2.8, 4.0, n)
    win_h = floor_h * rng.uniform(0.4, 0.65, n)
    return {
        "wall": _WALL_TONES[np.arange(n) % len(_WALL_TONES)],
        "glass": _GLASS_TONES[rng.integers(0, len(_GLASS_TONES), n)],
        "door": rng.uniform(0.08, 0.45, (n, 3)).astype(np.float32),
        "awning": rng.uniform(0.1, 0.9, (n, 3)).astype(np.float32),
        "period": rng.uniform(2.0, 4.2, n),
        "win_w_frac": rng.uniform(0.35, 0.7, n),
        "floor_h": floor_h,
        "win_h": win_h,
        "sill": (floor_h - win_h) * rng.uniform(0.35, 0.6, n),
        "ground_h": rng.uniform(3.5, 5.0, n),
        "shop": rng.random(n) < 0.4,
        "band": rng.random(n) < 0.5,
    }


def make_facade(rng: np.random.Generator, styles: dict, start: float, stop: float) -> Facade:
    """Buildings covering [start, stop] metres of a street, styles drawn from the shared palette."""
    widths = []
    total = 0.0
    while total < stop - start:
        widths.append(rng.uniform(5.0, 15.0))
        total += widths[-1]
    n = len(widths)
    widths = np.array(widths)
    edges = start + np.concatenate([[0.0], np.cumsum(widths)])
    style = rng.integers(0, _N_STYLES, n)
    a = {k: v[style] for k, v in styles.items()}
    lot = rng.random(n) < 0.08  # empty lot: a low wall, sky behind
    n_floors = rng.integers(1, 7, n)
    height = a["ground_h"] + n_floors * a["floor_h"] + rng.uniform(0.3, 1.2, n)
    height = np.where(lot, rng.uniform(0.8, 2.0, n), height)
    win_w = a["period"] * a["win_w_frac"]
    # window columns centred in the building, at least 0.8 m from its sides
    ncols = np.maximum(np.floor((widths - 1.6 - win_w) / a["period"]) + 1, 0)
    win_off = (widths - ((ncols - 1) * a["period"] + win_w)) / 2
    a.update(
        width=widths, height=height, n_floors=np.where(lot, 0, n_floors), ncols=np.where(lot, 0, ncols),
        win_w=win_w, win_off=win_off, lot=lot,
        door_x=rng.uniform(0.6, np.maximum(widths - 2.0, 0.7)),
        wall=np.clip(a["wall"] + rng.normal(0, 0.025, (n, 3)), 0, 1).astype(np.float32),
        uid=rng.integers(0, 1 << 20, n).astype(np.float64),
    )
    return Facade(edges=edges, attrs=a)


def make_streets(seed: int, world: str, n_streets: int, length: float) -> list[Facade]:
    """``n_streets`` facades of ``length`` metres (plus a margin for views at the ends) of one world."""
    styles = make_styles(seed)
    return [make_facade(seeded_rng(seed, world, "street", k), styles, -80.0, length + 80.0) for k in range(n_streets)]


# --------------------------------------------------------------------------------------------------
# Imaging conditions
# --------------------------------------------------------------------------------------------------

# regime -> probabilities of (day, overcast, dusk, night). Training images see dusk and night more often
# than the queries do: the network must learn that invariance from them (real GSV-Cities has no night,
# but a few minutes of CPU training from scratch need the signal).
_KINDS = ("day", "overcast", "dusk", "night")
_KIND_PROBS = {"db": (0.65, 0.35, 0.0, 0.0), "train": (0.35, 0.25, 0.2, 0.2), "query": (0.5, 0.25, 0.15, 0.1)}
STRENGTH = {"db": 0.4, "train": 0.8, "query": 0.6}  # amplitude of the random camera and appearance changes
_SKY = {  # (top, horizon) colours
    "day": ((0.30, 0.50, 0.85), (0.70, 0.80, 0.95)),
    "overcast": ((0.62, 0.64, 0.68), (0.80, 0.80, 0.82)),
    "dusk": ((0.25, 0.20, 0.45), (0.95, 0.55, 0.30)),
    "night": ((0.01, 0.01, 0.04), (0.08, 0.07, 0.12)),
}
_LIGHT = {"day": 1.0, "overcast": 0.8, "dusk": 0.8, "night": 0.5}
_CAST = {"day": (1.0, 1.0, 1.0), "overcast": (0.97, 1.0, 1.04), "dusk": (1.15, 0.88, 0.72), "night": (0.8, 0.85, 1.2)}


def sample_condition(rng: np.random.Generator, regime: str, month: int | None = None) -> dict:
    """Random imaging conditions of one view; ``regime`` is 'db' (mild), 'train' or 'query' (strong)."""
    a = STRENGTH[regime]
    kind = _KINDS[rng.choice(4, p=_KIND_PROBS[regime])]
    month = int(rng.integers(1, 13)) if month is None else month
    winter = month in (12, 1, 2) and rng.random() < 0.6
    cast = np.array(_CAST[kind]) * np.exp(rng.normal(0, 0.05 * a, 3))
    if month in (9, 10, 11):
        cast = cast * (1.05, 1.0, 0.92)
    return {
        "kind": kind,
        "winter": winter,
        "sky": np.array(_SKY[kind], dtype=np.float32) * rng.uniform(0.85, 1.1),
        "light": _LIGHT[kind] * math.exp(rng.normal(0, 0.15 * a)),
        "cast": cast.astype(np.float32),
        "saturation": rng.uniform(1 - 0.35 * a, 1 + 0.15 * a) * (0.75 if winter else 1.0),
        "haze": rng.uniform(0, 0.12 * a) + (0.15 if kind == "overcast" or winter else 0.0),
        "contrast": rng.uniform(1 - 0.25 * a, 1 + 0.12 * a),
        "brightness": rng.normal(0, 0.04 * a),
        "gamma": math.exp(rng.normal(0, 0.15 * a)),
        "shading": rng.uniform(0, 0.3 * a),
        "lit": {"day": 0.0, "overcast": 0.0, "dusk": rng.uniform(0.1, 0.4), "night": rng.uniform(0.3, 0.7)}[kind],
        "blur": 0.0 if rng.random() < 0.4 else rng.uniform(0.3, 0.5 + 0.6 * a),
        "noise": rng.uniform(0.004, 0.012 + 0.012 * a) + (0.02 if kind == "night" else 0.0),
        "occluders": int(rng.poisson(0.7 * a)),
        "phase": rng.uniform(0, 1000),
    }


# --------------------------------------------------------------------------------------------------
# Layouts of the evaluation sets
# --------------------------------------------------------------------------------------------------

def route_positions(rng: np.random.Generator, n_db: int, n_q: int, n_streets: int, spacing: float,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Database views every ``spacing`` m along the streets, queries at random along them.

    Returns (db street, db x, query street, query x, street length), the first four of shapes (n_db,) and
    (n_q,). A few queries (~4 %, at least one) lie on a stretch of street beyond the database's end,
    > 40 m from any database view: no positive.
    """
    per_street = math.ceil(n_db / n_streets)
    db_street = np.repeat(np.arange(n_streets), per_street)[:n_db]
    db_x = np.concatenate([np.arange(per_street) * spacing for _ in range(n_streets)])[:n_db]
    db_x = db_x + rng.uniform(-1.0, 1.0, n_db)
    covered_end = np.array([db_x[db_street == k].max() for k in range(n_streets)])
    n_far = max(1, round(0.04 * n_q))
    q_street = rng.integers(0, n_streets, n_q)
    q_x = rng.uniform(0, covered_end[q_street])
    far = rng.choice(n_q, n_far, replace=False)
    q_x[far] = covered_end[q_street[far]] + rng.uniform(45.0, 75.0, n_far)
    return db_street, db_x, q_street, q_x, float(per_street * spacing + 80.0)
