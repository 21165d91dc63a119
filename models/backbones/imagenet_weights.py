"""Pretrained backbone weights (torchvision's and timm's ImageNet weights, DINOv2's), with a clear message
when they cannot be fetched (offline).

torchvision's file names carry the first hex digits of the file's SHA-256 (``resnet18-f37072fd.pth``): a
download is checked against them (torch.hub's ``check_hash``), and so is a file already in the cache, which
torch.hub would use unchecked. DINOv2's and timm's files carry no digest to check.
"""
import pickle
from pathlib import Path

import torch
from torch import nn

from utils.errors import CheckpointError
from utils.files import file_sha256

PRETRAINED_FALSE = "train from scratch with pretrained=False (command line: --model.pretrained false)"


def load_pretrained_weights(model: nn.Module, url: str, arch: str, kind: str = "ImageNet weights") -> None:
    """Load the state_dict at ``url`` into ``model`` in place.

    ``model`` may be cropped (stages, pooling or classifier removed): the file's entries for the parts it
    lacks are ignored, and every entry it has must be in the file. torch.hub caches the file under
    ``$TORCH_HOME/hub/checkpoints``; when it is not there and the download fails we say where to put it,
    or how to train without it.
    """
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    again = f"delete it (it is downloaded again) or replace it with the file from {url}"
    cached = cache.is_file()
    published = torch.hub.HASH_REGEX.search(cache.name)  # torchvision's names: <arch>-<sha256 prefix>.pth
    if cached and published and not file_sha256(cache).startswith(published.group(1)):
        raise CheckpointError(f"{cache} is not the published {kind}: its SHA-256 is {file_sha256(cache)}, the "
                              f"published one starts {published.group(1)} (the file name says so): {again}")
    try:
        state = torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, map_location="cpu",
                                                   weights_only=True)
    except pickle.UnpicklingError as err:  # a cached file that is not plain weights: never run its code
        raise CheckpointError(f"{cache} needs code to run to be loaded ({str(err).splitlines()[0]}); it is not "
                              f"the published {kind}: {again}") from None
    except Exception as err:  # URLError, HTTPError, socket errors: all mean "not available here"
        if cached:  # it was there: the file is the problem, not the network
            raise CheckpointError(f"{cache} cannot be read as the {kind} of {arch} ({type(err).__name__}: {err}): "
                                  f"truncated or another file; {again}") from None
        raise RuntimeError(
            f"cannot load {kind} for {arch}: {cache} is not cached and the download from "
            f"{url} failed ({type(err).__name__}: {err}). Either {PRETRAINED_FALSE}, or download that file on a "
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


def create_timm_model(timm_name: str, pretrained: bool, arch: str, **kwargs) -> nn.Module:
    """timm's model ``timm_name`` (``architecture.tag``, the tag naming its pretrained weights), built
    with ``kwargs``; with its pretrained weights when ``pretrained``.

    timm keeps weights in the Hugging Face cache (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``).
    Weights found there load without touching the network; otherwise timm downloads them, and a failed
    download says where to put them, or how to train without them. ``pretrained=False`` never touches
    the network.
    """
    # timm takes seconds to import: only pay for it when a timm backbone is built
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    if not pretrained:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    repo = timm.models.get_pretrained_cfg(timm_name).hf_hub_id
    cache = Path(constants.HF_HUB_CACHE)
    for filename in ("model.safetensors", "pytorch_model.bin"):  # timm's order
        cached = try_to_load_from_cache(repo, filename, cache_dir=cache)
        if isinstance(cached, str):
            return timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs)
    try:
        return timm.create_model(timm_name, pretrained=True, **kwargs)
    except Exception as err:  # huggingface_hub's connection / offline / not-found errors
        folder = cache / f"models--{repo.replace('/', '--')}"
        raise RuntimeError(
            f"cannot load ImageNet weights for {arch} (timm {timm_name}): they are not in the Hugging Face "
            f"cache {cache} and the download of {repo} failed ({type(err).__name__}: {err}). Either "
            f"{PRETRAINED_FALSE}, or on a machine that is online run "
            f"`python -c \"import timm; timm.create_model('{timm_name}', pretrained=True)\"` and copy the folder "
            f"{folder.name} of its Hugging Face cache to {folder} (the folder is $HF_HUB_CACHE, by default "
            f"$HF_HOME/hub)."
        ) from err
