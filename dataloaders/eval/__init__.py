"""Evaluation sets by name: each is an EvalDataset (database first, then queries).

The named benchmarks live in the registry (``registry.BENCHMARKS``), one module per data set registering
its entries with their protocol, counts and citation: ``pittsburgh``, ``msls`` (msls_val, msls_val_all),
``msls_test`` (the MSLS challenge), ``nordland`` (nordland, nordland_10frames), ``sped``, ``tokyo247``,
``st_lucia``, ``amstertime``, ``eynsham``, ``svox`` (svox_<condition>), ``sf_xl`` (sf_xl_test_v1/v2).
``suites`` maps a paper's table to its benchmarks; ``folder:<root>`` opens any set in the generic folder format.
"""
from pathlib import Path
from typing import Callable, Optional

from . import amstertime, eynsham, msls, msls_test, nordland, pittsburgh, sf_xl, sped, st_lucia, svox, tokyo247  # noqa: F401
from .base import EvalDataset, Protocol
from .folder import FolderDataset
from .registry import BENCHMARKS, Benchmark, Format, get_benchmark, open_benchmark, register_benchmark, root_settings
from .suites import SUITE_PREFIX, SUITES, Suite, expand_benchmarks

# ``folder:<root>`` names a data set in the generic folder format (any VPR-datasets-downloader set, or your own)
FOLDER_PREFIX = "folder:"


def is_eval_set(spec: str) -> bool:
    """Whether ``spec`` names a registered benchmark or a ``folder:<root>`` set."""
    return spec in BENCHMARKS or spec.startswith(FOLDER_PREFIX)


def eval_set_name(spec: str) -> str:
    """The name a set is logged under: ``pitts30k_val``, or the folder's name for ``folder:<root>``."""
    return Path(spec[len(FOLDER_PREFIX):]).resolve().name if spec.startswith(FOLDER_PREFIX) else spec


def build_eval_set(name: str, roots: dict[str, Optional[str | Path]], transform: Optional[Callable] = None,
                   pos_radius: float = 25.0, check_counts: bool = True) -> EvalDataset:
    """The evaluation set ``name``, reading its root from ``roots`` (e.g. {'pitts_root': ..., 'benchmarks_root': ...}).

    ``folder:<root>`` opens ``<root>`` in the generic folder format, with positives within ``pos_radius``
    metres; the named benchmarks keep their published protocol (``open_benchmark``: pinned positives and
    counts, checked unless ``check_counts`` is False).
    """
    if name.startswith(FOLDER_PREFIX):
        return FolderDataset(name[len(FOLDER_PREFIX):], transform, pos_radius=pos_radius)
    return open_benchmark(name, roots, transform, check_counts)


__all__ = ["BENCHMARKS", "FOLDER_PREFIX", "SUITES", "SUITE_PREFIX", "Benchmark", "EvalDataset", "FolderDataset",
           "Format", "Protocol", "Suite", "build_eval_set", "eval_set_name", "expand_benchmarks", "get_benchmark",
           "is_eval_set", "open_benchmark", "register_benchmark", "root_settings"]
