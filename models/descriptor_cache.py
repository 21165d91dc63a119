"""A cache of descriptors on disk, so that evaluating or searching again embeds nothing that did not change.

A cached array is reused only when everything it depends on is the same: the network as it computes
(``network_identity``: every module's class and settings, its parameters and buffers), the evaluation
preprocessing actually applied (image size, resize policy, mean/std), the precision, and the ordered
image list with each image's size and modification time (a file replaced in place is embedded again;
one ``os.stat`` per image: 0.33 s for 52,691 files, 2.25 s for 526,856, ``python bench/dataset_setup.py``).
Files: ``<label>-<16 hex digits of the key>.npy`` and a ``.json`` beside it, written last, that records
the key, the array's shape, dtype and sha256, the unreadable images and whether the rows are
L2-normalised. A file is checked against that record before use; anything off is a miss (a note, then
the images are embedded again), never a result.

Descriptors are written as they are computed, chunk by chunk (``PartialCache``): ``<stem>.partial.npy``
takes each finished chunk's rows and ``<stem>.chunks/`` one record per chunk (its rows' sha256 and
unreadable images), so memory holds one chunk whatever the size of the set, and a run that was killed
resumes from the chunks it finished (each checked against its record). The array is stored as float32,
or float16 at half the disk (``dtype``, part of the key); it is read back by blocks (``utils.npy_rows``).
"""
import enum
import functools
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from utils.files import atomic_write_text, remove_orphan_temporaries
from utils.npy_rows import NpyRows, create_npy, row_blocks, rows_sha256, write_rows

# bump when embedding changes in a way that changes descriptors: older cache files are not reused
EMBEDDING_VERSION = 4
# what every nn.Module holds in its __dict__ (hooks, the registries of parameters, buffers and children,
# the training flag): not settings of the computation; parameters, buffers and children are hashed apart
_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))
# rows of a normalised descriptor array have this L2 norm within this tolerance (float16 autocast included)
NORM_TOLERANCE = 1e-2
# how descriptors may be stored
DTYPES = ("float32", "float16")
# images per chunk of a streamed cache entry: what a killed run loses at most, and what memory holds
CHUNK_IMAGES = 4096


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's state_dict (names, dtypes, shapes and values): a changed weight changes it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        _hash_tensor(digest, name, tensor)
    return digest.hexdigest()


def _hash_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def _plain(value, depth: int = 0):
    """``value`` as deterministic JSON-able data: numbers, strings, containers of them; a class or function
    by its qualified name; any other object by its type's qualified name and its own plain attributes.
    Never an ``id()`` or an address, so two builds of the same settings give the same data."""
    if depth > 8:
        return "..."
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, enum.Enum):
        return f"{_qualname(type(value))}.{value.name}"
    if isinstance(value, (torch.dtype, torch.device, torch.memory_format, torch.Size)):
        return str(value)
    if isinstance(value, np.generic):
        return _plain(value.item(), depth + 1)
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        return _plain(value.tolist(), depth + 1)
    if isinstance(value, (torch.Tensor, np.ndarray)):  # held in a container: by its values
        array = (value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                 if isinstance(value, torch.Tensor) else np.ascontiguousarray(value).reshape(-1).view(np.uint8))
        return {"array": str(value.dtype), "shape": list(value.shape), "sha256": hashlib.sha256(array).hexdigest()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v, depth + 1) for v in value), key=json.dumps)
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, type) or isinstance(value, (types.FunctionType, types.BuiltinFunctionType,
                                                         types.MethodType)):
        return f"<{_qualname(value)}>"
    if isinstance(value, functools.partial):
        return {"partial": _plain(value.func, depth + 1), "args": _plain(value.args, depth + 1),
                "keywords": _plain(value.keywords, depth + 1)}
    if isinstance(value, torch.nn.Module):  # a module held outside the registry of children
        return {"module": _qualname(type(value)), "identity": network_identity(value)}
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        return {"type": _qualname(type(value)), **{k: _plain(v, depth + 1) for k, v in sorted(attributes.items())}}
    return {"type": _qualname(type(value))}


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', type(obj).__name__))}"


def network_identity(net: torch.nn.Module) -> str:
    """sha256 of everything ``net`` computes with: for every submodule in order, its name, its class's
    qualified name, its plain attributes (pooling sizes, flags such as DINOv2's return_token/norm_layer,
    VPRNet's preprocessing ...; not the training flag or hooks), and its parameters and buffers (names,
    dtypes, shapes, values). Settings that hold no weights change it as weights do; two builds of the
    same settings and weights give the same value."""
    digest = hashlib.sha256()
    for name, module in net.named_modules():
        settings = {}
        for key, value in sorted(vars(module).items()):
            if key in _MODULE_INTERNALS:
                continue
            if isinstance(value, torch.Tensor):  # a tensor outside the registries still computes
                _hash_tensor(digest, f"{name}.{key}", value)
            else:
                settings[key] = _plain(value)
        digest.update(f"{name}|{_qualname(type(module))}|{json.dumps(settings, sort_keys=True)}\n".encode())
        for kind, tensors in (("parameter", module._parameters), ("buffer", module._buffers)):
            for key, tensor in tensors.items():
                if tensor is not None:
                    _hash_tensor(digest, f"{kind}:{name}.{key}", tensor)
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


def cache_key(network: str, paths: Sequence[str], preprocessing: dict, precision: str, dtype: str = "float32") -> dict:
    """What a set of descriptors depends on: the network (``network_identity``), the images (paths and
    content identity), the evaluation preprocessing applied (``Preprocessing.as_dict()``), the
    precision (``32`` for full precision, whatever its spelling) and the stored dtype (float32, float16)."""
    if dtype not in DTYPES:
        raise ValueError(f"descriptors are stored as one of {DTYPES}, not {dtype!r}")
    return {
        "version": EMBEDDING_VERSION,
        "network_sha256": network,
        "preprocessing": _plain(preprocessing),
        "precision": "32" if precision in ("32", "32-true") else precision,
        "num_images": len(paths),
        "images_sha256": images_fingerprint(paths),
        "dtype": dtype,
    }


def key_digest(key: dict) -> str:
    """sha256 of a cache key (its JSON, sorted)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_file(cache_dir: str | Path, label: str, key: dict) -> Path:
    """``<cache_dir>/<label>-<16 hex digits of the key>.npy``: a different key never shares a file."""
    digest = key_digest(key)[:16]
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_") or "descriptors"
    return Path(cache_dir) / f"{safe}-{digest}.npy"


def array_sha256(array) -> str:
    """sha256 of an array's bytes (C order, its dtype), read block by block from an ``NpyRows`` file."""
    return rows_sha256(array)


def row_norms(descriptors) -> np.ndarray:
    """(N,) L2 norm of each row, block by block (memory-bounded; in memory or ``NpyRows``); a row with a NaN
    or inf has a non-finite norm."""
    out = np.empty(len(descriptors), dtype=np.float64)
    for start, block in row_blocks(descriptors, 8192):
        with np.errstate(over="ignore", invalid="ignore"):
            out[start:start + len(block)] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return out


def norms_are_one(norms: np.ndarray) -> bool:
    """Whether every norm is 1 within ``NORM_TOLERANCE`` (float16 autocast included)."""
    return bool(np.all(np.abs(norms - 1) <= NORM_TOLERANCE))


def note(message: str) -> None:
    """A one-line note on stderr: something was not as expected, and what is done instead."""
    print(f"note: {message}", file=sys.stderr)


def _problem(meta, descriptors, key: dict, dim: int) -> Optional[str]:
    """Why the cached pair (``meta`` from the .json, ``descriptors`` from the .npy) cannot be used, or None."""
    if not isinstance(meta, dict) or meta.get("key") != key:
        return "its record does not match these settings"
    shape, dtype = (key["num_images"], dim), key.get("dtype", "float32")
    if descriptors.shape != shape:
        return f"holds an array of shape {descriptors.shape}, expected {shape} ({key['num_images']} images x the model's {dim}-d)"
    if descriptors.dtype != np.dtype(dtype):
        return f"holds {descriptors.dtype} values, expected {dtype}"
    if [meta.get("shape"), meta.get("dtype")] != [list(shape), dtype] or meta.get("sha256") != array_sha256(descriptors):
        return "its bytes differ from those recorded beside it (sha256): changed or damaged after writing"
    unreadable = meta.get("unreadable")
    if not isinstance(unreadable, list) or not all(isinstance(i, int) and 0 <= i < shape[0] for i in unreadable):
        return "its record of unreadable images is malformed"
    norms = row_norms(descriptors)
    finite = np.isfinite(norms)
    expected = np.ones(shape[0], dtype=bool)
    expected[unreadable] = False
    if not np.array_equal(finite, expected):
        return (f"{int((finite != expected).sum())} row(s) are non-finite where images were readable, or finite "
                f"where they were not")
    if meta.get("normalized") and not norms_are_one(norms[finite]):
        return "rows of a model that L2-normalises do not have norm 1"
    return None


def load_cached(path: Path, key: dict, descriptor_dim: int) -> Optional[tuple[NpyRows, np.ndarray]]:
    """(descriptors on disk, unreadable indices) stored at ``path`` under ``key``, or None when absent, stale
    or not trustworthy: the array must be (num_images, ``descriptor_dim``) of the key's dtype with the
    recorded sha256, its non-finite rows exactly the recorded unreadable images, and, when recorded as
    normalised, the other rows of norm 1 (all checked block by block). A file that exists but fails a
    check gets a one-line note."""
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        descriptors = NpyRows(path)
        why = _problem(meta, descriptors, key, descriptor_dim)
    except (ValueError, OSError, EOFError, TypeError) as err:
        why = f"unreadable ({type(err).__name__}: {err})"
    if why is not None:
        note(f"{path}: {why}; embedding again")
        return None
    return descriptors, np.asarray(meta["unreadable"], dtype=np.int64)


class PartialCache:
    """A cache entry written chunk by chunk of ``chunk_size`` images: rows go to ``<stem>.partial.npy`` as
    each chunk is done, then a record of the chunk (key, rows, sha256 of their bytes, unreadable images) to
    ``<stem>.chunks/<chunk>.json``. ``prepare`` keeps what a killed writer finished (records that match
    the key and the bytes) and says which chunks are left; ``finish`` checks the whole array, moves it to
    ``path`` and writes its record (last). Chunks are disjoint, so several processes can write them."""

    def __init__(self, path: Path, key: dict, dim: int, chunk_size: int = CHUNK_IMAGES):
        self.path, self.key, self.chunk_size = Path(path), key, int(chunk_size)
        self.shape, self.dtype = (key["num_images"], int(dim)), np.dtype(key.get("dtype", "float32"))
        self.partial = self.path.with_name(self.path.stem + ".partial.npy")
        self.chunks = self.path.with_name(self.path.stem + ".chunks")
        self.digest = key_digest(key)

    @property
    def num_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_size)

    def rows(self, chunk: int) -> tuple[int, int]:
        """[start, stop) of chunk ``chunk``."""
        return chunk * self.chunk_size, min(self.shape[0], (chunk + 1) * self.chunk_size)

    def _record(self, chunk: int) -> Path:
        return self.chunks / f"{chunk:08d}.json"

    def prepare(self) -> list[int]:
        """Create the partial file (or keep the one a killed writer left) and return the chunks to embed;
        records that do not match (another chunk size, changed bytes) are removed with a note."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphan_temporaries(self.path.parent)  # what writers of this host that were killed left in the cache
        reuse = False
        if self.partial.is_file():
            try:
                probe = NpyRows(self.partial)
                reuse = probe.shape == self.shape and probe.dtype == self.dtype
            except (ValueError, OSError, EOFError):
                reuse = False
        if not reuse:
            shutil.rmtree(self.chunks, ignore_errors=True)
            create_npy(self.partial, self.shape, self.dtype)
        self.chunks.mkdir(exist_ok=True)
        done, dropped = set(), 0
        rows = NpyRows(self.partial)
        for record in sorted(self.chunks.glob("*.json")):
            try:
                meta = json.loads(record.read_text())
                chunk = int(record.stem)
                start, stop = self.rows(chunk)
                good = (meta.get("key_sha256") == self.digest and meta.get("chunk_size") == self.chunk_size
                        and meta.get("rows") == [start, stop] and chunk < self.num_chunks
                        and meta.get("sha256") == rows_sha256(rows.take(np.arange(start, stop))))
            except (ValueError, OSError, TypeError):
                good = False
            if good:
                done.add(chunk)
            else:
                record.unlink(missing_ok=True)
                dropped += 1
        if dropped:
            note(f"{self.chunks}: {dropped} chunk record(s) of an interrupted run do not match (another chunk size, or "
                 f"changed bytes): those chunks are embedded again")
        if done:
            note(f"{self.path.name}: resuming an interrupted embedding, {len(done)} of {self.num_chunks} chunk(s) "
                 f"already done")
        return [c for c in range(self.num_chunks) if c not in done]

    def write(self, chunk: int, descriptors: np.ndarray, unreadable: Sequence[int]) -> None:
        """Store chunk ``chunk``'s rows (on disk before its record) and its record; ``unreadable``: indices
        in the whole set."""
        start, stop = self.rows(chunk)
        block = np.ascontiguousarray(descriptors, dtype=self.dtype)
        if block.shape != (stop - start, self.shape[1]):
            raise ValueError(f"chunk {chunk}: {block.shape} rows for [{start}, {stop}) x {self.shape[1]}")
        write_rows(self.partial, start, block)
        atomic_write_text(self._record(chunk), json.dumps({
            "key_sha256": self.digest, "chunk_size": self.chunk_size, "rows": [start, stop],
            "sha256": rows_sha256(block), "unreadable": [int(i) for i in unreadable]}))

    def finish(self, label: str) -> tuple[NpyRows, np.ndarray]:
        """The finished array moved to ``path`` with its record; (descriptors on disk, unreadable indices)."""
        unreadable = []
        for chunk in range(self.num_chunks):
            unreadable += json.loads(self._record(chunk).read_text())["unreadable"]
        unreadable = np.asarray(sorted(unreadable), dtype=np.int64)
        rows = NpyRows(self.partial)
        readable = np.ones(self.shape[0], dtype=bool)
        readable[unreadable] = False
        meta = {"label": label, "key": self.key, "shape": list(self.shape), "dtype": str(self.dtype),
                "sha256": array_sha256(rows), "unreadable": unreadable.tolist(),
                "normalized": bool(readable.any()) and norms_are_one(row_norms(rows)[readable])}
        self.path.with_suffix(".json").unlink(missing_ok=True)  # a stale record never describes the new array
        os.replace(self.partial, self.path)
        atomic_write_text(self.path.with_suffix(".json"), json.dumps(meta, indent=1))
        shutil.rmtree(self.chunks, ignore_errors=True)
        return NpyRows(self.path), unreadable


def usable_cache_dir(cache_dir: Optional[str | Path]) -> Optional[Path]:
    """``cache_dir`` when it can be created and written (checked by creating it and a file there, then
    removing what the check created), else None with a one-line note: evaluating without a cache beats
    failing after the whole embedding was computed."""
    if cache_dir is None:
        return None
    cache_dir = Path(cache_dir)
    created = [p for p in (cache_dir, *cache_dir.parents) if not p.exists()]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as err:
        note(f"descriptor cache {cache_dir} cannot be written ({type(err).__name__}: {err}); evaluating without "
             f"a cache (set --cache_dir to a writable folder, or --cache false)")
        return None
    finally:
        for folder in created:  # deepest first: the first save creates them again
            try:
                folder.rmdir()
            except OSError:
                break
    return cache_dir
