"""Reading image files for the datasets: bytes, decoded to uint8 tensors, with errors that name the file."""
import os
from pathlib import Path
from typing import Iterable

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from utils.errors import DataError, NotFoundError

UNREADABLE_HINT = ("Replace the file, or set skip_unreadable (--data.skip_unreadable true) to leave unreadable "
                   "images out.")


def read_bytes(path: str | Path) -> Tensor:
    """The file at ``path`` as a 1-D uint8 tensor (what torchvision's decoders take); errors name the file."""
    try:
        with open(path, "rb") as f:
            return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    except FileNotFoundError:
        raise NotFoundError(f"image not found: {path}") from None
    except OSError as err:
        raise DataError(f"cannot read image {path}: {err}. {UNREADABLE_HINT}") from err
    except ValueError:  # frombuffer of an empty file
        raise DataError(f"cannot read image {path}: the file is empty. {UNREADABLE_HINT}") from None


def decode_rgb(data: Tensor, path: str | Path) -> Tensor:
    """Encoded image bytes (JPEG, PNG, ...) -> uint8 (3, H, W) RGB, the pixels PIL's ``convert("RGB")``
    gives for a JPEG (both use libjpeg-turbo), turned upright by the EXIF orientation (phone photos),
    16-bit images scaled to 8 bits; an undecodable file raises DataError naming ``path``."""
    try:
        image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as err:
        raise DataError(f"cannot read image {path}: {err}. {UNREADABLE_HINT}") from err
    if image.dtype == torch.uint16:  # 16-bit PNG: keep the top 8 bits instead of clipping
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def check_files_exist(paths: Iterable[str | Path], what: str, layout: str) -> None:
    """Raise NotFoundError naming the first missing files of ``paths`` (``what`` names the data set)."""
    missing = [str(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise NotFoundError(f"{what}: {len(missing)} image(s) missing, e.g. {missing[:3]}. Expected layout: {layout}")
