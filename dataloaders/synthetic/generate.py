"""All three data sets, once, under one root: the folders gsv_cities/, pitts/ and msls/ and a marker."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .gsv_cities import SYNTHETIC_CITIES, make_gsv_cities
from .msls import MSLS_CITIES, make_msls
from .pittsburgh import DEFAULT_SPLITS, make_pittsburgh

# bump when the generator's output changes: cached data sets of another version are regenerated
GENERATOR_VERSION = 2

# scale -> sizes; "tiny" keeps every city and split so that configs work unchanged on it
SCALES = {
    "default": {
        "gsv_places_per_city": 250,
        "pitts": DEFAULT_SPLITS,
        "msls": (250, 60),
    },
    "tiny": {
        "gsv_places_per_city": 8,
        "pitts": {"pitts30k_val": (60, 20), "pitts30k_test": (30, 10),
                  "pitts250k_val": (30, 10), "pitts250k_test": (30, 10)},
        "msls": (30, 8),
    },
}

_PARTS = ("gsv_cities", "pitts", "msls")


def synthetic_roots(root: str | Path) -> dict[str, Path]:
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
