"""Reading image files for the datasets: bytes, decoded to uint8 tensors, with errors that name the file.

Every file's header is read first (``utils.images.open_image``: its format and size, no pixels): an image
over the decoded-pixel limit (``VPR_MAX_IMAGE_PIXELS``) is refused like an unreadable one before it is
decoded. JPEG, PNG and still WebP are decoded by torchvision (libjpeg-turbo, libpng, libwebp); the other
formats Pillow reads (TIFF, BMP, GIF's first frame, animated WebP's first frame, AVIF, PPM) by Pillow.
"""
import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from utils.errors import DataError, NotFoundError
from utils.images import UNREADABLE_HINT, open_image, to_rgb

# what the folder sets and ``models.inference`` list as images (any case): every format decode_rgb reads
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif",
                    ".ppm", ".pgm", ".pbm", ".pnm")
# Pillow's names of the formats torchvision decodes (MPO: a camera's multi-picture JPEG, read as its first)
_TORCHVISION_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")

__all__ = ["IMAGE_EXTENSIONS", "UNREADABLE_HINT", "check_files_exist", "check_image", "decode_rgb", "read_bytes"]


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


def _header(data: Tensor, path: str | Path):
    """The image of the encoded bytes ``data``, header only (format, size); DataError naming ``path`` when it
    is not an image or is over the pixel limit."""
    return open_image(io.BytesIO(memoryview(data.numpy())), path)


def check_image(data: Tensor, path: str | Path) -> None:
    """DataError naming ``path`` when the encoded bytes ``data`` are not an image or would decode to more
    pixels than the limit (header only: for bytes decoded later, on the device)."""
    _header(data, path).close()


def decode_rgb(data: Tensor, path: str | Path) -> Tensor:
    """Encoded image bytes (JPEG, PNG, WebP, TIFF, BMP, GIF ...) -> uint8 (3, H, W) RGB, the pixels PIL's
    ``convert("RGB")`` gives for a JPEG (both use libjpeg-turbo), turned upright by the EXIF orientation
    (phone photos), 16-bit images scaled to 8 bits; an undecodable file, or one over the pixel limit, raises
    DataError naming ``path``."""
    with _header(data, path) as header:
        if header.format not in _TORCHVISION_FORMATS or getattr(header, "n_frames", 1) > 1:
            # Pillow's formats, and animations (torchvision decodes every GIF frame and no animated WebP)
            return torch.from_numpy(np.array(to_rgb(header, path))).permute(2, 0, 1).contiguous()
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
