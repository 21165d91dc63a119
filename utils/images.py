"""Reading an image file as people see it: upright (EXIF orientation), 8-bit RGB, errors naming the file,
and never more decoded pixels than ``max_image_pixels()``.

The pixel limit is checked on the file's header (width x height, read without decoding), so a file of a
few hundred kB that would decode to gigabytes (a 25000 x 25000 PNG) is refused as an unreadable image
before any pixel is decoded. The default is Pillow's own limit (``MAX_IMAGE_PIXELS``, 89,478,485: a
256 MiB RGB image, where PIL-based pipelines already warn): photos up to 89 MP, so every 48/50/64 MP phone
sensor. Larger images (108 and 200 MP phone modes, full-size street-view panoramas) need
``VPR_MAX_IMAGE_PIXELS``, e.g. ``VPR_MAX_IMAGE_PIXELS=200000000``; an environment variable, so that the
DataLoader's worker processes read the same limit.
"""
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from .errors import ConfigError, DataError, NotFoundError

MAX_IMAGE_PIXELS = 89_478_485  # Pillow's default (Image.MAX_IMAGE_PIXELS)
MAX_IMAGE_PIXELS_ENV = "VPR_MAX_IMAGE_PIXELS"
UNREADABLE_HINT = ("Replace the file, or set skip_unreadable (--data.skip_unreadable true) to leave unreadable "
                   "images out.")
# PIL modes of single-channel images deeper than 8 bits (16-bit PNG/TIFF): scaled to 8 bits, not clipped
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def max_image_pixels() -> int:
    """The most pixels (width x height) an image may decode to: ``$VPR_MAX_IMAGE_PIXELS``, else
    ``MAX_IMAGE_PIXELS``."""
    value = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip().replace("_", "")
    if not value:
        return MAX_IMAGE_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{MAX_IMAGE_PIXELS_ENV}={os.environ[MAX_IMAGE_PIXELS_ENV]!r}: give the most pixels an "
                          f"image may have, a positive whole number such as 200000000")
    return int(value)


def open_image(file: str | Path | BinaryIO, path: str | Path) -> Image.Image:
    """The image in ``file`` (a path or a binary stream), opened lazily: only its header is read. DataError
    naming ``path`` when it is not an image or has more than ``max_image_pixels()`` pixels."""
    limit = max_image_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own check (an error at twice its limit) must not refuse first
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we decide, below
            img = Image.open(file)
    except FileNotFoundError as err:
        raise NotFoundError(f"image not found: {path}") from err
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(found.group(1)):,} pixels" if found else f"more than {2 * limit:,} pixels"
        raise DataError(f"cannot read image {path}: {pixels}, over the limit of {limit:,} decoded pixels "
                        f"({MAX_IMAGE_PIXELS_ENV} raises it). {UNREADABLE_HINT}") from None
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise DataError(f"cannot read image {path}: {err}. {UNREADABLE_HINT}") from err
    width, height = img.size
    if width * height > limit:
        img.close()
        raise DataError(f"cannot read image {path}: {width} x {height} = {width * height:,} pixels, over the limit "
                        f"of {limit:,} decoded pixels ({MAX_IMAGE_PIXELS_ENV} raises it). {UNREADABLE_HINT}")
    return img


def to_rgb(img: Image.Image, path: str | Path) -> Image.Image:
    """``img`` decoded (its first frame), upright by its EXIF orientation, 16-bit scaled to 8 bits, as RGB;
    DataError naming ``path`` when it does not decode."""
    try:
        img = ImageOps.exif_transpose(img)
        if img.mode in _DEEP_MODES:
            # 16-bit range (a mode "I" PNG holds 0..65535): keep the top 8 bits instead of clipping at 255
            img = Image.fromarray((np.asarray(img, dtype=np.int64).clip(0, 65535) >> 8).astype(np.uint8))
        return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise DataError(f"cannot read image {path}: {err}. {UNREADABLE_HINT}") from err


def load_image(path: str | Path) -> Image.Image:
    """The RGB image at ``path``, turned upright by its EXIF orientation (phone photos are stored sideways
    with a tag saying so), 16-bit images scaled to 8 bits. An unreadable file, or one of more than
    ``max_image_pixels()`` pixels, raises DataError naming it."""
    with open_image(path, path) as img:
        return to_rgb(img, path)
