"""All the data sets, once per (scale, seed, generator version), in folders that are safe to share.

``root/<scale>-seed<seed>-v<version>/`` holds ``gsv_cities/``, ``pitts/``, ``msls/``, ``benchmarks/`` (the
stand-ins of the other benchmarks, laid out as a ``--data.benchmarks_root``) and a ``.complete`` marker. It is built in a hidden sibling ``.<set>.<host>.<pid>.<random>.tmp`` and moved into place by one
rename once complete: a reader finds either no folder or a complete one. Generated data is never deleted
or rewritten; another scale, seed or generator version gets its own folder. Generators of one set take
turns on the lock file ``.<set>.lock``; where the file system ignores the lock both build, the first
rename wins and the other finds the same bytes in place and drops its copy. A generator that died leaves
its temporary folder behind: the next generator of that set on the same host removes it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from utils.files import atomic_write_text, host_id, is_running, temporary_prefix, temporary_writer

from .benchmarks import make_benchmarks
from .gsv_cities import SYNTHETIC_CITIES, make_gsv_cities
from .msls import MSLS_CITIES, make_msls
from .pittsburgh import DEFAULT_SPLITS, make_pittsburgh

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the atomic rename alone keeps concurrent generators safe
    fcntl = None

# bump when the generator's output changes: another version's data sets then live in other folders
GENERATOR_VERSION = 3

# scale -> sizes; "tiny" keeps every city and split so that configs work unchanged on it
SCALES = {
    "default": {
        "gsv_places_per_city": 250,
        "pitts": DEFAULT_SPLITS,
        "msls": (250, 60),
        "benchmarks": {"street": (120, 40), "pairs": 40, "frames": 200},
    },
    "tiny": {
        "gsv_places_per_city": 8,
        "pitts": {"pitts30k_val": (60, 20), "pitts30k_test": (30, 10),
                  "pitts250k_val": (30, 10), "pitts250k_test": (30, 10)},
        "msls": (30, 8),
        "benchmarks": {"street": (20, 6), "pairs": 6, "frames": 60},
    },
}

PARTS = ("gsv_cities", "pitts", "msls", "benchmarks")
_ROOT_SETTINGS = {"gsv_cities": "gsv_root", "pitts": "pitts_root", "msls": "msls_root", "benchmarks": "benchmarks_root"}
_MARKER = ".complete"


def set_folder(root: str | Path, scale: str = "default", seed: int = 0) -> Path:
    """``root/<scale>-seed<seed>-v<GENERATOR_VERSION>``: the folder of one generated set."""
    if scale not in SCALES:
        raise ValueError(f"unknown synthetic scale {scale!r}; choose one of {sorted(SCALES)}")
    return Path(root) / f"{scale}-seed{int(seed)}-v{GENERATOR_VERSION}"


def synthetic_roots(root: str | Path, scale: str = "default", seed: int = 0) -> dict[str, Path]:
    """The data-root settings of VPRDataModule -> the folders ``generate_synthetic(root, scale, seed)`` writes.

    Returns {'gsv_root': ..., 'pitts_root': ..., 'msls_root': ..., 'benchmarks_root': ...}; generates nothing.
    """
    folder = set_folder(root, scale, seed)
    return {_ROOT_SETTINGS[part]: folder / part for part in PARTS}


def generate_synthetic(root: str | Path, scale: str = "default", seed: int = 0,
                       workers: int | None = None) -> dict[str, Path]:
    """Write all the data sets under ``root`` once; returns {'gsv_cities': ..., 'pitts': ..., 'msls': ...,
    'benchmarks': ...}.

    They live in ``set_folder(root, scale, seed)``; if it is complete, nothing is written. Safe to call
    from several processes at once (see the module's docstring); an interrupted call leaves nothing.
    ``scale`` is 'default' (training demo) or 'tiny' (tests, seconds). ``workers``: rendering processes
    (None: one per CPU, at most 4); the bytes written do not depend on it. A folder at the set's place
    that this generator did not write is never touched: FileExistsError names it.
    """
    folder = set_folder(root, scale, seed)
    paths = {part: folder / part for part in PARTS}
    marker = json.loads(json.dumps({"scale": scale, "seed": int(seed), "version": GENERATOR_VERSION,
                                    "sizes": SCALES[scale]}))
    if _is_complete(folder, marker):
        return paths
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _lock(folder.parent / f".{folder.name}.lock"):
        if _is_complete(folder, marker):  # the generator we waited for wrote it
            return paths
        _remove_stale_temporaries(folder)
        tmp = folder.parent / f"{temporary_prefix(folder)}{secrets.token_hex(4)}.tmp"
        tmp.mkdir()  # with the umask's permissions, as the published folder should have
        try:
            sizes = SCALES[scale]
            make_gsv_cities(tmp / "gsv_cities", SYNTHETIC_CITIES, sizes["gsv_places_per_city"], seed, workers=workers)
            make_pittsburgh(tmp / "pitts", sizes["pitts"], seed, workers=workers)
            make_msls(tmp / "msls", MSLS_CITIES, *sizes["msls"], seed=seed, workers=workers)
            make_benchmarks(tmp / "benchmarks", sizes["benchmarks"], seed, workers=workers)
            atomic_write_text(tmp / _MARKER, json.dumps(marker))
            _publish(tmp, folder, marker)
        finally:
            if tmp.exists():  # this generation failed, or another one published the same set first
                shutil.rmtree(tmp)
    return paths


def _is_complete(folder: Path, marker: dict) -> bool:
    """Whether ``folder`` holds the set ``marker`` describes; False if absent, an error if it holds anything else."""
    if not folder.exists():
        return False
    try:
        found = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        found = None
    if found != marker:
        raise FileExistsError(
            f"{folder} exists but does not hold this generator's complete {marker['scale']!r} set of seed "
            f"{marker['seed']} (its {_MARKER} marker is missing or differs): it is left untouched; move it away "
            f"or choose another folder for the synthetic data")
    return True


def _publish(tmp: Path, folder: Path, marker: dict) -> None:
    """Move the complete set ``tmp`` to ``folder`` in one rename, unless an identical set got there first."""
    try:
        os.rename(tmp, folder)  # fails on an existing non-empty folder: nothing is ever replaced
    except OSError:
        if not _is_complete(folder, marker):
            raise


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing, never deleted) for the block."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: the rename alone keeps generators safe
            pass
        yield  # closing the file releases the lock


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporary folders of ``folder``'s set left by dead generators of this host."""
    prefix = f".{folder.name}."
    for tmp in folder.parent.glob(f"{prefix}*.tmp"):
        writer = temporary_writer(tmp.name)
        if (tmp.is_dir() and writer is not None and tmp.name.startswith(f"{prefix}{writer[0]}.")
                and writer[0] == host_id() and not is_running(writer[1])):
            shutil.rmtree(tmp)
