"""Reading images, with errors that name the file."""
import os
from pathlib import Path
from typing import Iterable

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

UNREADABLE_HINT = ("Replace or remove the file (for evaluation sets, the ground truth must be regenerated "
                   "without it).")


def load_image(path: str | Path) -> Image.Image:
    """The RGB image at ``path``; an unreadable file raises an error naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise RuntimeError(f"cannot read image {path}: {err}. {UNREADABLE_HINT}") from err


def read_bytes(path: str | Path) -> Tensor:
    """The file at ``path`` as a 1-D uint8 tensor (what torchvision's decoders take); errors name the file."""
    try:
        with open(path, "rb") as f:
            return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    except OSError as err:
        raise RuntimeError(f"cannot read image {path}: {err}. {UNREADABLE_HINT}") from err
    except ValueError:  # frombuffer of an empty file
        raise RuntimeError(f"cannot read image {path}: the file is empty. {UNREADABLE_HINT}") from None


def decode_rgb(data: Tensor, path: str | Path) -> Tensor:
    """Encoded image bytes (JPEG, PNG, ...) -> uint8 (3, H, W) RGB, the pixels PIL's ``convert("RGB")``
    gives for a JPEG (both use libjpeg-turbo); an undecodable file raises an error naming ``path``."""
    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise RuntimeError(f"cannot read image {path}: {err}. {UNREADABLE_HINT}") from err


def check_files_exist(paths: Iterable[str | Path], what: str, layout: str) -> None:
    """Raise FileNotFoundError naming the first missing files of ``paths`` (``what`` names the data set)."""
    missing = [str(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{what}: {len(missing)} image(s) missing, e.g. {missing[:3]}. Expected layout: {layout}")
