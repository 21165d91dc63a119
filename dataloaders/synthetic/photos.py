"""Photograph-sized generated images and layouts that link to them, for benchmarks at real image sizes.

The synthetic data sets (the rest of this package) are small 128 x 96 scenes for training demos and
tests; benchmarks of the data path and of the GPU need images of GSV-Cities' size (640 x 480 JPEGs of
about 115 kB) in the real layouts. ``make_jpegs`` writes such images once; ``gsv_layout`` and
``folder_layout`` lay them out (hard links, so any number of places costs no disk).
"""
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")


def make_jpegs(folder: Path, count: int, width: int = 640, height: int = 480, seed: int = 0) -> list[Path]:
    """``count`` JPEGs of ``width`` x ``height`` (written once): multi-scale smooth noise plus rectangles."""
    from scipy.ndimage import zoom
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:03d}.jpg"
        if not path.exists():
            rng = np.random.default_rng([seed, i])
            img = np.zeros((height, width, 3), np.float32)
            for step, amplitude in ((64, 90), (16, 40), (4, 20), (1, 8)):
                noise = rng.normal(size=(height // step + 2, width // step + 2, 3)).astype(np.float32)
                img += amplitude * zoom(noise, (step, step, 1), order=1)[:height, :width]
            for _ in range(40):  # facades and windows: sharp edges
                x, y = rng.integers(0, width), rng.integers(0, height)
                img[y:y + rng.integers(5, 80), x:x + rng.integers(5, 80)] += rng.normal(0, 40, 3)
            buf = io.BytesIO()
            Image.fromarray(np.clip(img + 128, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
            path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def gsv_layout(root: Path, paths: list[Path], places: int, per_place: int = 4) -> Path:
    """A GSV-Cities layout of one city whose images link to ``paths`` (written once)."""
    if (root / "Dataframes" / "Benchtown.csv").exists():
        return root
    (root / "Images" / "Benchtown").mkdir(parents=True, exist_ok=True)
    (root / "Dataframes").mkdir(parents=True, exist_ok=True)
    lines = [",".join(COLUMNS)]
    for place in range(places):
        for j in range(per_place):
            lat, lon, pano = f"{40 + place * 1e-4:.7f}", f"{-3 - j * 1e-4:.7f}", f"pano{place:06d}{j:02d}xxxxxxxxxx"
            lines.append(f"{place},2020,1,{j * 90},Benchtown,{lat},{lon},{pano}")
            name = f"Benchtown_{place:07d}_2020_01_{j * 90:03d}_{lat}_{lon}_{pano}.jpg"
            os.link(paths[(place * per_place + j) % len(paths)], root / "Images" / "Benchtown" / name)
    (root / "Dataframes" / "Benchtown.csv").write_text("\n".join(lines) + "\n")
    return root


def folder_layout(root: Path, paths: list[Path], num_database: int, num_queries: int) -> Path:
    """A set in the generic folder format (``images/test/{database,queries}/@east@north@...@.jpg``) whose
    images link to ``paths``: database views every 10 m along a street, each query 3 m from one of them."""
    for part, count, offset in (("database", num_database, 0.0), ("queries", num_queries, 3.0)):
        folder = root / "images" / "test" / part
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            east = 500000.0 + 10.0 * (i % num_database) + offset
            target = folder / f"@{east:.2f}@4400000.00@17@T@@@@@@@@{i:05d}@.jpg"
            if not target.exists():
                os.link(paths[i % len(paths)], target)
    return root
