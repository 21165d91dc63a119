"""Where the data sets are: one function for every command (training, evaluation, retrieval)."""
import os
from typing import Mapping, Optional

from .eval import root_settings

# data-root setting -> environment variable used when the setting is not given: GSV-Cities, every benchmark's
# root (registry: pitts_root, msls_root, nordland_root, ...) and benchmarks_root
ROOT_ENV = {"gsv_root": "GSV_CITIES_ROOT", **root_settings()}


def data_roots(gsv_root: Optional[str] = None, pitts_root: Optional[str] = None, msls_root: Optional[str] = None,
               synthetic: bool = False, synthetic_dir: str = "LOGS/synthetic_data", synthetic_scale: str = "default",
               seed: int = 0, **other_roots: Optional[str]) -> dict[str, Optional[str]]:
    """Every data-root setting of ``ROOT_ENV`` (gsv_root, pitts_root, msls_root, the other benchmarks' roots
    given as keywords, benchmarks_root): each the setting, else its environment variable, else, with
    ``synthetic``, the embedded synthetic data set of that scale and seed under ``synthetic_dir``
    (``generate_synthetic`` writes it; its stand-ins of the other benchmarks lie in a folder laid out as a
    benchmarks_root), else None. With ``synthetic``, environment variables are not read: what is not given
    is the synthetic data."""
    unknown = sorted(set(other_roots) - set(ROOT_ENV))
    if unknown:
        raise ValueError(f"unknown data roots {unknown}; known: {sorted(ROOT_ENV)}")
    given = {k: None for k in ROOT_ENV}
    given.update(other_roots, gsv_root=gsv_root, pitts_root=pitts_root, msls_root=msls_root)
    if not synthetic:
        return {k: given[k] or os.environ.get(env) or None for k, env in ROOT_ENV.items()}
    from .synthetic import synthetic_roots

    generated = synthetic_roots(synthetic_dir, synthetic_scale, seed)
    return {k: given[k] or (str(generated[k]) if k in generated else None) for k in ROOT_ENV}


def roots_of(settings: Mapping) -> dict[str, Optional[str]]:
    """``data_roots`` of a data section (VPRDataModule's settings: a dict or a parsed namespace)."""
    get = settings.get if hasattr(settings, "get") else lambda k, d=None: getattr(settings, k, d)
    others = {k: get(k) for k in ROOT_ENV if k not in ("gsv_root", "pitts_root", "msls_root")}
    return data_roots(get("gsv_root"), get("pitts_root"), get("msls_root"), bool(get("synthetic", False)),
                      get("synthetic_dir", "LOGS/synthetic_data"), get("synthetic_scale", "default"),
                      get("seed", 0), **others)
