"""Pretrained backbone weights (torchvision's ImageNet weights, DINOv2's), with a clear message when they
cannot be fetched (offline)."""
from pathlib import Path

import torch
from torch import nn


def load_pretrained_weights(model: nn.Module, url: str, arch: str, kind: str = "ImageNet weights") -> None:
    """Load the state_dict at ``url`` into ``model`` in place.

    ``model`` may be cropped (stages, pooling or classifier removed): the file's entries for the parts it
    lacks are ignored, and every entry it has must be in the file. torch.hub caches the file under
    ``$TORCH_HOME/hub/checkpoints``; when it is not there and the download fails we say where to put it,
    or how to train without it.
    """
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    try:
        state = torch.hub.load_state_dict_from_url(url, progress=False, check_hash=False, map_location="cpu")
    except Exception as err:  # URLError, HTTPError, socket errors: all mean "not available here"
        raise RuntimeError(
            f"cannot load {kind} for {arch}: {cache} is not cached and the download from "
            f"{url} failed ({type(err).__name__}: {err}). Either train from scratch with "
            f"pretrained=False (command line: --model.pretrained false), or download that file on a "
            f"machine that is online and copy it to {cache} (the folder is $TORCH_HOME/hub/checkpoints)."
        ) from err
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise RuntimeError(f"{kind} of {arch} lack {missing[:5]}: the model is not {arch}")
    model.load_state_dict({k: v for k, v in state.items() if k in own})


def load_imagenet_weights(model: nn.Module, weights, arch: str) -> None:
    """Load torchvision ``weights`` (a ``WeightsEnum`` member) into ``model`` in place."""
    load_pretrained_weights(model, weights.url, arch)
