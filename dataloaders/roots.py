"""Where the data sets are: one function for every command (training, evaluation, retrieval)."""
import os
from typing import Optional

# data-root setting -> environment variable used when the setting is not given
ROOT_ENV = {"gsv_root": "GSV_CITIES_ROOT", "pitts_root": "PITTSBURGH_ROOT", "msls_root": "MSLS_ROOT"}


def data_roots(gsv_root: Optional[str] = None, pitts_root: Optional[str] = None, msls_root: Optional[str] = None,
               synthetic: bool = False, synthetic_dir: str = "LOGS/synthetic_data", synthetic_scale: str = "default",
               seed: int = 0) -> dict[str, Optional[str]]:
    """{'gsv_root', 'pitts_root', 'msls_root'}: each the setting, else its environment variable
    (GSV_CITIES_ROOT, PITTSBURGH_ROOT, MSLS_ROOT), else, with ``synthetic``, the embedded synthetic data
    set of that scale and seed under ``synthetic_dir`` (``generate_synthetic`` writes it), else None."""
    given = {"gsv_root": gsv_root, "pitts_root": pitts_root, "msls_root": msls_root}
    roots = {k: given[k] or os.environ.get(env) or None for k, env in ROOT_ENV.items()}
    if synthetic:
        from .synthetic import synthetic_roots

        generated = synthetic_roots(synthetic_dir, synthetic_scale, seed)
        roots = {k: given[k] or str(generated[k]) for k in ROOT_ENV}
    return roots
