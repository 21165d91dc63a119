"""Using a trained network in one's own code: embed images, search, with a descriptor cache.

    from main import load_model
    from models.inference import embed, search
    net = load_model("LOGS/run/version_0/checkpoints/last.ckpt")     # architecture from the checkpoint
    db = embed(net, "my_photos/database")                              # (N, D) float32, a folder or a list
    q = embed(net, ["query1.jpg", "query2.jpg"])
    distances, indices = search(db, q, k=5)                            # (M, 5) each, nearest first

The evaluation (eval.py) and retrieval (retrieve.py) commands are built on these functions.
"""
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dataloaders.eval.folder import EXTENSIONS, list_images
from dataloaders.image_list import ImageList, collate_by_size
from dataloaders.transforms import normalize_batch
from dataloaders.preprocessing import Preprocessing
from utils.distributed import gather_objects, process_rank, world_size
from utils.errors import CheckpointError, ConfigError, NotFoundError
from utils.files import write_error
from utils.npy_rows import NpyRows, row_blocks
from utils.recall import search_nearest

from .descriptor_cache import CHUNK_IMAGES, PartialCache, cache_file, cache_key, load_cached, network_identity, note
from .loading import resolve_device

PRECISIONS = {"32": None, "32-true": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def image_paths(images: str | Path | Sequence[str | Path]) -> list[str]:
    """A folder (every image under it, sorted: ``dataloaders.eval.folder.list_images``), a text file with one
    path per line, or a list."""
    if isinstance(images, (str, Path)):
        path = Path(images)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise NotFoundError(f"no images ({', '.join(EXTENSIONS)}) under {path}")
            return [str(p) for p in found]
        if path.suffix.lower() == ".txt" and path.is_file():
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if path.is_file():
            return [str(path)]
        raise NotFoundError(f"{path} is neither a folder of images, an image nor a .txt list of image paths")
    return [str(p) for p in images]


def evaluation_preprocessing(model, image_size: Optional[Sequence[int]] = None) -> Preprocessing:
    """The preprocessing ``model`` is evaluated with: its record (``model.preprocessing``, which checkpoints
    and releases carry), else its image size with ImageNet's mean/std; at ``image_size`` when given."""
    record = getattr(model, "preprocessing", None) or getattr(getattr(model, "net", None), "preprocessing", None)
    if not isinstance(record, Preprocessing):
        record = Preprocessing(tuple(model.image_size), *(tuple(getattr(model, a)) for a in ("mean", "std")
                                                           if hasattr(model, a)))
    return record.with_size(image_size)


def check_descriptors(descriptors, unreadable: np.ndarray, model, name: str,
                      paths: Optional[Sequence[str]] = None, precision: str = "32") -> None:
    """CheckpointError naming ``name`` when an image that was read got a non-finite descriptor: that is the
    model's doing (NaN or inf weights, or a forward pass that overflowed), not an unreadable image.
    ``descriptors``: in memory or on disk (``NpyRows``), checked block by block."""
    readable = np.ones(len(descriptors), dtype=bool)
    readable[np.asarray(unreadable, dtype=np.int64)] = False
    finite = np.empty(len(descriptors), dtype=bool)
    for start, block in row_blocks(descriptors, dtype=getattr(descriptors, "dtype", np.float32)):
        finite[start:start + len(block)] = np.isfinite(block).all(axis=1)
    bad = np.flatnonzero(readable & ~finite)
    if not len(bad):
        return
    example = f" (e.g. {paths[bad[0]]})" if paths is not None else ""
    tensors = {k: t for k, t in model.state_dict().items() if t.is_floating_point()}
    broken = [k for k, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if broken:
        cause = (f"its weights hold NaN or inf ({len(broken)} of {len(tensors)} tensors, e.g. {broken[0]}): a run "
                 f"that diverged? Use an earlier checkpoint")
    else:
        cause = ("its weights are finite, so the forward pass overflowed"
                 + (f" at precision {precision}: use --precision 32" if precision not in ("32", "32-true") else ""))
    raise CheckpointError(f"{name}: non-finite (NaN or inf) descriptors for {len(bad)} of {int(readable.sum())} "
                          f"readable images{example}; {cause}")


@torch.no_grad()
def embed_batches(model, paths: Sequence[str], batches: Sequence[Sequence[int]], image_size: Optional[Sequence[int]] = None,
                  device: Optional[str] = None, precision: str = "32", num_workers: int = 0,
                  skip_unreadable: bool = False, progress: bool = True, desc: str = "embedding",
                  channels_last: Optional[bool] = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(indices, descriptors (B, D) float32, readable (B,) bool) of each batch of image indices in ``batches``,
    in order: the forward pass of ``embed_paths``, one loader for all of them (a batch of images of several
    sizes goes through the network one size at a time). Rows of unreadable images (``skip_unreadable``) are
    NaN. See ``embed_paths`` for the settings."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    preprocessing = evaluation_preprocessing(model, image_size)
    target = resolve_device(device) if device is not None else next(model.parameters()).device
    model = model.to(target).eval()
    channels_last = target.type == "cpu" if channels_last is None else channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dataset = ImageList(paths, preprocessing.transform(), skip_unreadable, preprocessing.image_size)
    loader = DataLoader(dataset, batch_sampler=[list(b) for b in batches], num_workers=num_workers,
                        pin_memory=target.type == "cuda", collate_fn=collate_by_size)
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(target.type, dtype=dtype) if dtype is not None else nullcontext()
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False, dynamic_ncols=True):
        parts = []
        for images, indices, readable in batch:  # one group per image size
            with autocast:
                descriptors = model(model_input(images, model, target, channels_last))
            descriptors = descriptors.float().cpu().numpy()
            readable = readable.numpy().astype(bool)
            descriptors[~readable] = np.nan
            parts.append((indices.numpy(), descriptors, readable))
        yield tuple(np.concatenate(column) for column in zip(*parts))


def consecutive_batches(start: int, stop: int, batch_size: int) -> list[range]:
    """Batches of ``batch_size`` consecutive indices covering [start, stop)."""
    return [range(i, min(i + batch_size, stop)) for i in range(start, stop, batch_size)]


def embed_paths(model, paths: Sequence[str], image_size: Optional[Sequence[int]] = None, batch_size: int = 32,
                device: Optional[str] = None, precision: str = "32", num_workers: int = 0,
                skip_unreadable: bool = False, progress: bool = True, desc: str = "embedding",
                channels_last: Optional[bool] = None, name: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors (N, D) float32, indices of the unreadable images) of the images at ``paths``, in memory.

    Images are resized as the model's evaluation preprocessing says (``evaluation_preprocessing``: its
    size, or each image at its own resolution), at ``image_size`` when given, and normalised as in
    evaluation; images of different sizes go through the network in batches of one size each. Rows of
    unreadable images (only with ``skip_unreadable``; otherwise the first one stops the run with its path)
    are NaN; a non-finite row of an image that was read is an error naming the model (``name``, default its
    class). ``precision``: '32', '16-mixed' or 'bf16-mixed' (autocast).
    ``channels_last`` (None: on the CPU) runs the convolutions in the channels-last layout: on the CPU
    faster and with half the page faults at batch 32 (README, "Cost per model"); same descriptors to rounding.
    ``cached_embed_paths`` streams to disk instead, in memory bounded by a chunk.
    """
    out = np.full((len(paths), model.descriptor_dim), np.nan, dtype=np.float32)
    unreadable = []
    for indices, descriptors, readable in embed_batches(
            model, paths, consecutive_batches(0, len(paths), batch_size), image_size, device, precision, num_workers,
            skip_unreadable, progress, desc, channels_last):
        out[indices] = descriptors
        unreadable.extend(indices[~readable].tolist())
    unreadable = np.asarray(sorted(unreadable), dtype=np.int64)
    check_descriptors(out, unreadable, model, name or f"the {type(model).__name__}", paths, precision)
    return out, unreadable


def model_input(images: torch.Tensor, model, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A uint8 (B, 3, H, W) batch on ``device``, normalised with the model's mean/std (ImageNet's by default)."""
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    if hasattr(model, "normalize"):
        return model.normalize(images)
    return normalize_batch(images)


def embed(model, images: str | Path | Sequence[str | Path], image_size: Optional[Sequence[int]] = None,
          batch_size: int = 32, device: Optional[str] = None, precision: str = "32", num_workers: int = 0,
          skip_unreadable: bool = False, progress: bool = True) -> np.ndarray:
    """(N, D) float32 L2-normalised descriptors of ``images`` (a folder, a .txt list or a list of
    paths; row i is image i, a progress bar shows the batches). With ``skip_unreadable`` the rows of
    unreadable images are NaN instead of stopping the run. See ``embed_paths`` for the settings."""
    return embed_paths(model, image_paths(images), image_size, batch_size, device, precision, num_workers,
                       skip_unreadable, progress)[0]


def search(db_descriptors, q_descriptors: np.ndarray, k: int = 10, faiss_gpu: bool = False,
           searcher=None) -> tuple[np.ndarray, np.ndarray]:
    """(squared L2 distances, database indices), both (M, min(k, N)), nearest first, for (M, D)
    queries against (N, D) database descriptors (in memory or on disk, ``NpyRows``); exact search with
    faiss, as in evaluation, unless ``searcher`` (``utils.search.Searcher``) says otherwise. On
    L2-normalised descriptors the cosine similarity is ``1 - distance / 2``."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if any(np.isnan(block).any() for part in (db_descriptors, q_descriptors) for _, block in row_blocks(part)):
        raise ValueError("descriptors contain NaN rows (images skipped as unreadable): drop them before searching")
    k = min(k, len(db_descriptors))
    return search_nearest(db_descriptors, q_descriptors, k, faiss_gpu=faiss_gpu, return_distances=True,
                          searcher=searcher)


def cached_embed_paths(model, paths: Sequence[str], cache_dir: Optional[str | Path], label: str,
                       identity: Optional[str] = None, image_size: Optional[Sequence[int]] = None,
                       precision: str = "32", skip_unreadable: bool = False, dtype: str = "float32",
                       chunk_size: int = CHUNK_IMAGES, batch_size: int = 32, name: Optional[str] = None,
                       **embed_kwargs) -> tuple[np.ndarray | NpyRows, np.ndarray, bool]:
    """``embed_paths`` through the descriptor cache (``models.descriptor_cache``): (descriptors,
    unreadable indices, reused). The key holds ``identity`` (``network_identity(model)``, computed when
    None), the preprocessing applied, the images and the stored ``dtype`` (float32 or float16); a cached
    file is checked before use. A cached result with unreadable images is not reused unless
    ``skip_unreadable``. ``cache_dir`` None: no cache, descriptors in memory.

    With a cache, descriptors are written to it chunk by chunk of ``chunk_size`` images as they are
    computed and returned on disk (``utils.npy_rows.NpyRows``, read by blocks): memory holds one chunk,
    whatever the number of images, and a killed run resumes from its finished chunks. Under
    torch.distributed (several processes), each process embeds every world-th chunk still to do and all
    of them return the same array: the chunks, and the batches within them, are those of one process."""
    preprocessing = evaluation_preprocessing(model, image_size)
    name = name or f"the {type(model).__name__}"
    if cache_dir is None:
        return (*embed_paths(model, paths, image_size, batch_size=batch_size, precision=precision,
                             skip_unreadable=skip_unreadable, desc=label, name=name, **embed_kwargs), False)
    # a LightningModule (VPRModel) is identified by the network it wraps, not by its training machinery
    network = model.net if isinstance(getattr(model, "net", None), torch.nn.Module) else model
    key = cache_key(identity or network_identity(network), paths, preprocessing.as_dict(), precision, dtype)
    path = cache_file(cache_dir, label, key)
    rank, world = process_rank(), world_size()
    cached = load_cached(path, key, model.descriptor_dim) if rank == 0 else None
    if gather_objects(cached is not None and (skip_unreadable or len(cached[1]) == 0))[0]:
        if rank == 0:  # a run that embeds nothing is fast: say why, and where from
            print(f"{label}: descriptors of {len(paths)} image(s) from the cache {path} (same network, images, "
                  f"preprocessing and precision; --cache false embeds again)")
        return (*(cached if rank == 0 else (NpyRows(path), _recorded_unreadable(path))), True)
    partial = PartialCache(path, key, model.descriptor_dim, chunk_size)
    todo = None
    if rank == 0:
        try:
            todo = partial.prepare()
        except OSError as err:
            note(f"descriptor cache {path.parent} cannot be written ({type(err).__name__}: {err}); the descriptors "
                 f"are not cached")
    todo = gather_objects(todo)[0]
    if todo is None:
        return (*embed_paths(model, paths, image_size, batch_size=batch_size, precision=precision,
                             skip_unreadable=skip_unreadable, desc=label, name=name, **embed_kwargs), False)
    mine = todo[rank::world]
    batches = [b for chunk in mine for b in consecutive_batches(*partial.rows(chunk), batch_size)]
    batch_counts = [len(consecutive_batches(*partial.rows(chunk), batch_size)) for chunk in mine]
    stream = embed_batches(model, paths, batches, image_size, precision=precision,
                           skip_unreadable=skip_unreadable, desc=label, **embed_kwargs)
    for chunk, count in zip(mine, batch_counts):
        start, stop = partial.rows(chunk)
        block = np.full((stop - start, model.descriptor_dim), np.nan, dtype=np.float32)
        unreadable = []
        for _ in range(count):
            indices, descriptors, readable = next(stream)
            block[indices - start] = descriptors
            unreadable.extend(indices[~readable].tolist())
        check_descriptors(block, np.asarray(unreadable, dtype=np.int64) - start, model, name, paths[start:stop],
                          precision)
        try:
            partial.write(chunk, block, unreadable)
        except OSError as err:
            raise write_error(partial.partial, err, int(np.prod(partial.shape)) * partial.dtype.itemsize,
                              "descriptor cache file", "make room there, set --cache_dir to another folder or "
                              "--cache false; the chunks already written are kept, and the next run resumes "
                              "from them") from None
    gather_objects(None)  # every chunk is on disk
    if rank == 0:
        descriptors, unreadable = partial.finish(label)
    gather_objects(None)  # the array is in place
    if rank != 0:
        descriptors, unreadable = NpyRows(path), _recorded_unreadable(path)
    return descriptors, unreadable, False


def _recorded_unreadable(path: Path) -> np.ndarray:
    return np.asarray(json.loads(path.with_suffix(".json").read_text())["unreadable"], dtype=np.int64)
