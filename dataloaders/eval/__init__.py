"""Evaluation sets by name: each is an EvalDataset (database first, then queries)."""
from pathlib import Path
from typing import Callable, Optional

from utils.errors import ConfigError

from .base import EvalDataset, Protocol
from .folder import FolderDataset
from .msls import MSLSValDataset
from .pittsburgh import PITTSBURGH_SETS, PittsburghDataset

# set name -> (data-root key, constructor(root, transform))
EVAL_SETS = {
    **{name: ("pitts_root", lambda root, tf, n=name: PittsburghDataset(root, n, tf)) for name in PITTSBURGH_SETS},
    "msls_val": ("msls_root", lambda root, tf: MSLSValDataset(root, tf)),
}
# ``folder:<root>`` names a data set in the generic folder format (Tokyo 24/7, Nordland, SPED, ... or your own)
FOLDER_PREFIX = "folder:"


def is_eval_set(spec: str) -> bool:
    """Whether ``spec`` names a known evaluation set or a ``folder:<root>`` one."""
    return spec in EVAL_SETS or spec.startswith(FOLDER_PREFIX)


def eval_set_name(spec: str) -> str:
    """The name a set is logged under: ``pitts30k_val``, or the folder's name for ``folder:<root>``."""
    return Path(spec[len(FOLDER_PREFIX):]).resolve().name if spec.startswith(FOLDER_PREFIX) else spec


def build_eval_set(name: str, roots: dict[str, Optional[str | Path]], transform: Optional[Callable] = None,
                   pos_radius: float = 25.0) -> EvalDataset:
    """The evaluation set ``name``, reading its root from ``roots`` (e.g. {'pitts_root': ..., 'msls_root': ...}).

    ``folder:<root>`` opens ``<root>`` in the generic folder format, with positives within ``pos_radius``
    metres; the named sets keep their published positives (Pittsburgh's posDistThr, MSLS's pIdx).
    """
    if name.startswith(FOLDER_PREFIX):
        return FolderDataset(name[len(FOLDER_PREFIX):], transform, pos_radius=pos_radius)
    try:
        root_key, constructor = EVAL_SETS[name]
    except KeyError:
        raise ConfigError(f"unknown evaluation set {name!r}; choose one of {sorted(EVAL_SETS)} "
                         f"or {FOLDER_PREFIX}<root> for a set in the generic folder format") from None
    root = roots.get(root_key)
    if root is None:
        raise ConfigError(f"{name} needs {root_key}: set --data.{root_key} (or its environment variable)")
    return constructor(root, transform)


__all__ = ["EVAL_SETS", "FOLDER_PREFIX", "EvalDataset", "Protocol", "FolderDataset", "build_eval_set", "eval_set_name", "is_eval_set"]
