"""The benchmark registry: every named evaluation set is one ``Benchmark`` record (as torchvision's
``register_model`` maps a name to a builder), registered by the module that reads its format.

A record holds what a table needs to be trusted: the title, the citation, the protocol in words, the root
setting and its environment variable (and the sub-folders of ``--data.benchmarks_root`` where
VPR-datasets-downloader's layout puts it), the on-disk formats it can be read from, the published
(database, queries) counts checked at load, the known other versions of the set with those counts (a
mismatch names the likely cause), and how it is scored (recall@K, or predictions only for a set without
public labels). ``open_benchmark`` resolves the root, opens the first format found there, checks the counts
and writes all of it into the set's ``Protocol``, which recalls.md/json state.

The generator's synthetic stand-ins carry a ``synthetic_standin.json`` file naming their own counts: those
are checked instead of the published ones, and the protocol says the set is a stand-in.
"""
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from utils.errors import ConfigError, DataError, NotFoundError

from .base import EvalDataset

STANDIN_FILE = "synthetic_standin.json"
BENCHMARKS_ROOT = "benchmarks_root"
BENCHMARKS_ROOT_ENV = "VPR_BENCHMARKS_ROOT"


@dataclass(frozen=True)
class Format:
    """One on-disk layout a benchmark is read from: ``layout`` in words (for errors), ``present(root)``
    whether ``root`` holds it, ``open(root, transform)`` the EvalDataset."""

    layout: str
    present: Callable[[Path], bool]
    open: Callable[[Path, Optional[Callable]], EvalDataset]


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark and its pinned protocol.

    name: what ``--benchmarks`` takes ('nordland'); title: the column title ('Nordland (VPR-Bench)').
    citation: where the set and its protocol are published. protocol: the protocol in words, with the
        positive rule ('2,760 summer queries against the 27,592-image winter sequence, a positive within
        +-1 frame'); the rule the loader actually applied is read from the data (``Protocol.positives``).
    root, env: the data-root setting (``--data.<root>``) and its environment variable.
    subfolders: where it lies under ``--data.benchmarks_root`` (VPR-datasets-downloader's folder names).
    formats: the layouts it is read from, tried in order in the resolved root.
    counts: published (database, queries) counts (either None: not published); counts_source: where from.
    variants: ((database, queries), likely cause) of known other versions, named when the counts differ.
    scoring: 'recall', or 'predictions' for a set without public labels.
    counts_verified: whether ``counts`` were checked against the published files or tables. Unverified
        counts (written from the papers, not yet compared here) never stop a run: a mismatch is a note, and
        the results say the counts were not checked.
    """

    name: str
    title: str
    citation: str
    protocol: str
    root: str
    env: str
    subfolders: tuple[str, ...]
    formats: tuple[Format, ...]
    counts: Optional[tuple[Optional[int], Optional[int]]] = None
    counts_source: str = ""
    variants: tuple[tuple[tuple[int, int], str], ...] = ()
    scoring: str = "recall"
    counts_verified: bool = True


BENCHMARKS: dict[str, Benchmark] = {}


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    """Add ``benchmark`` to the registry (one entry per name); returns it."""
    if benchmark.name in BENCHMARKS:
        raise ValueError(f"benchmark {benchmark.name!r} is registered twice")
    if benchmark.scoring not in ("recall", "predictions"):
        raise ValueError(f"{benchmark.name}: scoring must be 'recall' or 'predictions', not {benchmark.scoring!r}")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name``; ConfigError listing the names otherwise."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ConfigError(f"unknown evaluation set {name!r}; choose one of {sorted(BENCHMARKS)}, a suite "
                          f"(suite:<paper>) or folder:<root> for a set in the generic folder format") from None


def root_settings() -> dict[str, str]:
    """Every benchmark root setting -> its environment variable, and ``benchmarks_root``'s."""
    settings = {b.root: b.env for b in BENCHMARKS.values()}
    settings[BENCHMARKS_ROOT] = BENCHMARKS_ROOT_ENV
    return settings


def resolve_root(benchmark: Benchmark, roots: dict) -> Path:
    """The folder ``benchmark`` is read from: its own root setting (already falling back to its environment
    variable or the synthetic stand-in in ``roots``, see ``dataloaders.roots``), else the first of its
    sub-folders that exists under ``benchmarks_root``. ConfigError naming every way to give it otherwise."""
    own = roots.get(benchmark.root)
    if own:
        return Path(own)
    base = roots.get(BENCHMARKS_ROOT)
    if base:
        tried = [Path(base) / sub for sub in benchmark.subfolders]
        for path in tried:
            if path.is_dir():
                return path
        raise NotFoundError(f"{benchmark.name}: not found under --data.benchmarks_root {base} (tried "
                            f"{[str(p) for p in tried]}); set --data.{benchmark.root} (or {benchmark.env}) to its "
                            f"folder. Expected layout: {layouts(benchmark)}")
    raise ConfigError(f"{benchmark.name} needs {benchmark.root}: set --data.{benchmark.root} (or the {benchmark.env} "
                      f"environment variable), or --data.benchmarks_root (or {BENCHMARKS_ROOT_ENV}) to a folder holding "
                      f"{' or '.join(benchmark.subfolders)}/ in VPR-datasets-downloader's layout")


def layouts(benchmark: Benchmark) -> str:
    """The layouts ``benchmark`` is read from, in words."""
    return "; or ".join(f.layout for f in benchmark.formats)


def standin_counts(root: Path, name: str) -> Optional[tuple[int, int]]:
    """The (database, queries) counts the synthetic generator wrote for ``name`` into ``root``'s stand-in file,
    or None when ``root`` is not a synthetic stand-in of it."""
    try:
        counts = json.loads((root / STANDIN_FILE).read_text())["counts"][name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(counts[0]), int(counts[1])


def open_benchmark(name: str, roots: dict, transform: Optional[Callable] = None,
                   check_counts: bool = True) -> EvalDataset:
    """The benchmark ``name`` opened from its root (``resolve_root``) in the first of its formats found there,
    its counts checked (``count_error``; ``check_counts=False`` makes a mismatch a note) and its protocol record
    filled in from the registry."""
    benchmark = get_benchmark(name)
    root = resolve_root(benchmark, roots)
    # none of the layouts there: the first format's reader says what it expected and what it found
    fmt = next((f for f in benchmark.formats if root.is_dir() and f.present(root)), benchmark.formats[0])
    dataset = fmt.open(root, transform)
    standin = standin_counts(root, name)
    expected = standin or benchmark.counts
    found = (dataset.num_references, dataset.num_queries)
    problem = count_error(benchmark, found, expected, root, standin is not None)
    enforced = check_counts and (standin is not None or benchmark.counts_verified)
    if problem and enforced:
        raise DataError(problem + " (--data.check_counts false evaluates it anyway, and the results say so)")
    if problem:
        why = ("--data.check_counts false" if not check_counts else
               "these counts were written from the paper and are not yet verified against the published files")
        print(f"note: {problem}; evaluated anyway ({why})", file=sys.stderr)
    dataset.positive_rule = replace(
        dataset.positive_rule, benchmark=name, title=benchmark.title, citation=benchmark.citation,
        protocol=benchmark.protocol, expected_counts=tuple(expected) if expected else None,
        counts_checked=bool(expected) and enforced, synthetic=standin is not None, scoring=benchmark.scoring)
    return dataset


def count_error(benchmark: Benchmark, found: tuple[int, int], expected, root: Path, synthetic: bool) -> str:
    """'' when ``found`` (database, queries) agrees with ``expected`` (None parts are not checked), else one
    line naming both and the likely cause: database and queries swapped, a known other version of the set
    (``benchmark.variants``), or images missing or extra."""
    if expected is None:
        return ""
    mismatched = [part for part, f, e in zip(("database", "queries"), found, expected) if e is not None and f != e]
    if not mismatched:
        return ""
    what = "the synthetic stand-in written with" if synthetic else f"the published {benchmark.title} has"
    pinned = " and ".join(f"{e:,} {p}" for p, e in zip(("database images", "queries"), expected) if e is not None)
    source = "" if synthetic else f" ({benchmark.counts_source})" if benchmark.counts_source else ""
    line = (f"{benchmark.name}: {root} holds {found[0]:,} database images and {found[1]:,} queries, but {what} "
            f"{pinned}{source}")
    variants = dict(benchmark.variants)
    if None not in expected and found == (expected[1], expected[0]):
        cause = "database and queries swapped (the two folders, or the files listing them, exchanged)"
    elif tuple(found) in variants:
        cause = variants[tuple(found)]
    elif tuple(found[::-1]) in variants:
        cause = variants[tuple(found[::-1])] + ", with database and queries swapped"
    else:
        cause = ("another version of the set, or an incomplete or mixed copy ("
                 + ", ".join(f"{abs(f - e):,} {p} {'missing' if f < e else 'extra'}"
                             for p, f, e in zip(("database images", "queries"), found, expected)
                             if e is not None and f != e) + ")")
    return f"{line}: likely {cause}"
