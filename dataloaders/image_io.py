"""Checking that a data set's image files exist, with errors that name them."""
import os
from pathlib import Path
from typing import Iterable

from utils.errors import NotFoundError


def check_files_exist(paths: Iterable[str | Path], what: str, layout: str) -> None:
    """Raise NotFoundError naming the first missing files of ``paths`` (``what`` names the data set)."""
    missing = [str(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise NotFoundError(f"{what}: {len(missing)} image(s) missing, e.g. {missing[:3]}. Expected layout: {layout}")
