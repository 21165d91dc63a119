"""Rendering: the camera, a facade seen through it under given conditions, occluders, and the parallel
rendering of many views to JPEG files.

Every view carries its own random stream (``world.seeded_rng`` of its names), so the bytes written do not
depend on the order or the process in which views are rendered.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from .formats import write_jpeg
from .world import CAMERA_HEIGHT_M, FACADE_DISTANCE_M, HALF_VIEW_M, STRENGTH, Facade, sample_condition

IMAGE_SIZE = (128, 96)  # (width, height) of the written JPEGs, 4:3 like the real sets
SUPERSAMPLING = 2  # rendered at 2x and averaged down: anti-aliased window grids


@dataclass
class Camera:
    """A camera on the street looking at the facade: position, yaw (rad, + turns east), distance, roll."""
    x: float
    yaw: float = 0.0
    distance: float = FACADE_DISTANCE_M
    height: float = CAMERA_HEIGHT_M
    roll: float = 0.0


def sample_camera(rng: np.random.Generator, x: float, yaw_deg: float, regime: str) -> Camera:
    """Camera at street coordinate ``x`` with heading ``yaw_deg`` and small random scale/roll/height."""
    a = STRENGTH[regime]
    return Camera(x=x, yaw=math.radians(yaw_deg), distance=FACADE_DISTANCE_M * math.exp(rng.normal(0, 0.06 * a)),
                  height=CAMERA_HEIGHT_M + rng.normal(0, 0.7 * a), roll=math.radians(rng.normal(0, 1.2 * a)))


def _hash01(*xs: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) from integer-valued arrays (lit windows, leaves)."""
    h = sum(np.asarray(x, np.float64) * k for x, k in zip(xs, (12.9898, 78.233, 37.719, 93.989)))
    return np.modf(np.abs(np.sin(h) * 43758.5453))[0]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Smooth random field (zero mean, unit-ish amplitude) of ``shape``, bilinear from ``cells`` knots."""
    knots = rng.normal(0, 1, cells)
    return zoom(knots, (shape[0] / cells[0], shape[1] / cells[1]), order=1, mode="nearest", grid_mode=True)


def render(facade: Facade, cam: Camera, cond: dict, rng: np.random.Generator,
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


def _draw_occluders(img: np.ndarray, s: np.ndarray, z: np.ndarray, cam: Camera, cond: dict,
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


@dataclass
class View:
    """A view to render: where it is written, what it sees and how, and its own random stream."""
    path: Path
    facade: Facade
    camera: Camera
    condition: dict
    rng: np.random.Generator
    size: tuple[int, int]


def plan_view(path: Path, facade: Facade, x: float, yaw_deg: float, regime: str, rng: np.random.Generator,
              size: tuple[int, int], month: int | None = None) -> View:
    """The view from street coordinate ``x`` with heading ``yaw_deg``; camera and conditions from ``rng``."""
    cam = sample_camera(rng, x, yaw_deg, regime)
    return View(path, facade, cam, sample_condition(rng, regime, month), rng, tuple(size))


def _render_view(view: View) -> None:
    """Render ``view`` and write its JPEG."""
    write_jpeg(view.path, render(view.facade, view.camera, view.condition, view.rng, view.size))


def render_views(views: list[View], workers: int | None = None) -> None:
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
