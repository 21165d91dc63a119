"""(N, D) arrays in ``.npy`` files read and written by blocks of rows, so that memory follows the block, not N.

Rows are moved with positioned reads and writes (``os.pread``/``os.pwrite``), not through a memory map:
every page of a mapped file that was touched counts in the process's resident memory until it is unmapped,
so reading a 16 GB descriptor file through ``np.load(mmap_mode='r')`` shows 16 GB resident even though
only one block is in use. ``NpyRows`` holds an open file and a byte offset; what is resident is what the
caller keeps of the blocks it reads.

    rows = NpyRows("db.npy")                # (N, D) float32 or float16, nothing read yet
    for start, block in row_blocks(rows, 8192):
        ...                                 # (<= 8192, D) float32 in memory
    kept = rows.take(np.flatnonzero(ok))    # a selection, still on disk
"""
import hashlib
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

# rows per block when a caller does not say (32 MB at 4096-d float32)
BLOCK_ROWS = 2048


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, byte offset of the data) of the .npy file at ``path``; C order only."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"{path}: .npy format version {version} is not supported")
        shape, fortran, dtype = read(f)
        if fortran or dtype.hasobject:
            raise ValueError(f"{path}: rows of a Fortran-ordered or object array cannot be read by position")
        return tuple(shape), dtype, f.tell()


class NpyRows:
    """Read-only rows of an (N, D) ``.npy`` file on disk; ``rows`` (sorted indices) selects some of them,
    which are then rows 0..len-1. Indexing (an int, a slice of step 1, an index array) returns an
    in-memory array of the stored dtype; ``np.asarray`` reads all of it (fine for small sets)."""

    def __init__(self, path: str | Path, rows: Optional[np.ndarray] = None):
        self.path = Path(path)
        shape, self.dtype, self._offset = _header(self.path)
        if len(shape) != 2:
            raise ValueError(f"{self.path}: expected an (N, D) array, found shape {shape}")
        self._total, self._dim = shape
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._fd: Optional[int] = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self._total if self._rows is None else len(self._rows), self._dim)

    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        part = "" if self._rows is None else f", {len(self._rows)} of {self._total} rows"
        return f"NpyRows({str(self.path)!r}, {self.shape}, {self.dtype}{part})"

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def __getstate__(self):  # picklable (DataLoader workers, multiprocessing): the file is opened again
        state = dict(self.__dict__)
        state["_fd"] = None
        return state

    def _read_span(self, start: int, stop: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """File rows [start, stop) as an array of the stored dtype (into ``out`` when given)."""
        row_bytes = self._dim * self.dtype.itemsize
        out = np.empty((stop - start, self._dim), dtype=self.dtype) if out is None else out
        view, done, want = memoryview(out).cast("B"), 0, (stop - start) * row_bytes
        while done < want:
            got = os.preadv(self._file(), [view[done:]], self._offset + start * row_bytes + done)
            if got == 0:
                raise ValueError(f"{self.path}: the file ends before row {stop} (truncated?)")
            done += got
        return out

    def _read_file_rows(self, rows: np.ndarray) -> np.ndarray:
        """The file rows ``rows`` (any order), each run of consecutive rows read straight into the result
        (no copy of the block: memory is the block's)."""
        out = np.empty((len(rows), self._dim), dtype=self.dtype)
        if not len(rows):
            return out
        ascending = bool(np.all(np.diff(rows) > 0))
        order = np.arange(len(rows)) if ascending else np.argsort(rows, kind="stable")
        ordered = rows[order]
        breaks = np.r_[0, np.flatnonzero(np.diff(ordered) != 1) + 1, len(rows)]
        for a, b in zip(breaks[:-1], breaks[1:]):
            if ascending:
                self._read_span(int(ordered[a]), int(ordered[b - 1]) + 1, out[a:b])
            else:
                out[order[a:b]] = self._read_span(int(ordered[a]), int(ordered[b - 1]) + 1)
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of this selection, in memory (stored dtype)."""
        start, stop = max(0, start), min(stop, len(self))
        if stop <= start:
            return np.empty((0, self._dim), dtype=self.dtype)
        if self._rows is None:
            return self._read_span(start, stop)
        return self._read_file_rows(self._rows[start:stop])

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            i = int(item) + (len(self) if item < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {item} of {len(self)}")
            return self.read(i, i + 1)[0]
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            return self.read(start, stop)
        index = np.asarray(item)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.astype(np.int64)
        index = np.where(index < 0, index + len(self), index)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        return self._read_file_rows(index if self._rows is None else self._rows[index])

    def __array__(self, dtype=None, copy=None):
        out = self.read(0, len(self))
        return out if dtype is None else out.astype(dtype, copy=False)

    def take(self, indices: Sequence[int]) -> "NpyRows":
        """The rows at ``indices`` (sorted, unique) of this selection, as a selection on disk."""
        indices = np.asarray(indices, dtype=np.int64)
        return NpyRows(self.path, indices if self._rows is None else self._rows[indices])


def read_rows(array, start: int, stop: int, dtype=np.float32) -> np.ndarray:
    """Rows [start, stop) of ``array`` (an ndarray, a memmap or ``NpyRows``) as a C-contiguous array of ``dtype``."""
    block = array.read(start, stop) if isinstance(array, NpyRows) else array[start:stop]
    return np.ascontiguousarray(block, dtype=dtype)


def row_blocks(array, rows: int = BLOCK_ROWS, dtype=np.float32) -> Iterator[tuple[int, np.ndarray]]:
    """(start, rows [start, start + rows) as ``dtype``) over ``array``, in order."""
    for start in range(0, len(array), max(1, rows)):
        yield start, read_rows(array, start, start + rows, dtype)


def drop_rows(array, indices: Sequence[int]):
    """``array`` without the rows at ``indices``: a copy for an in-memory array, a selection for ``NpyRows``."""
    indices = np.asarray(indices, dtype=np.int64)
    if not len(indices):
        return array
    if isinstance(array, NpyRows):
        return array.take(np.setdiff1d(np.arange(len(array)), indices))
    return np.delete(array, indices, axis=0)


def create_npy(path: str | Path, shape: tuple[int, int], dtype) -> int:
    """A new ``.npy`` file at ``path`` with a header for ``shape`` and ``dtype`` and its data region allocated
    (sparse: unwritten rows read as zeros); returns the byte offset of row 0."""
    dtype = np.dtype(dtype)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                 "fortran_order": False, "shape": tuple(shape)})
        offset = f.tell()
        f.truncate(offset + int(np.prod(shape)) * dtype.itemsize)
    return offset


def write_rows(path: str | Path, start: int, block: np.ndarray, sync: bool = True) -> None:
    """Write ``block`` as rows ``start``.. of the ``.npy`` file at ``path`` (made by ``create_npy``), in its
    dtype; ``sync``: on disk before returning (a finished block survives a crash)."""
    shape, dtype, offset = _header(Path(path))
    block = np.ascontiguousarray(block, dtype=dtype)
    if block.ndim != 2 or block.shape[1] != shape[1] or start + len(block) > shape[0]:
        raise ValueError(f"{path}: rows {start}..{start + len(block)} of width {block.shape[1:]} do not fit {shape}")
    fd = os.open(path, os.O_WRONLY)
    try:
        data, done = memoryview(block).cast("B"), 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], offset + start * shape[1] * dtype.itemsize + done)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def rows_sha256(array, rows: int = BLOCK_ROWS) -> str:
    """sha256 of the bytes of ``array``'s rows in C order and their stored dtype (``NpyRows`` read by blocks)."""
    digest = hashlib.sha256()
    for start in range(0, len(array), rows):
        block = array.read(start, start + rows) if isinstance(array, NpyRows) else array[start:start + rows]
        digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))
    return digest.hexdigest()
