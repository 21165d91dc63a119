"""A GSV-Cities-format training set: ``Dataframes/<City>.csv`` and ``Images/<City>/<name>.jpg`` per city."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .formats import write_csv
from .render import IMAGE_SIZE, plan_view, render_views
from .world import METRES_PER_DEG, STREET_SPACING_M, make_facade, make_styles, random_key, seeded_rng

SYNTHETIC_CITIES = ("Synthville", "Pixelburg", "Rendertown", "Voxelton")
# lat/lon origin of each city (another city name gets a random one)
_ORIGINS = {"Synthville": (45.5017, -73.5673), "Pixelburg": (52.3702, 4.8952),
            "Rendertown": (-33.8688, 151.2093), "Voxelton": (35.6762, 139.6503)}


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
    styles = make_styles(seed)
    views = []
    for city in cities:
        rng = seeded_rng(seed, "gsv", city)
        gaps = rng.uniform(55.0, 75.0, places_per_city)
        street_len = 1600.0
        along = np.cumsum(gaps)
        street = (along // street_len).astype(int)
        x = along - street * street_len
        facades = [make_facade(seeded_rng(seed, "gsv", city, "street", k), styles, -80.0, street_len + 80.0)
                   for k in range(street.max() + 1)]
        counts = rng.integers(4, 9, places_per_city)
        few = rng.choice(places_per_city, min(2, places_per_city), replace=False)
        counts[few] = rng.integers(2, 4, len(few))
        lat0, lon0 = _ORIGINS.get(city, (rng.uniform(-50, 60), rng.uniform(-120, 150)))
        rows = []
        for place in range(places_per_city):
            for j in range(counts[place]):
                prng = seeded_rng(seed, "gsv", city, "place", place, j)
                xi = x[place] + prng.uniform(-4.0, 4.0)
                yaw = prng.normal(0, 3.0)
                north = street[place] * STREET_SPACING_M + prng.normal(0, 1.0)
                lat = lat0 + north / METRES_PER_DEG
                lon = lon0 + xi / (METRES_PER_DEG * math.cos(math.radians(lat0)))
                row = {"place_id": place, "year": int(prng.integers(2007, 2022)), "month": int(prng.integers(1, 13)),
                       "northdeg": int(round(yaw)) % 360, "city_id": city, "lat": _format_coord(lat, prng),
                       "lon": _format_coord(lon, prng), "panoid": random_key(prng)}
                name = (f"{city}_{place:07d}_{row['year']:04d}_{row['month']:02d}_{row['northdeg']:03d}_"
                        f"{row['lat']}_{row['lon']}_{row['panoid']}.jpg")
                views.append(plan_view(root / "Images" / city / name, facades[street[place]], xi, yaw, "train",
                                       prng, image_size, month=row["month"]))
                rows.append(row)
        write_csv(root / "Dataframes" / f"{city}.csv", rows)
    render_views(views, workers)
    return root
