"""Evaluation sets by name: each is an EvalDataset (database first, then queries)."""
from pathlib import Path
from typing import Callable, Optional

from .base import EvalDataset
from .msls import MSLSValDataset
from .pittsburgh import PITTSBURGH_SETS, PittsburghDataset

# set name -> (data-root key, constructor(root, transform))
EVAL_SETS = {
    **{name: ("pitts_root", lambda root, tf, n=name: PittsburghDataset(root, n, tf)) for name in PITTSBURGH_SETS},
    "msls_val": ("msls_root", lambda root, tf: MSLSValDataset(root, tf)),
}


def build_eval_set(name: str, roots: dict[str, Optional[str | Path]], transform: Optional[Callable] = None) -> EvalDataset:
    """The evaluation set ``name``, reading its root from ``roots`` (e.g. {'pitts_root': ..., 'msls_root': ...})."""
    try:
        root_key, constructor = EVAL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown evaluation set {name!r}; choose one of {sorted(EVAL_SETS)}") from None
    root = roots.get(root_key)
    if root is None:
        raise ValueError(f"{name} needs {root_key}: set --data.{root_key} (or its environment variable)")
    return constructor(root, transform)


__all__ = ["EVAL_SETS", "EvalDataset", "build_eval_set"]
