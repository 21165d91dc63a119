"""A database of images indexed for search once and queried many times: retrieve.py's ``--database_index``.

The folder holds what querying needs and what says where it came from:

    index.json          written last (its presence marks a complete index): the model (network identity,
                        checkpoint, label), the preprocessing and precision, the search settings, the image
                        list's fingerprint, each file's sha256, what building took
    images.json         the database images in index order (readable ones only)
    index.faiss         the faiss index (any index_factory string but Flat; binary: index_binary format, with
                        the centre of its codes in index.faiss.centre.npy)
    database-*.npy/json Flat (exact search): the descriptors themselves, a checked descriptor-cache entry
    whitening.vt        the PCA whitening, when one was learned (a float index holds its own copy)

Opening it checks that it fits the run: another model (network identity), preprocessing or precision, or
another image list, is an error naming both sides; a file whose bytes changed is an error too.
"""
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from utils.errors import CheckpointError, ConfigError, DataError
from utils.files import atomic_write_text, file_sha256
from utils.npy_rows import NpyRows
from utils.search import EXACT, FaissIndex, Searcher, SearchIndex, Whitening

from .descriptor_cache import images_fingerprint, load_cached

FORMAT = 1
RECORD = "index.json"
# search settings a query may change on an existing index: how it is searched, not what it holds
QUERY_TIME = ("params", "faiss_gpu", "memory_budget")


class DatabaseIndex:
    """An opened or built database index: ``search(queries, k)`` -> (distances, indices into ``images``)."""

    def __init__(self, folder: Path, record: dict, images: list[str], index: SearchIndex):
        self.folder, self.record, self.images, self.index = folder, record, images, index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, min(k, len(self.images)))

    def describe(self) -> str:
        """One line: which index, of how many images, built with which model."""
        r = self.record
        return (f"database index {self.folder} ({Searcher(**r['search']).describe()}; {len(self.images):,} images; "
                f"model {r['model']['label']})")


def _kept(descriptors, unreadable: Sequence[int]):
    """The rows of readable images (in memory: a copy; on disk: a selection); DataError when none is left."""
    kept = np.setdiff1d(np.arange(len(descriptors)), np.asarray(unreadable, dtype=np.int64))
    if not len(kept):
        raise DataError(f"no readable database image among the {len(descriptors):,} given")
    return descriptors.take(kept) if isinstance(descriptors, NpyRows) else descriptors[kept]


def model_record(label: str, checkpoint: str, identity: str) -> dict:
    return {"label": label, "checkpoint": str(checkpoint), "network_sha256": identity}


def _name(model: dict) -> str:
    return f"{model['label']} ({model['checkpoint']}, network {model['network_sha256'][:12]})"


def open_index(folder: Path, model: dict, preprocessing: dict, precision: str, searcher: Searcher,
               db_paths: Optional[Sequence[str]]) -> DatabaseIndex:
    """The index in ``folder``, checked against this run: ``model`` (label, checkpoint, network identity),
    the preprocessing and precision, the search settings (``QUERY_TIME`` ones may differ; the index's own
    are used) and, when given, the database images ``db_paths``."""
    record = json.loads((folder / RECORD).read_text())
    if record.get("format") != FORMAT:
        raise DataError(f"{folder / RECORD}: index format {record.get('format')!r}, this version reads {FORMAT}: "
                        f"build it again into another folder")
    built = record["model"]
    if built["network_sha256"] != model["network_sha256"]:
        raise CheckpointError(f"database index {folder} was built with the model {_name(built)}; this run uses "
                              f"{_name(model)}: query it with that model, or give another --database_index folder "
                              f"to build one for this model")
    for what, mine in (("preprocessing", preprocessing), ("precision", precision)):
        if record[what] != mine:
            raise ConfigError(f"database index {folder} was built with {what} {record[what]}; this run uses {mine}: "
                              f"use the same settings, or give another --database_index folder")
    stored = Searcher(**record["search"])
    if searcher.index not in (EXACT, stored.index) or (searcher.whitening and searcher.whitening != stored.whitening):
        raise ConfigError(f"database index {folder} holds a {stored.index!r} index"
                          f"{f' whitened on {stored.whitening}' if stored.whitening else ''}; this run asks for "
                          f"{searcher.index!r}{f' whitened on {searcher.whitening}' if searcher.whitening else ''}: "
                          f"drop --search.index, or give another --database_index folder to build that one")
    if db_paths is not None:
        fingerprint = images_fingerprint(db_paths)
        if fingerprint != record["database"]["images_sha256"]:
            raise DataError(f"database index {folder} was built from another image list ({record['database']['images']:,} "
                            f"images, fingerprint {record['database']['images_sha256'][:12]}); --database now gives "
                            f"{len(db_paths):,} (fingerprint {fingerprint[:12]}; paths, sizes and modification times "
                            f"count): leave --database out to query the index as built, or give another folder")
    for name, digest in record["files"].items():
        if file_sha256(folder / name) != digest:
            raise DataError(f"database index {folder}: {name} differs from the sha256 recorded when it was built "
                            f"(changed or damaged): build the index again into another folder")
    images = json.loads((folder / "images.json").read_text())
    used = Searcher(**{**record["search"], **{k: getattr(searcher, k) for k in QUERY_TIME}})
    whitening = Whitening.load(folder / "whitening.vt") if (folder / "whitening.vt").is_file() else None
    if used.exact:
        stored = record["descriptors"]
        found = load_cached(folder / stored["file"], stored["key"], stored["dim"])
        if found is None:
            raise DataError(f"database index {folder}: its descriptors {stored['file']} fail their checks (see the note "
                            f"above): build the index again into another folder")
        index = used.build(_kept(found[0], record["database"]["unreadable"]), whitening)
    else:
        index = FaissIndex.load(folder / "index.faiss", used, whitening, record["stats"])
    return DatabaseIndex(folder, record, images, index)


def build_index(folder: Path, model: dict, preprocessing: dict, precision: str, searcher: Searcher,
                db_paths: Sequence[str], embed: Callable, whitening: Optional[Whitening] = None) -> DatabaseIndex:
    """Embed ``db_paths`` (``embed(paths, cache_dir, label)`` -> (descriptors, unreadable, reused); Flat: into
    ``folder`` itself, whose descriptors are the index), build the searcher's index, write the folder
    (``index.json`` last) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptors, unreadable, _ = embed(db_paths, folder if searcher.exact else None, "database")
    if searcher.exact and not isinstance(descriptors, NpyRows):
        raise ConfigError("an exact (Flat) database index stores its descriptors: it needs the descriptor cache "
                          "(drop --cache false)")
    rows = _kept(descriptors, unreadable)
    start = time.perf_counter()
    index = searcher.build(rows, whitening)
    files = {}
    if isinstance(index, FaissIndex):
        for path in index.save(folder / "index.faiss"):
            files[path.name] = file_sha256(path)
    if whitening is not None:
        whitening.save(folder / "whitening.vt")
        files["whitening.vt"] = file_sha256(folder / "whitening.vt")
    images = [db_paths[i] for i in np.setdiff1d(np.arange(len(db_paths)), unreadable)]
    atomic_write_text(folder / "images.json", json.dumps(images))
    files["images.json"] = file_sha256(folder / "images.json")
    record = {"format": FORMAT, "model": model, "preprocessing": preprocessing, "precision": precision,
              "search": {**searcher.as_dict(), "faiss_gpu": False}, "database": {
                  "images": len(db_paths), "images_sha256": images_fingerprint(db_paths),
                  "unreadable": [int(i) for i in unreadable]},
              "files": files, "stats": {**index.stats, "seconds_build": round(time.perf_counter() - start, 3)},
              "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    if searcher.exact:  # checked by the descriptor cache's own record when opened
        record["descriptors"] = {"file": descriptors.path.name, "dim": int(descriptors.shape[1]),
                                 "key": json.loads(descriptors.path.with_suffix(".json").read_text())["key"]}
    atomic_write_text(folder / RECORD, json.dumps(record, indent=1))
    return DatabaseIndex(folder, record, images, index)


def database_index(folder: Optional[Path], model: dict, preprocessing: dict, precision: str, searcher: Searcher,
                   db_paths: Optional[Sequence[str]], embed: Callable,
                   whitening: Callable[[], Optional[Whitening]] = lambda: None) -> DatabaseIndex:
    """The database index of retrieve.py: opened from ``folder`` when it holds one (checked), else built there
    from ``db_paths`` (``folder`` None: built in memory, not kept). ``whitening`` learns the whitening when
    an index is built."""
    if folder is not None and (folder / RECORD).is_file():
        return open_index(folder, model, preprocessing, precision, searcher, db_paths)
    if db_paths is None:
        raise ConfigError(f"--database_index {folder} holds no index yet: give --database to build it")
    if folder is None:
        descriptors, unreadable, _ = embed(db_paths, None, "database")
        images = [db_paths[i] for i in np.setdiff1d(np.arange(len(db_paths)), unreadable)]
        record = {"model": model, "search": searcher.as_dict()}
        return DatabaseIndex(None, record, images, searcher.build(_kept(descriptors, unreadable), whitening()))
    return build_index(folder, model, preprocessing, precision, searcher, db_paths, embed, whitening())
