"""Using a trained model in one's own code: load it, embed images, search, and cache descriptors.

    from utils.inference import load_model, embed, search
    model = load_model("LOGS/run/checkpoints/last.ckpt")             # architecture from the checkpoint
    db = embed(model, "my_photos/database")                           # (N, D) float32, a folder or a list
    q = embed(model, ["query1.jpg", "query2.jpg"])
    distances, indices = search(db, q, k=5)                           # (M, 5) each, nearest first

A bare state_dict (e.g. the authors' release) needs its architecture: ``load_model(path,
config="configs/mixvpr_resnet50_4096.yaml")`` or keyword arguments (backbone_arch, layers_to_crop,
agg_arch, agg_config, image_size). The evaluation (eval.py) and retrieval (retrieve.py) commands are
built on these functions.
"""
import hashlib
import json
import os
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dataloaders.eval.folder import EXTENSIONS, list_images
from dataloaders.image_io import load_image
from dataloaders.transforms import eval_transform

from .architecture import describe_architecture, infer_architecture
from .checkpoint import ARCHITECTURE_ARGS, model_from_state, read_state_dict
from .recall import search_nearest

# bump when embedding changes in a way that changes descriptors: older cache files are not reused
EMBEDDING_VERSION = 1
PRECISIONS = {"32": None, "32-true": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


# ---------------------------------------------------------------------------------------------- model
def read_config(path: str | Path) -> dict:
    """VPRModel arguments from a training config: its ``model:`` section, plus ``data.image_size``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path} (expected a YAML file like configs/mixvpr_resnet50_4096.yaml)")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config.get("model"), dict):
        raise ValueError(f"{path} has no 'model:' section; expected one like configs/mixvpr_resnet50_4096.yaml")
    arguments = dict(config["model"])
    image_size = (config.get("data") or {}).get("image_size")
    if image_size is not None and "image_size" not in arguments:
        arguments["image_size"] = list(image_size)
    return arguments


def load_model(checkpoint: str | Path, config: Optional[str | Path] = None, device: str = "cpu", **overrides):
    """Eval-mode VPRModel on ``device`` from our Lightning ``.ckpt`` (architecture from its saved
    hyper-parameters) or a bare state_dict (architecture from ``config``, a YAML with a ``model:``
    section, and/or ``overrides`` such as backbone_arch, layers_to_crop, agg_arch, agg_config,
    image_size, recall_k, faiss_gpu). ``overrides`` win over the config, which wins over saved values.

    Weights that do not fit raise an error listing the missing and unexpected keys and the
    architecture the weights do fit.
    """
    state_dict, hyper_parameters = read_state_dict(checkpoint)
    return build_model(state_dict, hyper_parameters, str(checkpoint), config, device, **overrides)


def build_model(state_dict: dict, hyper_parameters: dict, source: str, config: Optional[str | Path] = None,
                device: str = "cpu", **overrides):
    """As ``load_model``, from a state_dict and hyper-parameters already read (``source`` names them)."""
    arguments = {**(read_config(config) if config else {}), **overrides}
    if not hyper_parameters and not set(arguments) & set(ARCHITECTURE_ARGS):
        raise ValueError(
            f"{source} is a bare state_dict without hyper-parameters: give the architecture it was trained with "
            f"(a config with a model: section, or {', '.join(ARCHITECTURE_ARGS)}; on the command line --config "
            f"or --backbone-arch, --layers-to-crop, --agg-arch, --agg-config, --image-size).\n"
            f"{describe_architecture(infer_architecture(state_dict))}")
    try:
        model = model_from_state(state_dict, hyper_parameters, source, **arguments)
    except (ValueError, RuntimeError) as err:
        raise type(err)(f"{err}\n{describe_architecture(infer_architecture(state_dict))}") from err
    return model.to(resolve_device(device))


def resolve_device(device: Optional[str]) -> torch.device:
    """``'auto'``/None: the first GPU when there is one, else the CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's state_dict (names, dtypes, shapes and values): a changed weight changes it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- images
def image_paths(images: str | Path | Sequence[str | Path]) -> list[str]:
    """A folder (every .jpg/.jpeg/.png under it, sorted), a text file with one path per line, or a list."""
    if isinstance(images, (str, Path)):
        path = Path(images)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(EXTENSIONS)}) under {path}")
            return [str(p) for p in found]
        if path.suffix.lower() == ".txt" and path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if path.is_file():
            return [str(path)]
        raise FileNotFoundError(f"{path} is neither a folder of images, an image nor a .txt list of image paths")
    return [str(p) for p in images]


class ImageFiles(Dataset):
    """Items ``(image, index, readable)`` of a list of image files, transformed.

    An unreadable file raises an error naming it, unless ``skip_unreadable``: then the item is a zero
    image with ``readable`` False, and the caller drops it.
    """

    def __init__(self, paths: Sequence[str], transform: Callable, image_size: Sequence[int],
                 skip_unreadable: bool = False):
        self.paths = list(paths)
        self.transform = transform
        self.image_size = tuple(image_size)
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = load_image(self.paths[index])
        except RuntimeError:
            if not self.skip_unreadable:
                raise
            return torch.zeros(3, *self.image_size), index, False
        return self.transform(image), index, True


@torch.no_grad()
def embed_paths(model, paths: Sequence[str], image_size: Optional[Sequence[int]] = None, batch_size: int = 32,
                device: Optional[str] = None, precision: str = "32", num_workers: int = 0,
                skip_unreadable: bool = False, progress: bool = True, desc: str = "embedding",
                channels_last: Optional[bool] = None) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors (N, D) float32, indices of the unreadable images) of the images at ``paths``.

    Images are resized to ``image_size`` (default: the model's) and normalised as in evaluation.
    Rows of unreadable images (only with ``skip_unreadable``; otherwise the first one stops the run
    with its path) are NaN. ``precision``: '32', '16-mixed' or 'bf16-mixed' (autocast).
    ``channels_last`` (None: on the CPU) runs the convolutions in the channels-last layout: on the CPU
    faster and with half the page faults at batch 32 (README, "Cost per model"); same descriptors to rounding.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    image_size = tuple(image_size or model.image_size)
    target = resolve_device(device) if device is not None else next(model.parameters()).device
    model = model.to(target).eval()
    channels_last = target.type == "cpu" if channels_last is None else channels_last
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dataset = ImageFiles(paths, eval_transform(image_size), image_size, skip_unreadable)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=target.type == "cuda")
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(target.type, dtype=dtype) if dtype is not None else nullcontext()
    out = np.full((len(dataset), model.descriptor_dim), np.nan, dtype=np.float32)
    unreadable = []
    for images, indices, readable in tqdm(loader, desc=desc, unit="batch", disable=not progress,
                                          leave=False, dynamic_ncols=True):
        with autocast:
            descriptors = model(images.to(target, non_blocking=True, memory_format=memory_format))
        descriptors = descriptors.float().cpu().numpy()
        indices, readable = indices.numpy(), readable.numpy().astype(bool)
        out[indices[readable]] = descriptors[readable]
        unreadable.extend(indices[~readable].tolist())
    return out, np.asarray(sorted(unreadable), dtype=np.int64)


def embed(model, images: str | Path | Sequence[str | Path], image_size: Optional[Sequence[int]] = None,
          batch_size: int = 32, device: Optional[str] = None, precision: str = "32", num_workers: int = 0,
          skip_unreadable: bool = False, progress: bool = True) -> np.ndarray:
    """(N, D) float32 L2-normalised descriptors of ``images`` (a folder, a .txt list or a list of
    paths; row i is image i, a progress bar shows the batches). With ``skip_unreadable`` the rows of
    unreadable images are NaN instead of stopping the run. See ``embed_paths`` for the settings."""
    return embed_paths(model, image_paths(images), image_size, batch_size, device, precision, num_workers,
                       skip_unreadable, progress)[0]


def search(db_descriptors: np.ndarray, q_descriptors: np.ndarray, k: int = 10,
           faiss_gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(squared L2 distances, database indices), both (M, min(k, N)), nearest first, for (M, D)
    queries against (N, D) database descriptors; exact search with faiss, as in evaluation. On
    L2-normalised descriptors the cosine similarity is ``1 - distance / 2``."""
    if np.isnan(db_descriptors).any() or np.isnan(q_descriptors).any():
        raise ValueError("descriptors contain NaN rows (images skipped as unreadable): drop them before searching")
    k = min(k, len(db_descriptors))
    return search_nearest(db_descriptors, q_descriptors, k, faiss_gpu=faiss_gpu, return_distances=True)


# ---------------------------------------------------------------------------------------------- cache
def cache_key(fingerprint: str, paths: Sequence[str], image_size: Sequence[int], precision: str) -> dict:
    """What a set of descriptors depends on: the weights, the ordered image list, image size, precision."""
    return {
        "version": EMBEDDING_VERSION,
        "weights_sha256": fingerprint,
        "image_size": [int(s) for s in image_size],
        "precision": "32" if PRECISIONS.get(precision) is None else precision,
        "num_images": len(paths),
        "images_sha256": hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest(),
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, descriptors)
    os.replace(tmp, path)
    meta = {"label": label, "key": key, "unreadable": [int(i) for i in unreadable]}
    tmp_meta = path.with_name(f".{path.stem}.{os.getpid()}.tmp.json")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, path.with_suffix(".json"))


def cached_embed_paths(model, paths: Sequence[str], cache_dir: Optional[str | Path], label: str,
                       fingerprint: Optional[str] = None, image_size: Optional[Sequence[int]] = None,
                       precision: str = "32", skip_unreadable: bool = False, **embed_kwargs
                       ) -> tuple[np.ndarray, np.ndarray, bool]:
    """``embed_paths`` through a descriptor cache: (descriptors, unreadable indices, reused).

    The cache file is keyed by the weights' fingerprint (computed when not given), the ordered image
    paths, the image size and the precision, so a changed checkpoint or size is never taken for a
    cached one. A cached result with unreadable images is not reused unless ``skip_unreadable``.
    ``cache_dir`` None: no cache.
    """
    image_size = tuple(image_size or model.image_size)
    if cache_dir is None:
        descriptors, unreadable = embed_paths(model, paths, image_size, precision=precision,
                                              skip_unreadable=skip_unreadable, desc=label, **embed_kwargs)
        return descriptors, unreadable, False
    key = cache_key(fingerprint or weights_fingerprint(model), paths, image_size, precision)
    path = cache_file(cache_dir, label, key)
    cached = load_cached(path, key)
    if cached is not None and (skip_unreadable or len(cached[1]) == 0):
        return cached[0], cached[1], True
    descriptors, unreadable = embed_paths(model, paths, image_size, precision=precision,
                                          skip_unreadable=skip_unreadable, desc=label, **embed_kwargs)
    save_cached(path, key, descriptors, unreadable, label)
    return descriptors, unreadable, False


__all__ = ["load_model", "build_model", "read_config", "embed", "embed_paths", "search", "image_paths", "weights_fingerprint",
           "cache_key", "cached_embed_paths", "resolve_device"]
