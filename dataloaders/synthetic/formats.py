"""The files the generator writes, byte-stable (same content -> same bytes) and atomic (utils.files)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from utils.files import atomic_path, atomic_write_bytes, atomic_write_text

JPEG_QUALITY = 90
# savemat stamps the creation time into the 116-byte header text: a fixed text keeps the bytes stable (it
# names the generator's former single module; changing it would change every .mat written)
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by dataloaders/synthetic.py".ljust(116)


def write_jpeg(path: Path, image: np.ndarray) -> None:
    """Write ``image`` ((H, W, 3) uint8) as a JPEG at fixed quality."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
    atomic_write_bytes(path, buf.getvalue())


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts with the same keys, in column order) as CSV text, values written as given."""
    lines = [",".join(rows[0])] + [",".join(str(v) for v in r.values()) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_mat(path: Path, variables: dict) -> None:
    """``savemat(variables)`` with a fixed header text."""
    buf = io.BytesIO()
    savemat(buf, variables)
    data = bytearray(buf.getvalue())
    data[:len(MAT_HEADER)] = MAT_HEADER
    atomic_write_bytes(path, bytes(data))


def write_npy(path: Path, array: np.ndarray) -> None:
    """``np.save(array)``; object arrays (ragged index lists) are pickled, as MSLS's ``pIdx`` is."""
    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=array.dtype == object)
