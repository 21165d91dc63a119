"""Deterministic synthetic VPR data written in the real on-disk formats (GSV-Cities, Pittsburgh, MSLS-val).

World model. A city is a set of straight east-west streets 300 m apart (so no view has a positive on
another street). Along each street runs a one-dimensional facade: buildings 5-15 m wide (and a few empty
lots), each drawn from a small palette of building styles shared by every city (wall tone, window grid,
floor height, door, shop front, cornice). Several styles share a wall tone, so colour statistics say
little; what identifies a place is the arrangement of buildings. A camera on the street at coordinate x
looks at the facade from 25 m away with a pinhole lens that spans [x - 20 m, x + 20 m] at yaw 0: views
10 m apart share ~75 % of their content, shifted; views more than ~45 m apart share nothing.

Nuisances per view: yaw (a few degrees, i.e. metres of shift), distance (scale), roll, camera height,
time of day (day, overcast, dusk, night with randomly lit windows), season (snow, colour), brightness,
contrast, gamma, colour cast, saturation, haze, smooth shading, occluders (cars, trees, poles, people),
blur and sensor noise. Database views get mild conditions; queries and training images get strong ones,
so that matching needs appearance invariance as in real VPR.

Everything is drawn from numpy Generators seeded by (seed, names of the thing drawn): the same seed
writes the same bytes, whatever the order or process in which images are rendered.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from scipy.io import savemat
from scipy.ndimage import gaussian_filter, zoom

# bump when the generator's output changes: cached data sets of another version are regenerated
GENERATOR_VERSION = 2

SYNTHETIC_CITIES = ("Synthville", "Pixelburg", "Rendertown", "Voxelton")
PITTSBURGH_SPLITS = ("pitts30k_val", "pitts30k_test", "pitts250k_val", "pitts250k_test")
MSLS_CITIES = ("cph", "sf")

IMAGE_SIZE = (128, 96)  # (width, height) of the written JPEGs, 4:3 like the real sets
JPEG_QUALITY = 90
HALF_VIEW_M = 20.0  # half the facade width seen at yaw 0
FACADE_DISTANCE_M = 25.0
CAMERA_HEIGHT_M = 9.0
STREET_SPACING_M = 300.0
SUPERSAMPLING = 2  # rendered at 2x and averaged down: anti-aliased window grids

# scale -> sizes; "tiny" keeps every city and split so that configs work unchanged on it
SCALES = {
    "default": {
        "gsv_places_per_city": 250,
        "pitts": {"pitts30k_val": (800, 240), "pitts30k_test": (400, 120),
                  "pitts250k_val": (300, 100), "pitts250k_test": (400, 120)},
        "msls": (250, 60),
    },
    "tiny": {
        "gsv_places_per_city": 8,
        "pitts": {"pitts30k_val": (60, 20), "pitts30k_test": (30, 10),
                  "pitts250k_val": (30, 10), "pitts250k_test": (30, 10)},
        "msls": (30, 8),
    },
}

# GSV-Cities lat/lon origin of each synthetic city, and UTM origins of the evaluation sets
_GSV_ORIGINS = {"Synthville": (45.5017, -73.5673), "Pixelburg": (52.3702, 4.8952),
                "Rendertown": (-33.8688, 151.2093), "Voxelton": (35.6762, 139.6503)}
_PITTS_UTM_ORIGIN = (584000.0, 4476000.0)
_MSLS_ORIGINS = {"cph": ((724000.0, 6175000.0), (55.6761, 12.5683)),
                 "sf": ((551000.0, 4180000.0), (37.7749, -122.4194))}
_KEY_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
_METRES_PER_DEG = 111_320.0


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Generator seeded by (seed, keys): the same keys give the same stream in any process."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(words)


def _random_key(rng: np.random.Generator, length: int = 22) -> str:
    """A GSV panoid / Mapillary key look-alike: ``length`` characters of [A-Za-z0-9_-]."""
    return "".join(_KEY_CHARS[rng.integers(0, len(_KEY_CHARS), length)])


# --------------------------------------------------------------------------------------------------
# World: styles and facades
# --------------------------------------------------------------------------------------------------

# wall tones (RGB albedo); 16 styles share 8 tones so a colour histogram barely tells buildings apart
_WALL_TONES = np.array([[0.72, 0.62, 0.52], [0.60, 0.36, 0.29], [0.80, 0.78, 0.72], [0.50, 0.51, 0.54],
                        [0.76, 0.68, 0.46], [0.45, 0.55, 0.65], [0.85, 0.55, 0.45], [0.55, 0.65, 0.45]],
                       dtype=np.float32)
_GLASS_TONES = np.array([[0.16, 0.20, 0.28], [0.10, 0.12, 0.12], [0.35, 0.45, 0.55],
                         [0.22, 0.26, 0.22]], dtype=np.float32)
_N_STYLES = 16


@dataclass
class _Facade:
    """One street's buildings, per-building attributes as arrays indexed by building."""
    edges: np.ndarray  # (n + 1,) building boundaries along the street, metres
    attrs: dict  # name -> (n,) or (n, 3) array


def _make_styles(seed: int) -> dict:
    """The building styles shared by every city of this seed: name -> (n_styles, ...) array."""
    rng = _rng(seed, "styles")
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


def _make_facade(rng: np.random.Generator, styles: dict, start: float, stop: float) -> _Facade:
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
    return _Facade(edges=edges, attrs=a)


# --------------------------------------------------------------------------------------------------
# Imaging conditions
# --------------------------------------------------------------------------------------------------

# regime -> probabilities of (day, overcast, dusk, night). Training images see dusk and night more often
# than the queries do: the network must learn that invariance from them (real GSV-Cities has no night,
# but a few minutes of CPU training from scratch need the signal).
_KINDS = ("day", "overcast", "dusk", "night")
_KIND_PROBS = {"db": (0.65, 0.35, 0.0, 0.0), "train": (0.35, 0.25, 0.2, 0.2), "query": (0.5, 0.25, 0.15, 0.1)}
_STRENGTH = {"db": 0.4, "train": 0.8, "query": 0.6}  # amplitude of the random camera and appearance changes
_SKY = {  # (top, horizon) colours
    "day": ((0.30, 0.50, 0.85), (0.70, 0.80, 0.95)),
    "overcast": ((0.62, 0.64, 0.68), (0.80, 0.80, 0.82)),
    "dusk": ((0.25, 0.20, 0.45), (0.95, 0.55, 0.30)),
    "night": ((0.01, 0.01, 0.04), (0.08, 0.07, 0.12)),
}
_LIGHT = {"day": 1.0, "overcast": 0.8, "dusk": 0.8, "night": 0.5}
_CAST = {"day": (1.0, 1.0, 1.0), "overcast": (0.97, 1.0, 1.04), "dusk": (1.15, 0.88, 0.72), "night": (0.8, 0.85, 1.2)}


def _sample_condition(rng: np.random.Generator, regime: str, month: int | None = None) -> dict:
    """Random imaging conditions of one view; ``regime`` is 'db' (mild), 'train' or 'query' (strong)."""
    a = _STRENGTH[regime]
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
# Rendering (vectorised over pixels)
# --------------------------------------------------------------------------------------------------

@dataclass
class _Camera:
    """A camera on the street looking at the facade: position, yaw (rad, + turns east), distance, roll."""
    x: float
    yaw: float = 0.0
    distance: float = FACADE_DISTANCE_M
    height: float = CAMERA_HEIGHT_M
    roll: float = 0.0


def _sample_camera(rng: np.random.Generator, x: float, yaw_deg: float, regime: str) -> _Camera:
    """Camera at street coordinate ``x`` with heading ``yaw_deg`` and small random scale/roll/height."""
    a = _STRENGTH[regime]
    return _Camera(x=x, yaw=math.radians(yaw_deg), distance=FACADE_DISTANCE_M * math.exp(rng.normal(0, 0.06 * a)),
                   height=CAMERA_HEIGHT_M + rng.normal(0, 0.7 * a), roll=math.radians(rng.normal(0, 1.2 * a)))


def _hash01(*xs: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) from integer-valued arrays (lit windows, leaves)."""
    h = sum(np.asarray(x, np.float64) * k for x, k in zip(xs, (12.9898, 78.233, 37.719, 93.989)))
    return np.modf(np.abs(np.sin(h) * 43758.5453))[0]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Smooth random field (zero mean, unit-ish amplitude) of ``shape``, bilinear from ``cells`` knots."""
    knots = rng.normal(0, 1, cells)
    return zoom(knots, (shape[0] / cells[0], shape[1] / cells[1]), order=1, mode="nearest", grid_mode=True)


def _render(facade: _Facade, cam: _Camera, cond: dict, rng: np.random.Generator,
            size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """One view of ``facade`` -> (H, W, 3) uint8 image; ``size`` is (width, height)."""
    ss = SUPERSAMPLING
    W, H = size[0] * ss, size[1] * ss
    tan_h = HALF_VIEW_M / FACADE_DISTANCE_M
    u = ((np.arange(W) + 0.5) / W * 2 - 1) * tan_h  # image-plane coordinates (right, up), square pixels
    v = (1 - (np.arange(H) + 0.5) / H * 2) * tan_h * H / W
    cy, sy = math.cos(cam.yaw), math.sin(cam.yaw)
    t = cam.distance / (cy - u * sy)  # (W,) ray length to the facade plane, in units of the forward axis
    s = cam.x + t * (u * cy + sy)  # (W,) street coordinate seen by each column
    # roll as a vertical shear (exact enough for a degree or two): columns stay on one building
    z = (cam.height + t[None, :] * (v[:, None] + math.tan(cam.roll) * u[None, :])).astype(np.float32)  # (H, W)
    at = facade.attrs
    bi = np.clip(np.searchsorted(facade.edges, s, side="right") - 1, 0, len(facade.edges) - 2)
    c = {k: val[bi].astype(np.float32) for k, val in at.items()}  # attributes of the building in each column
    lx = (s - facade.edges[bi]).astype(np.float32)  # metres from the building's left edge

    # per column: window columns, door, shop front
    lxw = lx - c["win_off"]
    col = np.floor(lxw / c["period"])
    in_x = (lxw - col * c["period"] < c["win_w"]) & (col >= 0) & (col < c["ncols"])
    solid = c["lot"] == 0
    door_x = (lx >= c["door_x"]) & (lx < c["door_x"] + 1.3) & solid
    shop = (c["shop"] > 0) & solid
    shop_x = shop & ~door_x & (lx >= 0.7) & (lx < c["width"] - 0.7)
    awning_x = shop & (lx >= 0.4) & (lx < c["width"] - 0.4)
    # per pixel: floors and window rows
    zz = z - c["ground_h"]
    fl = np.floor(zz / c["floor_h"])
    fz = zz - fl * c["floor_h"] - c["sill"]
    window = (fz >= 0) & (fz < c["win_h"]) & (fl >= 0) & (fl < c["n_floors"]) & in_x
    gh = c["ground_h"]
    label = np.zeros((H, W), np.uint8)  # 0 wall
    label[(z >= c["height"] - 0.7) & (c["band"] > 0) & solid] = 1
    label[awning_x & (z >= gh - 1.1) & (z < gh - 0.5)] = 2
    label[window] = 3
    shop_win = shop_x & (z >= 0.5) & (z < gh - 1.1)
    label[shop_win] = 4
    label[door_x & (z >= 0) & (z < 2.3)] = 5
    label[z < 0] = 6
    label[z < -1.55] = 8
    label[z < -1.75] = 7
    sky = z >= c["height"]

    ground = np.array([0.88, 0.8, 0.4] if cond["winter"] else [0.58, 0.36, 0.25], np.float32)
    table = np.empty((9, W, 3), np.float32)  # label -> colour, per column
    table[0] = c["wall"]
    table[1] = c["wall"] * 0.72
    table[2] = c["awning"]
    table[3] = c["glass"]
    table[4] = c["glass"] * 1.2
    table[5] = c["door"]
    table[6:9] = ground[:, None, None]
    img = np.take(table.reshape(-1, 3), label.astype(np.intp) * W + np.arange(W), axis=0)  # (H, W, 3)
    # wall darkens with height; glass reflects a vertical gradient
    mult = 1.0 - 0.12 * np.clip(z / 25.0, 0, 1)
    mult = np.where(window, np.clip(0.75 + 0.6 * fz / c["win_h"], 0.5, 1.4), mult)
    img *= (mult * cond["light"])[..., None]
    # emissive sky and lit windows (a random subset per view), then occluders in front of everything
    rows = (np.arange(H, dtype=np.float32) / H)[:, None, None]
    sky_top, sky_hor = cond["sky"]
    np.copyto(img, sky_top + (sky_hor - sky_top) * rows, where=sky[..., None])
    if cond["lit"] > 0:
        lit = (window | shop_win) & (_hash01(c["uid"], fl, col, cond["phase"]) < cond["lit"])
        np.copyto(img, np.array([0.85, 0.70, 0.38], np.float32), where=lit[..., None])
    _draw_occluders(img, s, z, cam, cond, rng)
    img = sum(img[i::ss, j::ss] for i in range(ss) for j in range(ss)) * np.float32(1 / ss**2)
    h, w = img.shape[:2]

    # illumination and camera response: shading, colour cast, saturation, haze, contrast, gamma
    img *= (1 + cond["shading"] * _smooth_field(rng, (h, w), (3, 4)))[..., None]
    img *= cond["cast"]
    grey = img.mean(-1, keepdims=True)
    img = grey + cond["saturation"] * (img - grey)
    img = img * (1 - cond["haze"]) + cond["haze"] * np.float32(0.7 * max(cond["light"], 0.25))
    img = (img - 0.5) * cond["contrast"] + 0.5 + cond["brightness"]
    img = np.clip(img, 0, 1) ** cond["gamma"]
    if cond["blur"] > 0:
        img = gaussian_filter(img, sigma=(cond["blur"], cond["blur"], 0), mode="nearest")
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(cond["noise"])
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _draw_occluders(img: np.ndarray, s: np.ndarray, z: np.ndarray, cam: _Camera, cond: dict,
                    rng: np.random.Generator) -> None:
    """Paint cars, trees, poles and people at random places into ``img`` (nuisances, not landmarks).

    ``s`` (W,) is the street coordinate of each column (increasing), ``z`` (H, W) the height of each pixel.
    """
    light = np.float32(cond["light"])
    for _ in range(cond["occluders"]):
        kind = rng.choice(4, p=(0.35, 0.35, 0.15, 0.15))
        s0 = cam.x + rng.uniform(-HALF_VIEW_M, HALF_VIEW_M - 2)
        colour = rng.uniform(0.05, 0.9, 3).astype(np.float32) * light
        if kind == 0:  # car: body and cabin with dark windows
            c0, c1 = np.searchsorted(s, [s0, s0 + 4.6])
            ss, zz, out = s[c0:c1], z[:, c0:c1], img[:, c0:c1]
            body = ((zz >= -2.4) & (zz < -0.6)) | ((ss >= s0 + 1.0) & (ss < s0 + 3.6) & (zz >= -0.6) & (zz < 0.6))
            np.copyto(out, colour, where=body[..., None])
            glass = (ss >= s0 + 1.25) & (ss < s0 + 3.35) & (zz >= -0.5) & (zz < 0.45)
            np.copyto(out, np.float32(0.12) * light, where=glass[..., None])
        elif kind == 1:  # tree: leafy crown on a trunk
            zc, rx, rz = rng.uniform(4, 8), rng.uniform(2.0, 4.0), rng.uniform(2.0, 4.0)
            c0, c1 = np.searchsorted(s, [s0 - rx, s0 + rx])
            ss, zz, out = s[c0:c1], z[:, c0:c1], img[:, c0:c1]
            trunk = (np.abs(ss - s0) < 0.35) & (zz >= -2.0) & (zz < zc)
            np.copyto(out, np.array([0.25, 0.2, 0.15], np.float32) * light, where=trunk[..., None])
            crown = ((ss - s0) / rx) ** 2 + ((zz - zc) / rz) ** 2 < 1
            leaves = (0.6 + 0.8 * _hash01(np.floor(ss * 2.5), np.floor(zz * 2.5), s0)).astype(np.float32)
            green = np.array([0.22, 0.42, 0.15], np.float32) * np.float32(rng.uniform(0.7, 1.3)) * light
            np.copyto(out, green * leaves[..., None], where=crown[..., None])
        elif kind == 2:  # street lamp or sign pole
            c0, c1 = np.searchsorted(s, [s0 - 0.15, s0 + 0.15])
            zz, top = z[:, c0:c1], rng.uniform(5, 10)
            np.copyto(img[:, c0:c1], np.float32(0.2) * light, where=((zz >= -2.0) & (zz < top))[..., None])
        else:  # pedestrian: body and head
            c0, c1 = np.searchsorted(s, [s0 - 0.3, s0 + 0.3])
            ss, zz = s[c0:c1], z[:, c0:c1]
            person = ((zz >= -1.8) & (zz < -0.2)) | ((ss - s0) ** 2 + zz**2 < 0.25**2)
            np.copyto(img[:, c0:c1], colour * 0.6, where=person[..., None])


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    """Write ``image`` as a JPEG at fixed quality (same array -> same bytes), atomically."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


@dataclass
class _View:
    """A view to render: where it is written, what it sees and how, and its own random stream."""
    path: Path
    facade: _Facade
    camera: _Camera
    condition: dict
    rng: np.random.Generator
    size: tuple[int, int]


def _view(path: Path, facade: _Facade, x: float, yaw_deg: float, regime: str, rng: np.random.Generator,
          size: tuple[int, int], month: int | None = None) -> _View:
    """The view from street coordinate ``x`` with heading ``yaw_deg``; camera and conditions from ``rng``."""
    cam = _sample_camera(rng, x, yaw_deg, regime)
    return _View(path, facade, cam, _sample_condition(rng, regime, month), rng, tuple(size))


def _render_view(view: _View) -> None:
    """Render ``view`` and write its JPEG."""
    _write_jpeg(view.path, _render(view.facade, view.camera, view.condition, view.rng, view.size))


def _render_views(views: list[_View], workers: int | None = None) -> None:
    """Render and write ``views`` in ``workers`` processes (None: one per CPU, at most 4).

    Each view carries its own random stream, so the bytes written do not depend on ``workers``.
    """
    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(4, cpus)
    parallel = "fork" in mp.get_all_start_methods() and not mp.current_process().daemon
    if workers > 1 and len(views) > 1 and parallel:
        # fork: workers inherit the module and need no re-import of the caller's __main__
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            for _ in pool.map(_render_view, views, chunksize=16):
                pass
    else:
        for view in views:
            _render_view(view)


# --------------------------------------------------------------------------------------------------
# Street layouts shared by the evaluation sets
# --------------------------------------------------------------------------------------------------

def _streets(seed: int, world: str, n_streets: int, length: float) -> list[_Facade]:
    """``n_streets`` facades of ``length`` metres (plus a margin for views at the ends) of one world."""
    styles = _make_styles(seed)
    return [_make_facade(_rng(seed, world, "street", k), styles, -80.0, length + 80.0) for k in range(n_streets)]


def _route_positions(rng: np.random.Generator, n_db: int, n_q: int, n_streets: int, spacing: float,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Database views every ``spacing`` m along the streets, queries at random along them.

    Returns (db street, db x, query street, query x, street length). A few queries (~4 %, at least one)
    lie on a stretch of street beyond the database's end, > 40 m from any database view: no positive.
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


def _positives(db_utm: np.ndarray, q_utm: np.ndarray, radius: float = 25.0) -> list[np.ndarray]:
    """Per query, the sorted indices of database views within ``radius`` metres ((N, 2) and (M, 2) utm)."""
    d2 = ((q_utm[:, None, :] - db_utm[None, :, :]) ** 2).sum(-1)
    return [np.flatnonzero(row <= radius**2) for row in d2]


# --------------------------------------------------------------------------------------------------
# GSV-Cities
# --------------------------------------------------------------------------------------------------

def _format_coord(value: float, rng: np.random.Generator) -> str:
    """A coordinate as the real CSVs hold them: shortest float text, varied number of decimals."""
    return repr(round(float(value), int(rng.integers(5, 8))))


def make_gsv_cities(root: str | Path, cities: Sequence[str] = SYNTHETIC_CITIES, places_per_city: int = 250,
                    seed: int = 0, image_size: tuple[int, int] = IMAGE_SIZE, workers: int | None = None) -> Path:
    """Write a GSV-Cities-format training set with ``places_per_city`` places per city under ``root``.

    ``root`` is the data set root: ``root/Dataframes/<City>.csv`` and ``root/Images/<City>/*.jpg``.
    Each place is 4-8 views (a couple of places per city only 2-3, to exercise ``min_img_per_place``)
    taken within ~5 m of the place centre, at different year/month/heading/conditions; places lie
    55-75 m apart along the city's streets, so two places never share content. ``workers``: rendering
    processes (None: one per CPU, at most 4; the output does not depend on it). Returns ``root``.
    """
    root = Path(root)
    (root / "Dataframes").mkdir(parents=True, exist_ok=True)
    styles = _make_styles(seed)
    views = []
    for city in cities:
        rng = _rng(seed, "gsv", city)
        gaps = rng.uniform(55.0, 75.0, places_per_city)
        street_len = 1600.0
        along = np.cumsum(gaps)
        street = (along // street_len).astype(int)
        x = along - street * street_len
        facades = [_make_facade(_rng(seed, "gsv", city, "street", k), styles, -80.0, street_len + 80.0)
                   for k in range(street.max() + 1)]
        counts = rng.integers(4, 9, places_per_city)
        few = rng.choice(places_per_city, min(2, places_per_city), replace=False)
        counts[few] = rng.integers(2, 4, len(few))
        lat0, lon0 = _GSV_ORIGINS.get(city, (rng.uniform(-50, 60), rng.uniform(-120, 150)))
        rows = []
        for place in range(places_per_city):
            for j in range(counts[place]):
                prng = _rng(seed, "gsv", city, "place", place, j)
                xi = x[place] + prng.uniform(-4.0, 4.0)
                yaw = prng.normal(0, 3.0)
                north = street[place] * STREET_SPACING_M + prng.normal(0, 1.0)
                lat = lat0 + north / _METRES_PER_DEG
                lon = lon0 + xi / (_METRES_PER_DEG * math.cos(math.radians(lat0)))
                row = {"place_id": place, "year": int(prng.integers(2007, 2022)), "month": int(prng.integers(1, 13)),
                       "northdeg": int(round(yaw)) % 360, "city_id": city, "lat": _format_coord(lat, prng),
                       "lon": _format_coord(lon, prng), "panoid": _random_key(prng)}
                name = (f"{city}_{place:07d}_{row['year']:04d}_{row['month']:02d}_{row['northdeg']:03d}_"
                        f"{row['lat']}_{row['lon']}_{row['panoid']}.jpg")
                views.append(_view(root / "Images" / city / name, facades[street[place]], xi, yaw, "train", prng,
                                   image_size, month=row["month"]))
                rows.append(row)
        _write_csv(root / "Dataframes" / f"{city}.csv", rows)
    _render_views(views, workers)
    return root


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts with the same keys, in column order) as CSV text, values written as given."""
    lines = [",".join(rows[0])] + [",".join(str(v) for v in r.values()) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# Pittsburgh (NetVLAD dbStruct)
# --------------------------------------------------------------------------------------------------

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


def _write_mat(path: Path, variables: dict) -> None:
    """``savemat``, atomically, with a fixed header text: savemat stamps the creation time there."""
    buf = io.BytesIO()
    savemat(buf, variables)
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by dataloaders/synthetic.py".ljust(116)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)


def make_pittsburgh(root: str | Path, splits: dict[str, tuple[int, int]] | None = None, seed: int = 0,
                    image_size: tuple[int, int] = IMAGE_SIZE, workers: int | None = None) -> Path:
    """Write Pittsburgh-format splits under ``root``: ``datasets/<name>.mat`` and the images.

    ``splits`` maps split name -> (database size, query count); default: ``SCALES['default']['pitts']``.
    Each split is its own synthetic city (6 streets or fewer). Database views every ~9 m along the
    streets (mild conditions), paths ``000/000123_pitch1_yaw1.jpg`` relative to ``root``; queries at
    random positions (strong conditions, a few beyond the database's end, without positives), paths
    relative to ``root/queries_real``. Image numbers are unique across splits. ``workers``: rendering
    processes, as for ``make_gsv_cities``. Returns ``root``.
    """
    root = Path(root)
    splits = SCALES["default"]["pitts"] if splits is None else splits
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    next_db, next_q = 0, 0
    views = []
    for name, (n_db, n_q) in splits.items():
        rng = _rng(seed, "pitts", name)
        n_streets = min(6, max(1, n_db // 40))
        db_street, db_x, q_street, q_x, length = _route_positions(rng, n_db, n_q, n_streets, spacing=9.0)
        facades = _streets(seed, f"pitts/{name}", n_streets, length)
        e0, n0 = _PITTS_UTM_ORIGIN
        utm = lambda street, x: np.stack([e0 + x, n0 + street * STREET_SPACING_M], axis=1)
        db_fns, q_fns = [], []
        for i in range(n_db):
            vrng = _rng(seed, "pitts", name, "db", i)
            yaw_idx = int(vrng.integers(1, 13))
            fn = f"{next_db // 1000:03d}/{next_db:06d}_pitch1_yaw{yaw_idx}.jpg"
            views.append(_view(root / fn, facades[db_street[i]], db_x[i], vrng.normal(0, 2.0), "db", vrng, image_size))
            db_fns.append(fn)
            next_db += 1
        for i in range(n_q):
            vrng = _rng(seed, "pitts", name, "q", i)
            yaw_idx = int(vrng.integers(1, 13))
            fn = f"{next_q // 1000:03d}/{next_q:06d}_pitch1_yaw{yaw_idx}.jpg"
            views.append(_view(root / "queries_real" / fn, facades[q_street[i]], q_x[i], vrng.normal(0, 4.0),
                               "query", vrng, image_size))
            q_fns.append(fn)
            next_q += 1
        which = "val" if name.endswith("_val") else "test"
        struct = _db_struct(which, db_fns, utm(db_street, db_x), q_fns, utm(q_street, q_x))
        _write_mat(root / "datasets" / f"{name}.mat", {"dbStruct": struct})
    _render_views(views, workers)
    return root


# --------------------------------------------------------------------------------------------------
# MSLS-val
# --------------------------------------------------------------------------------------------------

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
        rng = _rng(seed, "msls", city)
        n_streets = min(4, max(1, db_per_city // 40))
        db_street, db_x, q_street, q_x, length = _route_positions(rng, db_per_city, q_per_city, n_streets, 10.0)
        facades = _streets(seed, f"msls/{city}", n_streets, length)
        (e0, n0), (lat0, lon0) = _MSLS_ORIGINS.get(city, ((500000.0, 5000000.0), (45.0, 10.0)))
        for part, streets, xs, regime in (("database", db_street, db_x, "db"), ("query", q_street, q_x, "query")):
            meta, raw = [], []
            for i, (k, x) in enumerate(zip(streets, xs)):
                vrng = _rng(seed, "msls", city, part, i)
                key = _random_key(vrng)
                captured_at = 1_400_000_000_000 + int(vrng.integers(0, 2 * 10**11))
                view = _view(root / "train_val" / city / part / "images" / f"{key}.jpg", facades[k], x,
                             vrng.normal(0, 2.0 if regime == "db" else 4.0), regime, vrng, image_size)
                views.append(view)
                east, north = e0 + x, n0 + k * STREET_SPACING_M
                lat = lat0 + k * STREET_SPACING_M / _METRES_PER_DEG
                lon = lon0 + x / (_METRES_PER_DEG * math.cos(math.radians(lat0)))
                meta.append({"": i, "key": key, "easting": repr(float(east)), "northing": repr(float(north)),
                             "night": view.condition["kind"] == "night", "view_direction": "Sideways"})
                raw.append({"": i, "key": key, "lon": repr(round(float(lon), 7)), "lat": repr(round(float(lat), 7)),
                            "ca": repr(round(math.degrees(view.camera.yaw) % 360.0, 2)), "captured_at": captured_at,
                            "pano": False})
                path = f"train_val/{city}/{part}/images/{key}.jpg"
                (db_images if part == "database" else q_images).append(path)
                (db_utm if part == "database" else q_utm).append((east, north))
                (db_city if part == "database" else q_city).append(c)
            _write_csv(root / "train_val" / city / part / "postprocessed.csv", meta)
            _write_csv(root / "train_val" / city / part / "raw.csv", raw)
    db_utm, q_utm = np.array(db_utm), np.array(q_utm)
    db_city, q_city = np.array(db_city), np.array(q_city)
    # positives within a city only: the cities' UTM zones differ
    positives = [p[db_city[p] == q_city[i]] for i, p in enumerate(_positives(db_utm, q_utm))]
    q_idx = np.array([i for i, p in enumerate(positives) if len(p)], dtype=np.int64)
    p_idx = np.empty(len(q_idx), dtype=object)
    for j, i in enumerate(q_idx):
        p_idx[j] = positives[i].astype(np.int64)
    for name, arr in (("dbImages", np.array(db_images)), ("qImages", np.array(q_images)), ("qIdx", q_idx),
                      ("pIdx", p_idx)):
        tmp = root / f".msls_val_{name}.{os.getpid()}.tmp.npy"
        np.save(tmp, arr, allow_pickle=arr.dtype == object)
        os.replace(tmp, root / f"msls_val_{name}.npy")
    _render_views(views, workers)
    return root


# --------------------------------------------------------------------------------------------------
# Everything, once
# --------------------------------------------------------------------------------------------------

_PARTS = ("gsv_cities", "pitts", "msls")


def synthetic_roots(root: str | Path, scale: str = "default", seed: int = 0) -> dict[str, Path]:
    """The data-root settings of VPRDataModule -> the folders generate_synthetic writes under ``root``."""
    root = Path(root)
    return {"gsv_root": root / "gsv_cities", "pitts_root": root / "pitts", "msls_root": root / "msls"}


def generate_synthetic(root: str | Path, scale: str = "default", seed: int = 0,
                       workers: int | None = None) -> dict[str, Path]:
    """Write all three data sets under ``root``, once; returns {'gsv_cities': ..., 'pitts': ..., 'msls': ...}.

    If ``root/.complete`` records the same scale, seed and generator version, nothing is written.
    Otherwise the three folders are (re)generated and the marker is written last, so an interrupted
    generation is redone. Folders are only replaced if this generator wrote them (marker present), never
    foreign data. ``scale`` is 'default' (training demo) or 'tiny' (tests, seconds). ``workers``:
    rendering processes (None: one per CPU, at most 4); the bytes written do not depend on it.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown synthetic scale {scale!r}; choose one of {sorted(SCALES)}")
    root = Path(root)
    paths = {p: root / p for p in _PARTS}
    marker, started = root / ".complete", root / ".generating"
    wanted = {"scale": scale, "seed": seed, "version": GENERATOR_VERSION}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == wanted:
                return paths
        except ValueError:
            pass
    ours = marker.is_file() or started.is_file()
    for p in paths.values():
        if p.exists():
            if not ours:
                raise FileExistsError(f"{p} exists but was not written by the synthetic generator (no "
                                      f"{marker.name} marker): choose an empty folder for the synthetic data")
            shutil.rmtree(p)
    root.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    started.write_text(json.dumps(wanted))
    sizes = SCALES[scale]
    make_gsv_cities(paths["gsv_cities"], SYNTHETIC_CITIES, sizes["gsv_places_per_city"], seed, workers=workers)
    make_pittsburgh(paths["pitts"], sizes["pitts"], seed, workers=workers)
    make_msls(paths["msls"], MSLS_CITIES, *sizes["msls"], seed=seed, workers=workers)
    marker.write_text(json.dumps(wanted))
    started.unlink()
    return paths


def main(argv: Iterable[str] | None = None) -> None:
    """Command line: ``python -m dataloaders.synthetic <root> [--scale tiny] [--seed 0]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder to write gsv_cities/, pitts/ and msls/ into")
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: CPUs, max 4)")
    args = parser.parse_args(None if argv is None else list(argv))
    start = time.perf_counter()
    paths = generate_synthetic(args.root, args.scale, args.seed, args.workers)
    print(f"synthetic data ({args.scale}, seed {args.seed}) ready in {time.perf_counter() - start:.1f} s:")
    for name, path in paths.items():
        print(f"  {name}: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
