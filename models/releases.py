"""Released weights of the models this project builds: where they are, and the network each fits.

``load_release(name)`` builds the network and loads the published weights (downloaded once into
torch.hub's cache, ``$TORCH_HOME/hub/checkpoints``); offline, the error names the file to put there.
hubconf.py serves these through ``torch.hub.load``.
"""
from dataclasses import dataclass, field
from pathlib import Path

import torch

from utils.errors import ConfigError, NotFoundError

from .loading import load_weights
from .network import VPRNet, build_network

_MIXVPR = {"backbone_arch": "resnet50", "layers_to_crop": [4], "agg_arch": "MixVPR", "image_size": [320, 320]}


@dataclass(frozen=True)
class Release:
    """One published checkpoint: the network's settings, the file and where it is published."""

    architecture: dict
    file_name: str
    url: str
    page: str
    reference: str = ""
    extra: dict = field(default_factory=dict)


def _gdrive(file_id: str) -> str:
    # the direct-download form of a Google Drive share link (confirm=t skips the virus-scan page)
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


RELEASES = {
    "mixvpr_resnet50_4096": Release(
        {**_MIXVPR, "agg_config": {"in_channels": 1024, "in_h": 20, "in_w": 20, "out_channels": 1024, "mix_depth": 4,
                                   "mlp_ratio": 1, "out_rows": 4}},
        "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt", _gdrive("1vuz3PvnR7vxnDDLQrdHJaOA04SQrtk5L"),
        "https://drive.google.com/file/d/1vuz3PvnR7vxnDDLQrdHJaOA04SQrtk5L/view", "MixVPR (WACV 2023), Table 1"),
    "mixvpr_resnet50_512": Release(
        {**_MIXVPR, "agg_config": {"in_channels": 1024, "in_h": 20, "in_w": 20, "out_channels": 256, "mix_depth": 4,
                                   "mlp_ratio": 1, "out_rows": 2}},
        "resnet50_MixVPR_512_channels(256)_rows(2).ckpt", _gdrive("1khiTUNzZhfV2UUupZoIsPIbsMRBYVDqj"),
        "https://drive.google.com/file/d/1khiTUNzZhfV2UUupZoIsPIbsMRBYVDqj/view", "MixVPR (WACV 2023), Table 1"),
    "mixvpr_resnet50_128": Release(
        {**_MIXVPR, "agg_config": {"in_channels": 1024, "in_h": 20, "in_w": 20, "out_channels": 64, "mix_depth": 4,
                                   "mlp_ratio": 1, "out_rows": 2}},
        "resnet50_MixVPR_128_channels(64)_rows(2).ckpt", _gdrive("1DQnefjk1hVICOEYPwE4-CZAZOvi1NSJz"),
        "https://drive.google.com/file/d/1DQnefjk1hVICOEYPwE4-CZAZOvi1NSJz/view", "MixVPR (WACV 2023), Table 1"),
}


def release_file(name: str) -> Path:
    """The release's file in torch.hub's cache, downloaded when absent; an error says how to get it offline."""
    release = RELEASES[name]
    cache = Path(torch.hub.get_dir()) / "checkpoints" / release.file_name
    if cache.is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(release.url, str(cache), progress=True)
    except Exception as err:  # URLError, HTTPError, socket errors: all mean "not available here"
        raise NotFoundError(
            f"cannot download the {name} weights: {cache} is not there and the download from {release.url} failed "
            f"({type(err).__name__}: {err}). Download the file from {release.page} on a machine that is online and "
            f"copy it to {cache} (the folder is $TORCH_HOME/hub/checkpoints), or build the network without "
            f"weights (pretrained=False).") from err
    return cache


def release_network(name: str) -> VPRNet:
    """The network of release ``name``, random weights."""
    if name not in RELEASES:
        raise ConfigError(f"unknown release {name!r}; choose one of {sorted(RELEASES)}")
    return build_network(**RELEASES[name].architecture)


def load_release(name: str, pretrained: bool = True) -> VPRNet:
    """The network of release ``name`` in eval mode, with the published weights when ``pretrained``."""
    net = release_network(name)
    if pretrained:
        load_weights(net, release_file(name))
    return net.eval()
