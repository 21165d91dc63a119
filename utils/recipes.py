"""Recipes: ``configs/base.yaml`` (the paper's recipe) under a per-model YAML of differences.

``python main.py --config configs/x.yaml`` reads the base first (LightningCLI's default config file),
then the delta; ``read_recipe`` gives the same merged settings to code that reads a recipe without the
command line (evaluating or loading a bare release). Sections (trainer, model, data, ...) merge key by
key; a value (a number, a list, a dict such as agg_config) is replaced as a whole, as on the command line.
"""
from pathlib import Path

from .errors import ConfigError, NotFoundError
from .safe_config import check_yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
BASE_RECIPE = CONFIG_DIR / "base.yaml"


def _load_yaml(path: Path) -> dict:
    import yaml  # here: code that never reads a recipe (torch.hub loading) does not need PyYAML

    if not path.is_file():
        raise NotFoundError(f"config not found: {path} (expected a YAML recipe like configs/mixvpr_resnet50_4096.yaml)")
    text = path.read_text()
    check_yaml(text, f"config {path}")  # size and alias-expansion limits (utils.safe_config)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (trainer:, model:, data:), not {type(data).__name__}")
    return data


def read_recipe(path: str | Path, base: Path = BASE_RECIPE) -> dict:
    """The settings of recipe ``path`` merged over ``base`` (sections key by key, values replaced whole)."""
    path = Path(path)
    merged = _load_yaml(base) if base.is_file() and path.resolve() != base.resolve() else {}
    for section, values in _load_yaml(path).items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def read_model_settings(path: str | Path) -> dict:
    """VPRModel arguments of recipe ``path``: its model section, plus ``data.image_size``."""
    recipe = read_recipe(path)
    model = recipe.get("model")
    if not isinstance(model, dict):
        raise ConfigError(f"{path} has no 'model:' section; expected one like configs/mixvpr_resnet50_4096.yaml")
    settings = dict(model)
    image_size = (recipe.get("data") or {}).get("image_size")
    if image_size is not None and settings.get("image_size") is None:
        settings["image_size"] = list(image_size)
    return settings
