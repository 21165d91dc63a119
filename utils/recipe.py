"""A training recipe (a YAML config) as one dict of sections, on top of ``base.yaml`` when there is one."""
from pathlib import Path

import yaml


def read_recipe(path: str | Path) -> dict:
    """{'trainer': {...}, 'model': {...}, 'data': {...}, ...} of the config at ``path``.

    When a ``base.yaml`` sits next to it, the config lists only what differs from the base: its values
    replace the base's, key by key within each section.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path} "
                                f"(expected a YAML file like configs/mixvpr_resnet50_4096.yaml)")
    base = path.parent / "base.yaml"
    merged: dict = {}
    for source in ([base] if base.is_file() and base.resolve() != path.resolve() else []) + [path]:
        for section, values in (yaml.safe_load(source.read_text()) or {}).items():
            if isinstance(values, dict):
                merged.setdefault(section, {}).update(values)
            else:
                merged[section] = values
    return merged
