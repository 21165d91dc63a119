"""Released weights of the models this project builds: where they are, and the network each fits.

``load_release(name)`` builds the network and loads the published weights (downloaded once into
torch.hub's cache, ``$TORCH_HOME/hub/checkpoints``); offline, the error names the file to put there.
hubconf.py serves these through ``torch.hub.load``; a release's name is ``<family>_<backbone>_<dim>``
(``release_name`` finds it).

Each network's ``image_size`` is the size its authors evaluate at: MixVPR and Lightweight-MixVPR 320 x 320
(their MixVPR layers are built for it), BoQ-DINOv2 and SALAD 322 x 322, BoQ-ResNet50 384 x 384 (BoQ and
SALAD take other sizes too; DINOv2 needs multiples of 14).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from dataloaders.preprocessing import Preprocessing
from utils.errors import ConfigError, NotFoundError

from .loading import load_weights
from .network import VPRNet, build_network

_MIXVPR = {"backbone_arch": "resnet50", "layers_to_crop": [4], "agg_arch": "MixVPR", "image_size": [320, 320]}
_BOQ = "https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/"
_LIGHTWEIGHT = "https://github.com/nadhiranoor/Lightweight-MixVPR#weights"


def _mixer(channels: int, side: int, out_channels: int) -> dict:
    """A MixVPR agg_config of the Lightweight-MixVPR releases (4 mixer layers, 4 rows)."""
    return {"in_channels": channels, "in_h": side, "in_w": side, "out_channels": out_channels, "mix_depth": 4,
            "mlp_ratio": 1, "out_rows": 4}


@dataclass(frozen=True)
class Release:
    """One published checkpoint: the network's settings, the file and where it is published."""

    architecture: dict
    file_name: str
    url: str
    page: str
    reference: str = ""
    # the evaluation preprocessing its authors publish; None: the network's image_size (each release's is its
    # published test size) with ImageNet mean/std, resized to exactly that size (``eval_preprocessing``)
    preprocessing: Optional[Preprocessing] = None

    @property
    def eval_preprocessing(self) -> Preprocessing:
        """The preprocessing this release is evaluated with (what ``load_release`` gives its network)."""
        return self.preprocessing or Preprocessing(tuple(self.architecture["image_size"]))


def _drive_release(architecture: dict, file_name: str, file_id: str, reference: str) -> Release:
    """A release shared on Google Drive: downloaded by the direct form of its share link (confirm=t skips
    the virus-scan page), published at the share page."""
    return Release(architecture, file_name,
                   f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t",
                   f"https://drive.google.com/file/d/{file_id}/view", reference)


RELEASES = {
    "mixvpr_resnet50_4096": _drive_release(
        {**_MIXVPR, "agg_config": {"in_channels": 1024, "in_h": 20, "in_w": 20, "out_channels": 1024, "mix_depth": 4,
                                   "mlp_ratio": 1, "out_rows": 4}},
        "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt", "1vuz3PvnR7vxnDDLQrdHJaOA04SQrtk5L", "MixVPR (WACV 2023), Table 1"),
    "mixvpr_resnet50_512": _drive_release(
        {**_MIXVPR, "agg_config": {"in_channels": 1024, "in_h": 20, "in_w": 20, "out_channels": 256, "mix_depth": 4,
                                   "mlp_ratio": 1, "out_rows": 2}},
        "resnet50_MixVPR_512_channels(256)_rows(2).ckpt", "1khiTUNzZhfV2UUupZoIsPIbsMRBYVDqj", "MixVPR (WACV 2023), Table 1"),
    "mixvpr_resnet50_128": _drive_release(
        {**_MIXVPR, "agg_config": {"in_channels": 1024, "in_h": 20, "in_w": 20, "out_channels": 64, "mix_depth": 4,
                                   "mlp_ratio": 1, "out_rows": 2}},
        "resnet50_MixVPR_128_channels(64)_rows(2).ckpt", "1DQnefjk1hVICOEYPwE4-CZAZOvi1NSJz", "MixVPR (WACV 2023), Table 1"),
    # the authors' hub models (amaralibey/Bag-of-Queries hubconf.py, get_trained_boq); keys renamed by
    # models.layouts.boq. DINOv2 without its final norm or class token, as the authors' backbone.
    "boq_dinov2_12288": Release(
        {"backbone_arch": "dinov2_vitb14",
         "backbone_config": {"num_trainable_blocks": 2, "return_token": False, "norm_layer": False},
         "agg_arch": "BoQ", "agg_config": {"in_channels": 768, "proj_channels": 384, "num_queries": 64,
                                           "num_layers": 2, "row_dim": 32},
         "image_size": [322, 322]},
        "dinov2_12288.pth", _BOQ + "dinov2_12288.pth", "https://github.com/amaralibey/Bag-of-Queries/releases/tag/v1.0",
        "BoQ (CVPR 2024)"),
    "boq_resnet50_16384": Release(
        {"backbone_arch": "resnet50", "layers_to_crop": [4], "agg_arch": "BoQ",
         "agg_config": {"in_channels": 1024, "proj_channels": 512, "num_queries": 64, "num_layers": 2, "row_dim": 32},
         "image_size": [384, 384]},
        "resnet50_16384.pth", _BOQ + "resnet50_16384.pth", "https://github.com/amaralibey/Bag-of-Queries/releases/tag/v1.0",
        "BoQ (CVPR 2024)"),
    # serizba/salad's hub model (hubconf.py, dinov2_salad): a bare state_dict with our keys
    "salad_dinov2_8448": Release(
        {"backbone_arch": "dinov2_vitb14",
         "backbone_config": {"num_trainable_blocks": 4, "return_token": True, "norm_layer": True},
         "agg_arch": "SALAD", "agg_config": {"num_channels": 768, "num_clusters": 64, "cluster_dim": 128, "token_dim": 256},
         "image_size": [322, 322]},
        "dino_salad.ckpt", "https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt",
        "https://github.com/serizba/salad/releases/tag/v1.0.0", "DINOv2 SALAD (CVPR 2024)"),
    # the Lightweight-MixVPR project's README "Weights" table (Google Drive). The networks are its published
    # constructor calls, which its demo_query.py loads these files into (Lightning checkpoints for the first
    # two, a bare state_dict for the student); its README lists the last two as 2048-d and 1024-d, which a
    # file's own shapes would settle (load_weights names any shape that does not fit). The EfficientNet
    # needs timm. Configs: configs/lightweight_efficientnet_b0_128.yaml, lightweight_mobilenet_v2_1024.yaml,
    # distilled_resnet18_512.yaml.
    "lightweight_efficientnet_b0_128": _drive_release(
        {"backbone_arch": "efficientnet_b0", "layers_to_crop": [], "agg_arch": "MixVPR",
         "agg_config": _mixer(1280, 10, 32), "image_size": [320, 320]},
        "lightweight_mixvpr_efficientnet_b0_128.ckpt", "1FKG3Q4JlmN3i0FcixZYZXuEtVySmVW1_", "Lightweight-MixVPR, README"),
    "lightweight_mobilenet_v2_1024": _drive_release(
        {"backbone_arch": "mobilenet_v2", "layers_to_crop": [], "agg_arch": "MixVPR",
         "agg_config": _mixer(512, 20, 256), "image_size": [320, 320]},
        "lightweight_mixvpr_mobilenet_v2_1024.ckpt", "1zwumBOinylXe77KwDhZjUffwxGLyx3s9", "Lightweight-MixVPR, README"),
    "lightweight_resnet18_512": _drive_release(
        {"backbone_arch": "resnet18", "layers_to_crop": [4], "agg_arch": "MixVPR",
         "agg_config": _mixer(256, 20, 128), "image_size": [320, 320]},
        "lightweight_mixvpr_kd_resnet18_512.ckpt", "1C3dLL5-IVEuLKWp5laZAwiEwP2feQw9J", "Lightweight-MixVPR, README (KD)"),
}


def release_name(family: str, backbone: str, descriptors_dimension: Optional[int] = None) -> str:
    """The name of ``family``'s release (mixvpr, boq, salad, lightweight) for ``backbone`` with descriptors of
    ``descriptors_dimension`` (None: the backbone's only release); ConfigError listing the family's releases."""
    prefix = f"{family}_{backbone}_"
    matches = [n for n in RELEASES if n.startswith(prefix)
               and (descriptors_dimension is None or n == f"{prefix}{descriptors_dimension}")]
    if len(matches) != 1:
        choices = sorted(n for n in RELEASES if n.startswith(f"{family}_"))
        raise ConfigError(f"no {family} release for backbone={backbone!r}, descriptors_dimension={descriptors_dimension}"
                          f"{' (several: give one)' if matches else ''}; the releases are {choices}")
    return matches[0]


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
    """The network of release ``name``, random weights, with the release's evaluation preprocessing."""
    if name not in RELEASES:
        raise ConfigError(f"unknown release {name!r}; choose one of {sorted(RELEASES)}")
    net = build_network(**RELEASES[name].architecture)
    net.preprocessing = RELEASES[name].eval_preprocessing
    return net


def load_release(name: str, pretrained: bool = True) -> VPRNet:
    """The network of release ``name`` in eval mode, with the published weights when ``pretrained``."""
    net = release_network(name)
    if pretrained:
        load_weights(net, release_file(name))
    return net.eval()
