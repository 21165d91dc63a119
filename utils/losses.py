"""Metric-learning losses and miners from pytorch-metric-learning, by exact class name."""
import inspect

from pytorch_metric_learning import distances, losses, miners

from .errors import ConfigError


def _classes(module, base) -> dict:
    return {n: c for n, c in vars(module).items() if inspect.isclass(c) and issubclass(c, base) and c is not base
            and not n.startswith("Base")}


# abstract helpers that subclass the bases but are not usable as a loss or miner on their own
_NOT_USABLE = {"GenericPairLoss", "EmbeddingsAlreadyPackagedAsTriplets"}
LOSSES = {n: c for n, c in _classes(losses, losses.BaseMetricLossFunction).items() if n not in _NOT_USABLE}
MINERS = {n: c for n, c in _classes(miners, miners.BaseMiner).items() if n not in _NOT_USABLE}

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
    return cls(**config)
