"""Reading an image file as people see it: upright (EXIF orientation), 8-bit RGB, errors naming the file."""
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import DataError, NotFoundError

# PIL modes of single-channel images deeper than 8 bits (16-bit PNG/TIFF): scaled to 8 bits, not clipped
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def load_image(path: str | Path) -> Image.Image:
    """The RGB image at ``path``, turned upright by its EXIF orientation (phone photos are stored sideways
    with a tag saying so), 16-bit images scaled to 8 bits. An unreadable file raises DataError naming it."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in _DEEP_MODES:
                # 16-bit range (a mode "I" PNG holds 0..65535): keep the top 8 bits instead of clipping at 255
                img = Image.fromarray((np.asarray(img, dtype=np.int64).clip(0, 65535) >> 8).astype(np.uint8))
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise NotFoundError(f"image not found: {path}") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}. Replace the file, or pass skip_unreadable "
                        f"(--data.skip_unreadable true) to leave unreadable images out.") from err
