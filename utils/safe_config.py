"""Configs from users are parsed with limits: YAML size and alias expansion, and the modules a value may import.

Every config the command lines read goes through ``load_yaml``: recipe files (``--config``, the default
``configs/base.yaml``), YAML/JSON values given on the command line, sub-config files, and the recipes
``utils.recipes`` reads without the command line. A text over ``MAX_CONFIG_BYTES``, nested deeper than
``MAX_CONFIG_DEPTH``, or whose anchors and aliases (``&a`` ... ``*a``) expand to more than
``MAX_CONFIG_VALUES`` values is refused with one line before anything is built from it: nested aliases
("billion laughs") let a few hundred bytes stand for billions of values, which jsonargparse would walk,
copy and print one by one. The check reads the YAML's event stream once (libyaml), without building the
document: linear in the text, with no recursion.

``class_path`` values (callbacks, loggers, plugins) are imported only from ``ALLOWED_MODULES`` and the
modules named in ``$VPR_ALLOWED_MODULES`` (comma-separated, e.g. ``mypkg,tiny_cli``); any other module is
refused by jsonargparse's import-path policy before it is imported (``use_safe_config`` sets it).
"""
import os
import re
from typing import Optional

from .errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_DEPTH = 64
MAX_CONFIG_VALUES = 10_000  # after alias expansion; each recipe in configs/ holds fewer than 100
ALLOWED_MODULES = ("lightning", "pytorch_lightning", "torch", "torchmetrics", "models", "dataloaders", "utils", "bench")
ALLOWED_MODULES_ENV = "VPR_ALLOWED_MODULES"

try:  # a YAMLError too, so that jsonargparse reports it where it reports a config that does not parse
    from yaml import YAMLError as _YAMLError
except ImportError:  # pragma: no cover - jsonargparse and the recipes need PyYAML
    _YAMLError = Exception


class UnsafeConfigError(ConfigError, _YAMLError):
    """A config refused before it is loaded: too large, too deep, or its aliases expand too far."""


def check_yaml(text: str, source: str = "a config value") -> None:
    """Raise UnsafeConfigError naming ``source`` (e.g. ``config x.yaml``) when ``text`` is over the size, depth
    or expansion limits. A text that is not valid YAML passes: the loader reports it as it always has."""
    import yaml

    if len(text) > MAX_CONFIG_BYTES:
        raise UnsafeConfigError(f"{source} has {len(text):,} characters, over the limit of "
                                f"{MAX_CONFIG_BYTES:,} for a config; a recipe is a few kB")
    if "&" not in text and "*" not in text and text.count("[") + text.count("{") + text.count("\n") < MAX_CONFIG_DEPTH:
        return  # no anchor, alias or deep nesting possible: nothing to count
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    # per open collection: its expanded number of values and its anchor; per anchor: the values it stands for
    open_sizes: list[list] = [[0, None]]
    anchors: dict[str, int] = {}
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                open_sizes.append([1, event.anchor])
                if len(open_sizes) > MAX_CONFIG_DEPTH:
                    raise UnsafeConfigError(f"{source} nests more than {MAX_CONFIG_DEPTH} levels deep; "
                                            f"a recipe needs a few")
                continue
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                size, anchor = open_sizes.pop()
            elif isinstance(event, yaml.ScalarEvent):
                size, anchor = 1, event.anchor
            elif isinstance(event, yaml.AliasEvent):
                size, anchor = anchors.get(event.anchor, 1), None
            else:
                continue
            if anchor is not None:
                anchors[anchor] = size
            open_sizes[-1][0] += size
            if open_sizes[-1][0] > MAX_CONFIG_VALUES:
                raise UnsafeConfigError(
                    f"{source} holds more than {MAX_CONFIG_VALUES:,} values once its YAML aliases "
                    f"(&name ... *name) are expanded; the recipes in configs/ hold fewer than 100: write the "
                    f"values out instead of nesting aliases")
    except yaml.YAMLError as err:
        if isinstance(err, UnsafeConfigError):
            raise
        return  # not valid YAML: the loader says so


_default_loader = None  # jsonargparse's own YAML loader, which load_yaml calls after its check


def load_yaml(text: str, path: str = "") -> object:
    """jsonargparse's YAML loader, after ``check_yaml`` (``path``: the file, when the text is one)."""
    check_yaml(text, f"config {path}" if path else "a config value")
    return _default_loader(text)


def allowed_modules() -> list[str]:
    """``ALLOWED_MODULES`` plus those named in ``$VPR_ALLOWED_MODULES``; ConfigError for a malformed name."""
    extra = [m.strip() for m in os.environ.get(ALLOWED_MODULES_ENV, "").split(",") if m.strip()]
    for module in extra:
        if not all(part.isidentifier() for part in module.split(".")) or module.split(".")[0] == "jsonargparse":
            raise ConfigError(f"{ALLOWED_MODULES_ENV}={os.environ[ALLOWED_MODULES_ENV]!r}: {module!r} is not a "
                              f"module name (a comma-separated list such as mypkg,mypkg.callbacks)")
    return [*ALLOWED_MODULES, *extra]


# jsonargparse's refusal (an ImportError): "Importing 'this.Foo' is not allowed, denied by the '*' entry ..."
_REFUSED_IMPORT = re.compile(r"^Importing '([\w.]+)' is not allowed")


def refused_import_message(err: BaseException) -> Optional[str]:
    """Our one-line message for jsonargparse's refusal to import a value's module, or None for other errors."""
    match = _REFUSED_IMPORT.match(str(err)) if isinstance(err, ImportError) else None
    if match is None:
        return None
    path = match.group(1)
    return (f"class_path {path!r} is refused: configs import classes only from the modules "
            f"{', '.join(allowed_modules())}. If you trust {path.rsplit('.', 1)[0]!r}, allow it with "
            f"{ALLOWED_MODULES_ENV}={path.split('.')[0]}")


def use_safe_config(allowed: Optional[list[str]] = None) -> None:
    """Make jsonargparse (process-wide) load YAML through ``load_yaml`` and import ``class_path`` values
    only from ``allowed`` (default ``allowed_modules()``): any other module is refused before its import."""
    global _default_loader
    import yaml
    from jsonargparse import get_loader, set_loader, set_parsing_settings

    from jsonargparse import _loaders_dumpers

    if get_loader("yaml") is not load_yaml:
        _default_loader = get_loader("yaml")
        set_loader("yaml", load_yaml, (yaml.YAMLError,))
        # values of plain types (int, dict, ...) given as strings, on the command line or inside a config, are
        # loaded by a direct call of this module function, which set_loader does not reach
        _loaders_dumpers.yaml_load = load_yaml
    set_parsing_settings(import_path_denylist=["*"], import_path_allowlist=allowed or allowed_modules())
