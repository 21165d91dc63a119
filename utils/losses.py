"""Metric-learning losses and miners from pytorch-metric-learning, by exact class name (their distance and
reducer settings too: ``{"distance": "CosineSimilarity"}`` in a config)."""
import inspect

from pytorch_metric_learning import distances, losses, miners, reducers

from .errors import ConfigError


def _classes(module, base) -> dict:
    return {n: c for n, c in vars(module).items() if inspect.isclass(c) and issubclass(c, base) and c is not base
            and not n.startswith("Base")}


# abstract helpers that subclass the bases but are not usable as a loss or miner on their own
_NOT_USABLE = {"GenericPairLoss", "EmbeddingsAlreadyPackagedAsTriplets"}
LOSSES = {n: c for n, c in _classes(losses, losses.BaseMetricLossFunction).items() if n not in _NOT_USABLE}
MINERS = {n: c for n, c in _classes(miners, miners.BaseMiner).items() if n not in _NOT_USABLE}

DISTANCES = _classes(distances, distances.BaseDistance)
REDUCERS = _classes(reducers, reducers.BaseReducer)
# settings that take a pytorch-metric-learning object: given in a config as the class name, or as
# {class_path: <name or pytorch_metric_learning.<module>.<name>>, init_args: {...}}
OBJECT_SETTINGS = {"distance": (distances, distances.BaseDistance, DISTANCES),
                   "reducer": (reducers, reducers.BaseReducer, REDUCERS)}

# The paper's settings (MixVPR, Sec. 4): MS loss alpha 1, beta 50, base 0 on dot-product similarity;
# MS miner epsilon 0.1 on cosine similarity.
PAPER_DEFAULTS = {
    "MultiSimilarityLoss": lambda: {"alpha": 1.0, "beta": 50, "base": 0.0, "distance": distances.DotProductSimilarity()},
    "MultiSimilarityMiner": lambda: {"epsilon": 0.1, "distance": distances.CosineSimilarity()},
}


def get_loss(loss_name: str, **config):
    """The pytorch-metric-learning loss named exactly ``loss_name``; ``config`` overrides its defaults."""
    if loss_name not in LOSSES:
        raise ConfigError(f"unknown loss {loss_name!r}; choose one of {sorted(LOSSES)}")
    return _build(LOSSES[loss_name], loss_name, {**PAPER_DEFAULTS.get(loss_name, dict)(), **config})


def get_miner(miner_name, **config):
    """The pytorch-metric-learning miner named exactly ``miner_name``, or None for None/'none'."""
    if miner_name is None or str(miner_name).lower() == "none":
        return None
    if miner_name not in MINERS:
        raise ConfigError(f"unknown miner {miner_name!r}; choose one of {sorted(MINERS) + ['none']}")
    return _build(MINERS[miner_name], miner_name, {**PAPER_DEFAULTS.get(miner_name, dict)(), **config})


def _build(cls, name: str, config: dict):
    """``cls(**config)``, with an error naming the settings ``cls`` takes when one is unknown."""
    accepted = set(inspect.signature(cls).parameters) - {"self", "args", "kwargs"}
    # pytorch-metric-learning classes pass **kwargs on to their bases: collect what those take too
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("pytorch_metric_learning"):
            accepted |= set(inspect.signature(base.__init__).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ConfigError(f"{name} does not take {unknown}; its settings are {sorted(accepted)}")
    return cls(**{k: _object(name, k, v) if k in OBJECT_SETTINGS else v for k, v in config.items()})


def _object(owner: str, setting: str, value):
    """The pytorch-metric-learning object a ``distance``/``reducer`` setting names (an instance passes)."""
    module, base, choices = OBJECT_SETTINGS[setting]
    if isinstance(value, base):
        return value
    class_path, init_args = value, {}
    if isinstance(value, dict) and set(value) <= {"class_path", "init_args"} and "class_path" in value:
        class_path, init_args = value["class_path"], dict(value.get("init_args") or {})
    if isinstance(class_path, str):
        class_name = class_path.removeprefix(f"{module.__name__}.")
        if class_name in choices:
            return _build(choices[class_name], class_name, init_args)
    raise ConfigError(f"{owner} {setting} {value!r}: give a pytorch-metric-learning {setting} by its exact class name, "
                      f"one of {', '.join(sorted(choices))}, or as {{class_path: <name>, init_args: {{...}}}}")
