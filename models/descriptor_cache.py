"""A cache of descriptors on disk, so that evaluating or searching again embeds nothing that did not change.

A cached array is reused only when everything it depends on is the same: the weights (sha256 of the
state_dict), the ordered image list and each image's size and modification time (a file replaced in
place is embedded again; one ``os.stat`` per image: 0.33 s for 52,691 files, 2.25 s for 526,856,
``python bench/dataset_setup.py``), the image size and the
precision. Files: ``<label>-<16 hex digits of the key>.npy`` and a ``.json`` beside it, written last.
"""
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from utils.files import atomic_path, atomic_write_text
from utils.files import remove_orphan_temporaries

# bump when embedding changes in a way that changes descriptors: older cache files are not reused
EMBEDDING_VERSION = 3


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's state_dict (names, dtypes, shapes and values): a changed weight changes it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def images_fingerprint(paths: Sequence[str]) -> str:
    """sha256 of the ordered paths with each file's size and modification time (-1 for a missing file)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
            identity = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            identity = "-1"
        digest.update(f"{path}|{identity}\n".encode())
    return digest.hexdigest()


def cache_key(fingerprint: str, paths: Sequence[str], image_size: Sequence[int], precision: str) -> dict:
    """What a set of descriptors depends on: the weights, the images (paths and content identity), the
    image size and the precision (``32`` for full precision, whatever its spelling)."""
    return {
        "version": EMBEDDING_VERSION,
        "weights_sha256": fingerprint,
        "image_size": [int(s) for s in image_size],
        "precision": "32" if precision in ("32", "32-true") else precision,
        "num_images": len(paths),
        "images_sha256": images_fingerprint(paths),
    }


def cache_file(cache_dir: str | Path, label: str, key: dict) -> Path:
    """``<cache_dir>/<label>-<16 hex digits of the key>.npy``: a different key never shares a file."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_") or "descriptors"
    return Path(cache_dir) / f"{safe}-{digest}.npy"


def load_cached(path: Path, key: dict) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(descriptors, unreadable indices) stored at ``path`` under ``key``, or None when absent or stale."""
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        descriptors = np.load(path)
    except (ValueError, OSError):
        return None
    if meta.get("key") != key or len(descriptors) != key["num_images"]:
        return None
    return descriptors, np.asarray(meta.get("unreadable", []), dtype=np.int64)


def save_cached(path: Path, key: dict, descriptors: np.ndarray, unreadable: np.ndarray, label: str) -> None:
    """Write ``descriptors`` then the key beside them (``.json``, written last: it marks the pair complete)."""
    remove_orphan_temporaries(path.parent)  # what writers of this host that were killed left in the cache
    with atomic_path(path) as tmp:
        np.save(tmp, descriptors)
    meta = {"label": label, "key": key, "unreadable": [int(i) for i in unreadable]}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
