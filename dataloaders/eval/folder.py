"""Evaluation sets in the generic folder format of the public VPR data set downloaders.

Tokyo 24/7, Nordland, SPED, St Lucia, AmsterTime, SVOX and any custom set: images under
``<root>/images/test/database/`` and ``<root>/images/test/queries/`` (sub-folders allowed), each file
named ``@<utm_east>@<utm_north>@...@.jpg``. Positives are the database images within ``pos_radius``
metres (default 25) of the query on (east, north).
"""
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .base import EvalDataset, positives_within

EXTENSIONS = (".jpg", ".jpeg", ".png")
LAYOUT = ("<root>/images/test/database/*.jpg and <root>/images/test/queries/*.jpg, each file named "
          "@<utm_east>@<utm_north>@...@.jpg (e.g. @0585123.45@4477321.09@17@T@@@@@@@@@@@.jpg)")


def list_images(folder: Path) -> list[Path]:
    """Every image (.jpg/.jpeg/.png) under ``folder``, recursively, in sorted path order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def utm_from_names(paths: list[Path], what: str) -> np.ndarray:
    """(N, 2) (east, north) parsed from ``@east@north@...`` file names; an error names the first bad file."""
    utm = np.empty((len(paths), 2), dtype=np.float64)
    for i, path in enumerate(paths):
        fields = path.name.split("@")
        try:
            utm[i] = float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            raise ValueError(f"{what}: file name {path.name!r} ({path}) lacks @<utm_east>@<utm_north>@; "
                             f"expected layout: {LAYOUT}") from None
    return utm


class FolderDataset(EvalDataset):
    """A data set in the generic folder format: database then queries, both in sorted path order.

    ``name`` defaults to the root folder's name (e.g. ``tokyo247``); ``pos_radius`` is in metres.
    """

    def __init__(self, root: str | Path, transform: Optional[Callable] = None, pos_radius: float = 25.0,
                 name: Optional[str] = None):
        root = Path(root)
        name = name or root.resolve().name
        folders = {part: root / "images" / "test" / part for part in ("database", "queries")}
        for part, folder in folders.items():
            if not folder.is_dir():
                raise FileNotFoundError(f"{name}: {part} folder {folder} not found. Expected layout: {LAYOUT}")
        db_paths, q_paths = (list_images(folders[part]) for part in ("database", "queries"))
        for part, paths in (("database", db_paths), ("queries", q_paths)):
            if not paths:
                raise FileNotFoundError(f"{name}: no images ({', '.join(EXTENSIONS)}) under {folders[part]}. "
                                        f"Expected layout: {LAYOUT}")
        if pos_radius <= 0:
            raise ValueError(f"{name}: pos_radius must be positive (metres), got {pos_radius}")
        db_utm = utm_from_names(db_paths, name)
        q_utm = utm_from_names(q_paths, name)
        self.root = root
        self.pos_radius = float(pos_radius)
        super().__init__(name, db_paths, q_paths, positives_within(db_utm, q_utm, pos_radius), transform,
                         utm=np.concatenate([db_utm, q_utm]))
