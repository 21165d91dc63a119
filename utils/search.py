"""Nearest-neighbour search of descriptors: exact (faiss flat) shard by shard within a memory budget, or any
faiss ``index_factory`` string, trained on a sample of the database and fed in blocks.

    searcher = Searcher()                                     # exact: what paper tables use
    distances, indices = searcher.search(database, queries, k=10)
    searcher = Searcher("IVF4096,PQ64", params="nprobe=32", memory_budget="4GB")
    index = searcher.build(database)                          # trained, filled block by block; index.stats
    distances, indices = index.search(queries, 10)

``database`` is an (N, D) array in memory or on disk (``utils.npy_rows.NpyRows``): it is read block by
block, never copied whole. Results are (M, k) squared L2 distances (Hamming bits for binary codes) and
database indices, nearest first; a missing neighbour (k > N) is index -1.

Exact search equals one ``faiss.IndexFlatL2`` over the whole database bit for bit, in distances and in the
order of ties (distance, then database index): each shard is searched with faiss's own ``knn`` (the
function behind ``IndexFlatL2.search``) and merged in a ``faiss.ResultHeap``, which keeps an earlier
(smaller) index among equal distances as the full search's heap does. faiss computes distances through
BLAS in blocks of ``distance_compute_blas_database_bs`` database rows once queries x dim reaches
``distance_compute_blas_threshold`` (one pair at a time below it); a shard that starts off a block
boundary rounds some dot products differently, so shards then hold a whole number of blocks. Queries are
held in memory and searched together (splitting them would change faiss's path below the threshold). With
fewer queries than faiss threads, faiss splits a large database by thread; its last bits then depend on
the database size, and sharded search agrees to rounding only.
"""
import hashlib
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import ConfigError
from .files import human_size
from .npy_rows import read_rows

EXACT = "Flat"
# binary index family of faiss (index_binary_factory): codes are the signs of the centred descriptor's components
BINARY = re.compile(r"B(Flat|IVF\d+(_HNSW\d+)?|HNSW\d+|Hash\d+(x\d+)?)")
# training sample when train_size is not given: faiss's k-means wants 39 to 256 points per centroid
DEFAULT_TRAIN = 100_000
TRAIN_PER_LIST = 64
EXAMPLES = "Flat, SQfp16, PCAR256,Flat, IVF4096,PQ64, IVF4096,PQ64,RFlat, HNSW32, BFlat, BIVF1024"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(value, setting: str = "memory_budget") -> Optional[int]:
    """A size in bytes from an int or a string such as '4GB', '512MiB', '2.5 GB' (GB = 10^9, GiB = 2^30)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        size = int(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(f"{setting}: {value!r} is not a size; write e.g. 4GB, 512MB, 8GiB or a number of bytes")
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ConfigError(f"{setting}: {value!r} must be positive")
    return size


def faiss_message(err: Exception) -> str:
    """The reason in a faiss error, without its C++ location."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    match = re.search(r" at \S+:\d+: (.*)$", text)
    return match.group(1) if match else text


def _gpu():
    import faiss

    from .recall import check_faiss_gpu

    check_faiss_gpu()  # a ConfigError saying what to do on a machine without one
    return faiss.StandardGpuResources()


def binarize(x: np.ndarray) -> np.ndarray:
    """(n, d) floats -> (n, ceil(d / 8)) uint8 codes: bit j is whether component j is positive (callers centre
    the vectors first)."""
    return np.packbits(np.asarray(x) > 0, axis=1)


class Whitening:
    """PCA whitening learned on a training set, then L2 normalisation (NetVLAD's 4096-d releases: PCA with
    whitening learned on Pitts30k-train): ``faiss.PCAMatrix`` with eigen_power -0.5."""

    BLOCK = 1024

    def __init__(self, pca, source: str = ""):
        self.pca, self.source = pca, source

    @classmethod
    def learn(cls, descriptors, dim: Optional[int] = None, source: str = "") -> "Whitening":
        """Learned on (n, D) ``descriptors`` (n > dim), to ``dim`` components (None: D)."""
        import faiss

        x = np.ascontiguousarray(descriptors, dtype=np.float32)
        dim = int(dim or x.shape[1])
        if not 0 < dim <= x.shape[1]:
            raise ConfigError(f"whitening_dim {dim} must be between 1 and the descriptor size {x.shape[1]}")
        if len(x) <= dim:
            raise ConfigError(f"PCA whitening to {dim} components needs more than {dim} training descriptors, got "
                              f"{len(x)}: give more training images or a smaller whitening_dim")
        pca = faiss.PCAMatrix(x.shape[1], dim, -0.5, False)
        pca.train(x)
        return cls(pca, source)

    @property
    def d_in(self) -> int:
        return self.pca.d_in

    @property
    def d_out(self) -> int:
        return self.pca.d_out

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(n, d_in) -> (n, d_out) whitened, L2-normalised float32; in blocks of ``BLOCK`` rows, so that a row
        gets the same bits whichever block of a sharded search it comes in (BLAS rounds by call shape)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((len(x), self.d_out), dtype=np.float32)
        for start in range(0, len(x), self.BLOCK):
            y = self.pca.apply(x[start:start + self.BLOCK])
            out[start:start + self.BLOCK] = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return out

    def sha256(self) -> str:
        """sha256 of the learned mean and matrix: what the whitening computes."""
        import faiss

        digest = hashlib.sha256()
        for part in (self.pca.mean, self.pca.A, self.pca.b):
            digest.update(faiss.vector_to_array(part).tobytes())
        return digest.hexdigest()

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_VectorTransform(self.pca, str(path))

    @classmethod
    def load(cls, path: Path, source: str = "") -> "Whitening":
        import faiss

        return cls(faiss.downcast_VectorTransform(faiss.read_VectorTransform(str(path))), source)

    def faiss_chain(self) -> list:
        """The whitening as faiss VectorTransforms (PCA, then L2 normalisation), for an IndexPreTransform."""
        import faiss

        return [self.pca, faiss.NormalizationTransform(self.d_out, 2.0)]


@dataclass
class Searcher:
    """How descriptors are searched: the faiss ``index_factory`` string and its settings.

    Args:
        index: ``Flat`` (exact, the reference of paper tables) or any faiss ``index_factory`` string
            (SQfp16, PCAR256,Flat, IVF4096,PQ64, IVF4096,PQ64,RFlat, HNSW32, ...); ``B...`` strings (BFlat,
            BIVF1024, BHNSW32) are faiss's binary index family on the signs of the descriptor (D bits),
            centred on the training sample's mean.
        params: search-time settings in faiss's ParameterSpace syntax, e.g. ``nprobe=32`` or
            ``efSearch=128`` (binary indexes: nprobe, efSearch).
        memory_budget: working memory of search (database rows held at once, queries, results), e.g.
            ``4GB``: exact search goes shard by shard within it, other indexes are filled block by block
            (the index itself is extra). None: no limit (one shard).
        train_size: database vectors an index that needs training (IVF, PQ, PCA) is trained on: a uniform
            sample without replacement (seeded); None: min(N, max(100,000, 64 x the IVF lists)).
        whitening: images of a training set (a folder or .txt list) to learn PCA whitening on, applied to
            database and queries before the index (eval.py and retrieve.py; None: none).
        whitening_dim: components kept by the whitening (None: all).
        faiss_gpu: search on the GPU (needs faiss-gpu).
        seed: the training sample's seed.
    """

    index: str = EXACT
    params: Optional[str] = None
    memory_budget: Optional[str] = None
    train_size: Optional[int] = None
    whitening: Optional[str] = None
    whitening_dim: Optional[int] = None
    faiss_gpu: bool = False
    seed: int = 0

    def __post_init__(self):
        self.index = str(self.index).strip()
        parse_bytes(self.memory_budget)
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(f"train_size must be positive, got {self.train_size}")

    @property
    def exact(self) -> bool:
        """Whether this is exact search (faiss flat)."""
        return self.index == EXACT

    @property
    def binary(self) -> bool:
        """Whether the index is of faiss's binary family."""
        return bool(BINARY.fullmatch(self.index))

    @property
    def budget(self) -> Optional[int]:
        return parse_bytes(self.memory_budget)

    def as_dict(self) -> dict:
        """Plain values, as recorded in results and index metadata."""
        return asdict(self)

    def whitened(self, whitening: Optional[Whitening]) -> "Searcher":
        """This searcher applying the learned ``whitening`` (``Searcher.whitening`` names what to learn it on;
        ``models.evaluation.learned_whitening`` learns it) to database and queries; itself when None."""
        if whitening is None:
            return self
        out = replace(self)
        out.learned = whitening
        return out

    def record(self, stats: Optional[dict] = None) -> dict:
        """What a results table records of the search: settings, description, and ``stats`` of the build."""
        learned = getattr(self, "learned", None)
        extra = {"whitening_sha256": learned.sha256(), "whitening_dims": [learned.d_in, learned.d_out]} if learned else {}
        return {**self.as_dict(), "description": self.describe(), **extra, **(stats or {})}

    def describe(self) -> str:
        """'exact nearest neighbours (faiss Flat)' or 'faiss index IVF4096,PQ64 (nprobe=32)', as tables say it."""
        what = ("exact nearest neighbours (faiss Flat)" if self.exact else
                f"approximate nearest neighbours, faiss index {self.index}" + (f" ({self.params})" if self.params else ""))
        if self.whitening:
            what += f", after PCA whitening{f' to {self.whitening_dim}-d' if self.whitening_dim else ''} learned on {self.whitening}"
        return what

    def _new(self, dim: int):
        """An untrained faiss index of this string for ``dim``-d vectors; ConfigError when faiss cannot build it."""
        import faiss

        try:
            if self.binary:
                return faiss.index_binary_factory(8 * ((dim + 7) // 8), self.index)
            return faiss.index_factory(dim, self.index, faiss.METRIC_L2)
        except RuntimeError as err:
            raise ConfigError(f"search index {self.index!r} for {dim}-d descriptors: faiss cannot build it "
                              f"({faiss_message(err)}); e.g. {EXAMPLES}") from None

    def check(self, dim: int) -> None:
        """ConfigError now, before anything is embedded, when the index string or params do not fit ``dim``."""
        if not self.exact:
            _set_params(self._new(dim), self.params, self.binary)
        elif self.params:
            raise ConfigError(f"search params {self.params!r} given for exact search (Flat), which has none")

    def build(self, database, whitening: Optional[Whitening] = None) -> "SearchIndex":
        """The index of ``database`` ((N, D), in memory or ``NpyRows``): exact search keeps a reference (no
        copy); other indexes are trained on a sample and filled block by block. ``whitening`` applies first."""
        whitening = whitening or getattr(self, "learned", None)
        if whitening is not None and whitening.d_in != database.shape[1]:
            raise ConfigError(f"the whitening was learned on {whitening.d_in}-d descriptors, the database has "
                              f"{database.shape[1]}-d")
        if self.exact:
            return ExactIndex(database, self, whitening)
        return FaissIndex.build(database, self, whitening)

    def search(self, database, queries: np.ndarray, k: int, whitening: Optional[Whitening] = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indices), each (M, k), of ``queries`` against ``database``."""
        return self.build(database, whitening).search(queries, k)


def _set_params(index, params: Optional[str], binary: bool) -> None:
    """Apply ``params`` ('nprobe=16,efSearch=64') to a faiss index; ConfigError naming what does not fit."""
    if not params:
        return
    import faiss

    try:
        if not binary:
            faiss.ParameterSpace().set_index_parameters(index, params)
            return
        for item in params.split(","):
            name, _, value = item.partition("=")
            name = name.strip()
            target = index.hnsw if name == "efSearch" and hasattr(index, "hnsw") else index
            if name not in ("nprobe", "efSearch") or not hasattr(target, name):
                raise RuntimeError(f"{type(index).__name__} has no search parameter {name!r}")
            setattr(target, name, int(value))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"search params {params!r} do not apply to the index ({faiss_message(err)}); "
                          f"e.g. nprobe=32 for IVF, efSearch=128 for HNSW") from None


class SearchIndex:
    """A database made searchable: ``search(queries, k)`` -> (distances, indices); ``stats`` say what building
    it took (seconds, training rows, bytes)."""

    stats: dict

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class ExactIndex(SearchIndex):
    """Exact L2 search over the rows of ``database``, shard by shard within the searcher's memory budget."""

    def __init__(self, database, searcher: Searcher, whitening: Optional[Whitening] = None):
        self.database, self.searcher, self.whitening = database, searcher, whitening
        self.stats = {"exact": True, "seconds_train": 0.0, "seconds_add": 0.0, "train_rows": 0}

    def shard_rows(self, num_queries: int, k: int) -> int:
        """Database rows per shard: all of them without a budget, else as many as the budget holds (whole
        BLAS blocks where faiss uses BLAS); ConfigError when not even one block fits."""
        import faiss

        n, d_in = self.database.shape
        if self.searcher.budget is None:
            return max(n, 1)
        d = self.whitening.d_out if self.whitening else d_in
        itemsize = np.dtype(getattr(self.database, "dtype", np.float32)).itemsize
        blas = num_queries * d >= faiss.cvar.distance_compute_blas_threshold
        # held throughout: the queries and their norms, the merged results and one shard's, and where faiss uses
        # BLAS its block of distances
        fixed = num_queries * d * 4 + num_queries * 4 + 3 * num_queries * k * 12 + (
            faiss.cvar.distance_compute_blas_query_bs * faiss.cvar.distance_compute_blas_database_bs * 4 if blas else 0)
        # per database row: as stored, as float32, whitened, its norm
        per_row = d_in * itemsize + (4 * d_in if itemsize != 4 else 0) + (4 * d if self.whitening else 0) + 4
        unit = faiss.cvar.distance_compute_blas_database_bs if blas else 1
        if self.whitening is not None:  # whole blocks of the whitening too
            unit = int(np.lcm(unit, Whitening.BLOCK))
        rows = (self.searcher.budget - fixed) // per_row // unit * unit
        if rows < unit:
            raise ConfigError(
                f"memory_budget {self.searcher.memory_budget} is too small for exact search of {num_queries} "
                f"{d}-d queries: it needs at least {human_size(fixed + unit * per_row)}")
        return int(min(rows, max(n, 1)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.whitening is not None:
            q = self.whitening.apply(q)
        gpu = _gpu() if self.searcher.faiss_gpu else None
        knn = (lambda x, y: faiss.knn_gpu(gpu, x, y, k)) if gpu is not None else (lambda x, y: faiss.knn(x, y, k))
        rows, n = self.shard_rows(len(q), k), len(self.database)
        if rows >= n:  # one shard: the very call of one IndexFlatL2 search over the whole database
            block = read_rows(self.database, 0, n)
            self.stats["shards"] = 1
            return knn(q, self.whitening.apply(block) if self.whitening is not None else block)
        heap = faiss.ResultHeap(len(q), k)
        self.stats["shards"] = 0
        for start in range(0, n, rows):
            block = read_rows(self.database, start, start + rows)
            if self.whitening is not None:
                block = self.whitening.apply(block)
            distances, indices = knn(q, block)
            del block  # before the next shard is read: one shard in memory at a time
            heap.add_result(distances, np.where(indices >= 0, indices + start, -1))
            self.stats["shards"] += 1
        heap.finalize()
        return heap.D, heap.I


class FaissIndex(SearchIndex):
    """A faiss index with the whitening it applies first: a float index (whitening inside it), or a binary one
    on the signs of the descriptor less ``centre`` (the mean of the training sample: a GeM or NetVLAD
    descriptor has no negative component, so raw signs would all be 1)."""

    def __init__(self, index, searcher: Searcher, whitening: Optional[Whitening] = None, stats: Optional[dict] = None,
                 centre: Optional[np.ndarray] = None):
        self.index, self.searcher, self.whitening, self.centre = index, searcher, whitening, centre
        self.stats = dict(stats or {})
        _set_params(self.index, searcher.params, searcher.binary)

    def _input(self, x: np.ndarray) -> np.ndarray:
        """Vectors as the index takes them: float32 (a float index whitens inside), or binary codes."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.searcher.binary:
            return x
        return binarize((self.whitening.apply(x) if self.whitening is not None else x) - self.centre)

    @classmethod
    def build(cls, database, searcher: Searcher, whitening: Optional[Whitening] = None) -> "FaissIndex":
        """Trained on a sample of ``database`` (``train_size``) and filled with all of it, block by block."""
        import faiss

        n, d_in = database.shape
        d = whitening.d_out if whitening is not None else d_in
        index = searcher._new(d)
        if whitening is not None and not searcher.binary:
            wrapped = faiss.IndexPreTransform(index)
            for transform in reversed(whitening.faiss_chain()):
                wrapped.prepend_transform(transform)
            index = wrapped
        built = cls(index, searcher, whitening, {"exact": False, "train_rows": 0}, np.zeros(d, np.float32))
        budget = searcher.budget
        per_row = d_in * 8 + d * 4
        block = max(1, (budget // 2 if budget else 2**28) // per_row)
        start = time.perf_counter()
        if not index.is_trained or searcher.binary:
            ivf = _ivf_of(index)
            wanted = searcher.train_size or max(DEFAULT_TRAIN, TRAIN_PER_LIST * (ivf.nlist if ivf is not None else 0))
            size = min(n, wanted)
            if budget and size * per_row > budget:
                size = max(1, budget // per_row)
                print(f"note: training sample of the search index reduced to {size:,} vectors to fit memory_budget "
                      f"{searcher.memory_budget}")
            rows = np.sort(np.random.default_rng(searcher.seed).choice(n, size=size, replace=False))
            sample = np.ascontiguousarray(database[rows] if size < n else read_rows(database, 0, n), dtype=np.float32)
            if searcher.binary:
                built.centre = (whitening.apply(sample) if whitening is not None else sample).mean(axis=0)
            try:
                if not index.is_trained:
                    index.train(built._input(sample))
            except RuntimeError as err:
                raise ConfigError(f"search index {searcher.index!r} cannot be trained on {size:,} database vectors "
                                  f"({faiss_message(err)}): use fewer IVF lists or PQ centroids, or a larger "
                                  f"train_size") from None
            built.stats["train_rows"] = int(size)
            del sample
        built.stats["seconds_train"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        for start in range(0, n, block):
            index.add(built._input(read_rows(database, start, start + block)))  # one block in memory at a time
        built.stats["seconds_add"] = round(time.perf_counter() - start, 3)
        if searcher.faiss_gpu:
            try:
                built.index = faiss.index_cpu_to_gpu(_gpu(), 0, index)
            except RuntimeError as err:
                raise ConfigError(f"search index {searcher.index!r} has no faiss GPU version ({faiss_message(err)}): "
                                  f"search it on the CPU (faiss_gpu false)") from None
        return built

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        distances, indices = self.index.search(self._input(queries), k)
        return distances.astype(np.float32, copy=False), indices

    def save(self, path: Path) -> list[Path]:
        """The index (with its whitening, for float indexes) as a faiss file at ``path``; a binary index's
        centre beside it (``<path>.centre.npy``). Returns the files written."""
        import faiss

        path = Path(path)
        index = faiss.index_gpu_to_cpu(self.index) if self.searcher.faiss_gpu else self.index
        if not self.searcher.binary:
            faiss.write_index(index, str(path))
            return [path]
        faiss.write_index_binary(index, str(path))
        np.save(_centre_file(path), self.centre)
        return [path, _centre_file(path)]

    @classmethod
    def load(cls, path: Path, searcher: Searcher, whitening: Optional[Whitening] = None,
             stats: Optional[dict] = None) -> "FaissIndex":
        import faiss

        path = Path(path)
        index = (faiss.read_index_binary if searcher.binary else faiss.read_index)(str(path))
        if searcher.faiss_gpu:
            index = faiss.index_cpu_to_gpu(_gpu(), 0, index)
        centre = np.load(_centre_file(path), allow_pickle=False) if searcher.binary else None
        return cls(index, searcher, whitening if searcher.binary else None, stats, centre)


def _centre_file(path: Path) -> Path:
    return path.with_name(path.name + ".centre.npy")


def _ivf_of(index):
    """The IVF index inside ``index`` (through pre-transforms and refinement), or None."""
    import faiss

    if hasattr(index, "nlist"):  # binary IVF among them
        return index
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, AttributeError, TypeError):
        return None


def recall_of_neighbours(found: np.ndarray, true: np.ndarray, k_values: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """{k: share of the true k nearest neighbours (``true``, from exact search) among the k found}: how much
    a compressed index loses against exact search (1.0: nothing)."""
    out = {}
    for k in k_values:
        f, t = found[:, :k], true[:, :k]
        hits = (f[:, :, None] == t[:, None, :]).any(axis=2) & (f >= 0)
        out[k] = float(hits.sum() / max(1, (t >= 0).sum()))
    return out
