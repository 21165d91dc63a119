"""Reading images, with errors that name the file."""
import os
from pathlib import Path
from typing import Iterable

from PIL import Image


def load_image(path: str | Path) -> Image.Image:
    """The RGB image at ``path``; an unreadable file raises an error naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise RuntimeError(f"cannot read image {path}: {err}. Replace or remove the file "
                           f"(for evaluation sets, the ground truth must be regenerated without it).") from err


def check_files_exist(paths: Iterable[str | Path], what: str, layout: str) -> None:
    """Raise FileNotFoundError naming the first missing files of ``paths`` (``what`` names the data set)."""
    missing = [str(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{what}: {len(missing)} image(s) missing, e.g. {missing[:3]}. Expected layout: {layout}")
