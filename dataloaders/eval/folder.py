"""Evaluation sets in the generic folder format of the public VPR data set downloaders.

Tokyo 24/7, Nordland, SPED, St Lucia, AmsterTime, SVOX and any custom set: images under
``<root>/images/test/database/`` and ``<root>/images/test/queries/`` (sub-folders allowed), each file
named ``@UTM_east@UTM_north@UTM_zone_number@UTM_zone_letter@latitude@longitude@pano_id@tile_num@heading@
pitch@roll@height@timestamp@note@.jpg``; only the first two fields are required (SPED, for one, gives
made-up metres and no zone). Positives are the database images within ``pos_radius`` metres (default 25)
of the query on (east, north).

Coordinates are checked before anything is embedded: they must be finite numbers; where the zone fields
are given, (east, north) must be UTM metres (easting 100 000 to 900 000, northing 0 to 10 000 000: degrees
put in the UTM fields are caught here), and positives are only sought within the query's zone (eastings of
two zones cannot be compared); and most queries must not have most of the database as positives (degrees
without zone fields are caught there: a whole city lies within 25 "metres").
"""
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from utils.errors import ConfigError, DataError, NotFoundError

from ..image_io import IMAGE_EXTENSIONS
from .base import EvalDataset, Protocol, check_positives, check_set, positives_within

if TYPE_CHECKING:
    from .registry import Format

EXTENSIONS = IMAGE_EXTENSIONS  # every format the decoder reads, in any case (.JPG, .TIFF)
LAYOUT = ("<root>/images/test/database/*.jpg and <root>/images/test/queries/*.jpg, each file named "
          "@<UTM_east>@<UTM_north>@<UTM_zone_number>@<UTM_zone_letter>@<latitude>@<longitude>@...@.jpg with "
          "easting and northing in metres (e.g. @0585123.45@4477321.09@17@T@40.44133@-79.99588@@@@@@@@@.jpg)")
DEFAULT_PARTS = ("images/test/database", "images/test/queries")
# UTM latitude bands (C..X without I and O) and the range of valid eastings and northings, metres
ZONE_LETTERS = "CDEFGHJKLMNPQRSTUVWX"
EASTING_RANGE = (100_000.0, 900_000.0)
NORTHING_RANGE = (0.0, 10_000_000.0)


def list_images(folder: Path) -> list[Path]:
    """Every image (``EXTENSIONS``, any case) under ``folder``, recursively, in sorted path order. Other files,
    and hidden ones (``.DS_Store``, macOS's ``._photo.jpg``), are left out and counted, by extension, in one
    note on stderr."""
    images, left_out = [], Counter()
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.name.startswith("."):
            left_out["hidden files"] += 1
        elif path.suffix.lower() in EXTENSIONS:
            images.append(path)
        else:
            left_out[path.suffix.lower() or "no extension"] += 1
    if left_out:
        counts = ", ".join(f"{kind} {n}" for kind, n in sorted(left_out.items()))
        print(f"note: {folder}: left out {sum(left_out.values())} file(s) that are not images this project reads "
              f"({counts}); images are {' '.join(EXTENSIONS)}", file=sys.stderr)
    return sorted(images)


def utm_from_names(paths: list[Path], what: str) -> tuple[np.ndarray, np.ndarray]:
    """((N, 2) (east, north) metres, (N,) UTM zone of each image: an index into the zones found, -1 when the
    names give none) parsed from ``@east@north@zone@letter@...`` file names.

    A file name without two numbers, with NaN or infinite coordinates, with zone fields that are not a UTM
    zone, or with coordinates outside the UTM range while a zone is given (degrees in the UTM fields)
    raises DataError naming the file; so does a set where some names give a zone and others do not.
    """
    utm = np.empty((len(paths), 2), dtype=np.float64)
    zone_of = np.full(len(paths), -1, dtype=np.int64)
    zones: dict[str, int] = {}
    without_zone: Optional[Path] = None
    for i, path in enumerate(paths):
        fields = path.stem.split("@")  # the extension off: "@east@north.jpg" reads too
        try:
            east, north = float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            raise DataError(f"{what}: file name {path.name!r} ({path}) lacks @<UTM_east>@<UTM_north>@; "
                            f"expected layout: {LAYOUT}") from None
        if not (np.isfinite(east) and np.isfinite(north)):
            raise DataError(f"{what}: file name {path.name!r} ({path}) gives the coordinates ({fields[1]}, "
                            f"{fields[2]}), not finite numbers: rename it with its UTM easting and northing in "
                            f"metres, or remove it. Expected layout: {LAYOUT}")
        utm[i] = east, north
        number, letter = (fields[3], fields[4]) if len(fields) > 4 else ("", "")
        if not (number or letter):
            without_zone = without_zone or path
            continue
        if not (number.isdigit() and 1 <= int(number) <= 60 and len(letter) == 1 and letter.upper() in ZONE_LETTERS):
            raise DataError(f"{what}: file name {path.name!r} ({path}) gives the UTM zone {number!r} {letter!r}; "
                            f"a zone is a number 1..60 and a latitude band letter ({ZONE_LETTERS}). Expected "
                            f"layout: {LAYOUT}")
        if not (EASTING_RANGE[0] <= east <= EASTING_RANGE[1] and NORTHING_RANGE[0] <= north <= NORTHING_RANGE[1]):
            degrees = abs(east) <= 180 and abs(north) <= 180
            raise DataError(
                f"{what}: file name {path.name!r} ({path}) gives UTM zone {int(number)}{letter} but (east, north) = "
                f"({fields[1]}, {fields[2]}), outside UTM metres (easting {EASTING_RANGE[0]:,.0f} to "
                f"{EASTING_RANGE[1]:,.0f}, northing up to {NORTHING_RANGE[1]:,.0f})"
                + (": these look like latitude/longitude degrees. " if degrees else ". ")
                + f"Rename the files with easting and northing in metres (e.g. utm.from_latlon(lat, lon)); "
                  f"expected layout: {LAYOUT}")
        zone_of[i] = zones.setdefault(f"{int(number)}{letter.upper()}", len(zones))
        if without_zone is not None:
            break
    if zones and without_zone is not None:
        with_zone = paths[int(np.flatnonzero(zone_of >= 0)[0])]
        raise DataError(f"{what}: some file names give a UTM zone ({with_zone}) and others none ({without_zone}): "
                        f"give every image its zone, or none when all coordinates are in one metric frame. "
                        f"Expected layout: {LAYOUT}")
    return utm, zone_of


def positives_by_zone(utm: np.ndarray, zone_of: np.ndarray, num_references: int, radius: float) -> np.ndarray:
    """``positives_within`` for images that may lie in several UTM zones: eastings of two zones cannot be
    compared, so only images of the query's own zone can be its positives (each zone is moved 10 000 km
    away from the others)."""
    shifted = utm.copy()
    shifted[:, 0] += np.maximum(zone_of, 0) * 1e7
    return positives_within(shifted[:num_references], shifted[num_references:], radius)


class FolderDataset(EvalDataset):
    """A data set in the generic folder format: database then queries, both in sorted path order.

    ``name`` defaults to the root folder's name (e.g. ``tokyo247``); ``pos_radius`` is in metres and
    ``radius_from`` says where it was set (written into the protocol). ``parts``: the database and query
    folders relative to ``root`` (default ``images/test/database`` and ``images/test/queries``; SVOX's are
    ``images/test/gallery`` and ``images/test/queries_<condition>``).
    """

    def __init__(self, root: str | Path, transform: Optional[Callable] = None, pos_radius: float = 25.0,
                 name: Optional[str] = None, parts: tuple[str, str] = DEFAULT_PARTS,
                 radius_from: str = "data.pos_radius"):
        root = Path(root)
        name = name or root.resolve().name
        layout = LAYOUT if tuple(parts) == DEFAULT_PARTS else LAYOUT.replace(
            "images/test/database", parts[0]).replace("images/test/queries", parts[1])
        folders = {part: root / sub for part, sub in zip(("database", "queries"), parts)}
        for part, folder in folders.items():
            if not folder.is_dir():
                raise NotFoundError(f"{name}: {part} folder {folder} not found. Expected layout: {layout}")
        db_paths, q_paths = (list_images(folders[part]) for part in ("database", "queries"))
        for part, paths in (("database", db_paths), ("queries", q_paths)):
            if not paths:
                raise NotFoundError(f"{name}: no images ({', '.join(EXTENSIONS)}) under {folders[part]}. "
                                    f"Expected layout: {layout}")
        if not pos_radius > 0:
            raise ConfigError(f"{name}: pos_radius must be positive (metres), got {pos_radius}; "
                              f"set --data.pos_radius")
        utm, zone_of = utm_from_names(db_paths + q_paths, name)
        ground_truth = positives_by_zone(utm, zone_of, len(db_paths), pos_radius)
        check_set(name, [], [], ground_truth, f"the file names under {root} (positives within {pos_radius:g} m)",
                  "Check that database and queries show the same places, with coordinates in the same metric "
                  "frame, or set a larger --data.pos_radius.")
        check_positives(name, ground_truth, len(db_paths), pos_radius, f"the file names under {root}")
        self.root = root
        self.pos_radius = float(pos_radius)
        protocol = Protocol(f"database images within {pos_radius:g} m (UTM east/north of the file names; "
                            f"{radius_from})", str(root), float(pos_radius))
        super().__init__(name, db_paths, q_paths, ground_truth, transform, utm=utm, protocol=protocol)


def folder_format(name: str, parts: tuple[str, str] = DEFAULT_PARTS, radius: float = 25.0,
                  radius_from: str = "") -> "Format":
    """The generic folder format as a registry ``Format`` of benchmark ``name``: present when the database
    folder ``parts[0]`` exists; positives within the benchmark's pinned ``radius`` (metres), stated with
    ``radius_from`` (default: 'pinned by the <name> protocol')."""
    from .registry import Format

    layout = LAYOUT if tuple(parts) == DEFAULT_PARTS else LAYOUT.replace(
        "images/test/database", parts[0]).replace("images/test/queries", parts[1])
    return Format(f"VPR-datasets-downloader's folder format: {layout}", lambda root: (root / parts[0]).is_dir(),
                  lambda root, transform: FolderDataset(root, transform, radius, name, parts,
                                                        radius_from or f"{radius:g} m pinned by the {name} protocol"))
