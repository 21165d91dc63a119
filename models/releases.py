"""Released weights of the models this project builds: where they are, and the network each fits.

``load_release(name)`` builds the network and loads the published weights (downloaded once into
torch.hub's cache, ``$TORCH_HOME/hub/checkpoints``); offline, the error names the file to put there.
hubconf.py serves these through ``torch.hub.load``; a release's name is ``<family>_<backbone>_<dim>``
(``release_name`` finds it).

A release file is verified by its SHA-256 before every use (about 0.5 s for a 350 MB file here): against
the release's published digest (``Release.sha256``) where there is one, else against the hash recorded
beside the file (``<file>.sha256.json``) when this project downloaded it. A download is written beside its
target and moved in only when it matches; a file that does not match, or one put in the cache by hand
that has no record, is refused with its hash and what to do (delete it, or accept it:
``python -m models.releases trust <name> <sha256>``).

Each release's evaluation preprocessing is its authors' (``Release.preprocessing``): MixVPR and Lightweight-MixVPR
resize to 320 x 320 (their MixVPR layers are built for it), BoQ-DINOv2, SALAD and CliqueMining to 322 x 322,
BoQ-ResNet50 to 384 x 384 (BoQ and SALAD take other sizes too; DINOv2 needs multiples of 14); CosPlace,
EigenPlaces, NetVLAD and MegaLoc take each image at its own resolution (their test code, and
VPR-methods-evaluation's without --image_size), MegaLoc rounding it to multiples of 14 inside its forward pass.
Their ``image_size`` is then the size the network is built and exported at (SF-XL's 512 x 512, Pittsburgh's
480 x 640, 322 x 322). A ``release:<name>`` entry names a release wherever a checkpoint is asked for (eval.py,
retrieve.py, distillation.teacher_checkpoint), and a release's file under its published name is known by it
(``release_of_file``).
"""
import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from dataloaders.preprocessing import Preprocessing
from utils.errors import CheckpointError, ConfigError, NotFoundError
from utils.files import atomic_path, atomic_write_text, file_sha256

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
    sha256: Optional[str] = None  # the digest its publisher gives; None: none is published (see RELEASES)
    # the evaluation preprocessing its authors publish; None: the network's image_size (each release's is its
    # published test size) with ImageNet mean/std, resized to exactly that size (``eval_preprocessing``)
    preprocessing: Optional[Preprocessing] = None

    @property
    def eval_preprocessing(self) -> Preprocessing:
        """The preprocessing this release is evaluated with (what ``load_release`` gives its network)."""
        return self.preprocessing or Preprocessing(tuple(self.architecture["image_size"]))


# CosPlace's and EigenPlaces' published backbones and descriptor sizes (their hubconf.py AVAILABLE_TRAINED_MODELS,
# CosPlace at 33ce8d0, EigenPlaces at a2969f7), the channels their backbone gives the head, and the size their
# evaluation resizes to: none (test.py without --resize_test_imgs), so 512 x 512, SF-XL's test size, is only the
# size the network is built and exported at
COSPLACE_DIMS = {"VGG16": (64, 128, 256, 512), "ResNet18": (32, 64, 128, 256, 512),
                 "ResNet50": (32, 64, 128, 256, 512, 1024, 2048), "ResNet101": (32, 64, 128, 256, 512, 1024, 2048),
                 "ResNet152": (32, 64, 128, 256, 512, 1024, 2048)}
EIGENPLACES_DIMS = {"VGG16": (512,), "ResNet18": (256, 512), "ResNet50": (128, 256, 512, 1024, 2048),
                    "ResNet101": (128, 256, 512, 1024, 2048)}
_CHANNELS = {"VGG16": 512, "ResNet18": 512, "ResNet50": 2048, "ResNet101": 2048, "ResNet152": 2048}
_NATIVE_512 = Preprocessing((512, 512), resize="none")


def _geolocalization_releases(project: str, suffix: str, dims: dict, reference: str) -> dict:
    """CosPlace's or EigenPlaces' GitHub releases (v1.0): ``{backbone}_{dim}_{suffix}.pth`` state_dicts of
    their GeoLocalizationNet, the whole torchvision trunk + the CosPlace head (models.layouts.cosplace)."""
    releases = {}
    for backbone, sizes in dims.items():
        for dim in sizes:
            architecture = {"backbone_arch": backbone.lower(), "layers_to_crop": [], "agg_arch": "CosPlace",
                            "agg_config": {"in_channels": _CHANNELS[backbone], "out_dim": dim},
                            "image_size": [512, 512]}
            file_name = f"{backbone}_{dim}_{suffix}.pth"
            releases[f"{suffix}_{backbone.lower()}_{dim}"] = Release(
                architecture, file_name, f"https://github.com/gmberton/{project}/releases/download/v1.0/{file_name}",
                f"https://github.com/gmberton/{project}/releases/tag/v1.0", reference, preprocessing=_NATIVE_512)
    return releases


def _netvlad(whitening_dim: Optional[int]) -> dict:
    """NetVLAD's MATLAB release (VGG16 to conv5_3, 64 clusters, no assignment bias) with or without its WPCA."""
    return {"backbone_arch": "vgg16", "layers_to_crop": [], "backbone_config": {"matconvnet_input": True},
            "agg_arch": "NetVLAD", "agg_config": {"in_channels": 512, "num_clusters": 64, "assignment_bias": False,
                                                  "whitening_dim": whitening_dim},
            "image_size": [480, 640]}


# NetVLAD evaluated with each image at its own resolution (VPR-methods-evaluation without --image_size), built at
# Pittsburgh's 480 x 640; its trunk turns the ImageNet-normalised input into its own (models.backbones.vgg)
_NETVLAD_INPUT = Preprocessing((480, 640), resize="none")
_NETVLAD_FILE = "https://cvg-data.inf.ethz.ch/hloc/netvlad/Pitts30K_struct.mat"
_NETVLAD_PAGE = "https://github.com/Relja/netvlad"


# MegaLoc (gmberton/MegaLoc megaloc_model.py): DINOv2 ViT-B/14, final norm and class token, all 12 blocks, images
# resized inside the forward pass to multiples of 14 (after the normalisation) -> SALAD 64 x 256 + 256 -> linear
# 8448. num_trainable_blocks is a training setting only (MegaLoc's training code is not published; SALAD's 4 here).
# Evaluated with each image at its own resolution (VPR-methods-evaluation, to which its README points, has no
# --image_size for it and no resizing wrapper: the network rounds the size itself); built at 322 x 322.
_MEGALOC = {"backbone_arch": "dinov2_vitb14",
            "backbone_config": {"num_trainable_blocks": 4, "return_token": True, "norm_layer": True,
                                "resize_to_patches": True},
            "agg_arch": "MegaLoc", "agg_config": {"num_channels": 768, "num_clusters": 64, "cluster_dim": 256,
                                                  "token_dim": 256, "out_dim": 8448},
            "image_size": [322, 322]}
_MEGALOC_INPUT = Preprocessing((322, 322), resize="none")


def _drive_release(architecture: dict, file_name: str, file_id: str, reference: str) -> Release:
    """A release shared on Google Drive: downloaded by the direct form of its share link (confirm=t skips
    the virus-scan page), published at the share page."""
    return Release(architecture, file_name,
                   f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t",
                   f"https://drive.google.com/file/d/{file_id}/view", reference)


# Published SHA-256 digests: none found for any of these files (searched: the authors' READMEs and hubconf.py
# at amaralibey/MixVPR 4043915, amaralibey/Bag-of-Queries 1a4965e, serizba/salad e593005,
# nadhiranoor/Lightweight-MixVPR 8d2a6e0; their GitHub release pages and issues; Hugging Face file listings;
# none of the file names carries torch.hub's hash prefix, name-<sha256 prefix>.ext), nor for the families added
# since (the READMEs and hubconf.py of gmberton/CosPlace 33ce8d0, gmberton/EigenPlaces a2969f7, gmberton/MegaLoc
# 1af071c, serizba/cliquemining f7c4e8f, Relja/netvlad 652dbe7; VPR-methods-evaluation adbb6e2, which downloads
# NetVLAD's file with wget and CliqueMining's with gdown, unchecked). Hugging Face lists a SHA-256 for each
# large file (gberton/MegaLoc model.safetensors): it could not be read from here; it may be pinned once read there. So each entry's sha256 is
# None and a file is checked against the hash recorded when this project downloaded it. Never write a digest
# here that was not published for the file.
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
    # CosPlace (CVPR 2022) and EigenPlaces (ICCV 2023), trained on SF-XL: every published backbone and size
    **_geolocalization_releases("CosPlace", "cosplace", COSPLACE_DIMS, "CosPlace (CVPR 2022)"),
    **_geolocalization_releases("EigenPlaces", "eigenplaces", EIGENPLACES_DIMS, "EigenPlaces (ICCV 2023)"),
    # NetVLAD (CVPR 2016), vd16_pitts30k_conv5_3_vlad_preL2_intra_white, as hloc converted it and VPR-methods-
    # evaluation loads it (vpr_models/netvlad.py): one MatConvNet file for both sizes, the 4096-d one with the
    # PCA whitening (models.layouts.netvlad reads it)
    "netvlad_vgg16_4096": Release(_netvlad(4096), "Pitts30K_struct.mat", _NETVLAD_FILE, _NETVLAD_PAGE,
                                  "NetVLAD (CVPR 2016), VGG16 + NetVLAD + whitening, Pitts30k",
                                  preprocessing=_NETVLAD_INPUT),
    # MegaLoc (CVPR Workshops 2025): the file its hubconf.py loads now (Hugging Face, safetensors;
    # models.layouts.megaloc) and the one it loaded first (GitHub release v1.0, a state_dict in our keys)
    "megaloc_dinov2_8448": Release(_MEGALOC, "megaloc.safetensors",
                                   "https://huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors",
                                   "https://huggingface.co/gberton/MegaLoc", "MegaLoc (CVPR Workshops 2025)",
                                   preprocessing=_MEGALOC_INPUT),
    "megaloc_dinov2_8448_github": Release(_MEGALOC, "megaloc.torch",
                                          "https://github.com/gmberton/MegaLoc/releases/download/v1.0/megaloc.torch",
                                          "https://github.com/gmberton/MegaLoc/releases/tag/v1.0",
                                          "MegaLoc (CVPR Workshops 2025), first release", preprocessing=_MEGALOC_INPUT),
    # CliqueMining (ECCV 2024): SALAD's network (serizba/cliquemining is SALAD's code; VPR-methods-evaluation loads
    # the file into serizba/salad's hub model), trained with clique mining; a Lightning checkpoint shared on Google
    # Drive (its README); evaluated as SALAD's at 322 x 322 ("follow the same steps as with SALAD")
    "clique_mining_dinov2_8448": _drive_release(
        {"backbone_arch": "dinov2_vitb14",
         "backbone_config": {"num_trainable_blocks": 4, "return_token": True, "norm_layer": True},
         "agg_arch": "SALAD",
         "agg_config": {"num_channels": 768, "num_clusters": 64, "cluster_dim": 128, "token_dim": 256},
         "image_size": [322, 322]},
        "cliquemining.ckpt", "1B06ysb-Wjb4KDcNrl-7pyj1mJve1jqdk", "CliqueMining (ECCV 2024)"),
    "netvlad_vgg16_32768": Release(_netvlad(None), "Pitts30K_struct.mat", _NETVLAD_FILE, _NETVLAD_PAGE,
                                   "NetVLAD (CVPR 2016), VGG16 + NetVLAD, Pitts30k", preprocessing=_NETVLAD_INPUT),
}


def release_name(family: str, backbone: str, descriptors_dimension: Optional[int] = None) -> str:
    """The name of ``family``'s release (mixvpr, boq, salad, lightweight, cosplace, eigenplaces, netvlad ...) for
    ``backbone`` (any case: the authors write ResNet50) with descriptors of ``descriptors_dimension`` (None: the
    backbone's only release); ConfigError listing the family's releases."""
    prefix = f"{family}_{str(backbone).lower()}_"
    matches = [n for n in RELEASES if n.startswith(prefix)
               and (descriptors_dimension is None or n == f"{prefix}{descriptors_dimension}")]
    if len(matches) != 1:
        choices = sorted(n for n in RELEASES if n.startswith(f"{family}_"))
        raise ConfigError(f"no {family} release for backbone={backbone!r}, descriptors_dimension={descriptors_dimension}"
                          f"{' (several: give one)' if matches else ''}; the releases are {choices}")
    return matches[0]


# a checkpoint entry naming a published release instead of a file: eval.py and retrieve.py --checkpoint,
# distillation.teacher_checkpoint (``release:cosplace_resnet50_2048``)
RELEASE_PREFIX = "release:"


def release_in(checkpoint: str | Path) -> Optional[str]:
    """The release named by a ``release:<name>`` checkpoint entry, or None for a file; ConfigError listing the
    releases for an unknown name."""
    text = str(checkpoint)
    if not text.startswith(RELEASE_PREFIX):
        return None
    name = text[len(RELEASE_PREFIX):].strip()
    if name not in RELEASES:
        raise ConfigError(f"{text}: no release {name!r}; the releases are {sorted(RELEASES)}")
    return name


def release_of_file(path: str | Path) -> Optional[str]:
    """The release whose published file name ``path`` has (``Release.file_name``: the name it has in torch.hub's
    cache, and when copied elsewhere), or None. File names are unique across RELEASES."""
    name = Path(path).name
    found = [n for n, r in RELEASES.items() if r.file_name == name]
    return found[0] if len(found) == 1 else None


RECORD_SUFFIX = ".sha256.json"
TRUST = "python -m models.releases trust"


def cache_path(name: str) -> Path:
    """Where release ``name``'s file is kept: torch.hub's cache, ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / RELEASES[name].file_name


def record_path(cache: Path) -> Path:
    """The record of the hash of ``cache`` (the file this project downloaded or the user accepted)."""
    return cache.with_name(cache.name + RECORD_SUFFIX)


def _write_record(name: str, cache: Path, sha256: str, size: int, source: str) -> None:
    record = {"release": name, "file": cache.name, "sha256": sha256, "size": size, "source": source,
              "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(record_path(cache), json.dumps(record, indent=1) + "\n")


def _recorded_sha256(cache: Path) -> Optional[str]:
    try:
        return str(json.loads(record_path(cache).read_text())["sha256"])
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable or not one of our records
        return None


def verify_release_file(name: str, path: Path) -> str:
    """The SHA-256 of ``path``, checked as release ``name``'s file: against its published digest, else against
    the hash recorded beside it; CheckpointError naming the file, both hashes and what to do otherwise."""
    release = RELEASES[name]
    actual = file_sha256(path)
    again = f"Delete it and run again to download it anew (from {release.url}, published at {release.page})."
    if release.sha256 is not None:
        if actual != release.sha256:
            raise CheckpointError(f"{path} is not the published {name} weights: its SHA-256 is {actual}, the "
                                  f"published one is {release.sha256} (truncated, corrupt or another file). {again}")
        return actual
    recorded = _recorded_sha256(path)
    if recorded is None:
        raise CheckpointError(f"{path} was not downloaded by this project and {name} has no published SHA-256 to check "
                              f"it against: its SHA-256 is {actual}. If it is the file from {release.page}, accept "
                              f"it with: {TRUST} {name} {actual} (or delete it to download it anew)")
    if recorded != actual:
        raise CheckpointError(f"{path} changed since it was recorded: its SHA-256 is {actual}, the recorded one "
                              f"{recorded} ({record_path(path).name}). {again}")
    return actual


def release_file(name: str) -> Path:
    """The release's file in torch.hub's cache, verified (``verify_release_file``); downloaded when absent,
    beside its place, and moved in only when it matches. Offline, the error says how to get it."""
    release = RELEASES[name]
    cache = cache_path(name)
    if cache.is_file():
        verify_release_file(name, cache)
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as partial:
        try:
            torch.hub.download_url_to_file(release.url, str(partial), progress=True)
        except Exception as err:  # URLError, HTTPError, socket errors: all mean "not available here"
            accept = "" if release.sha256 else f", then accept it with {TRUST} {name} <its sha256>"
            raise NotFoundError(
                f"cannot download the {name} weights: {cache} is not there and the download from {release.url} "
                f"failed ({type(err).__name__}: {err}). Download the file from {release.page} on a machine that "
                f"is online and copy it to {cache} (the folder is $TORCH_HOME/hub/checkpoints){accept}; or build "
                f"the network without weights (pretrained=False).") from err
        actual = file_sha256(partial)
        if release.sha256 is not None and actual != release.sha256:
            raise CheckpointError(f"the download of the {name} weights from {release.url} has SHA-256 {actual}, not "
                                  f"the published {release.sha256}: cut short or changed at the source; nothing "
                                  f"was kept in {cache.parent}. Run again to retry, or get the file from {release.page}.")
        if release.sha256 is None:  # recorded first: a file in the cache is never without its record
            _write_record(name, cache, actual, partial.stat().st_size, release.url)
    return cache


def trust(name: str, sha256: str) -> Path:
    """Accept the file in the cache as release ``name``'s (one copied there by hand, for a release without a
    published digest) after checking that it has ``sha256``, the hash the user checked; returns the record."""
    if name not in RELEASES:
        raise ConfigError(f"unknown release {name!r}; choose one of {sorted(RELEASES)}")
    release, cache = RELEASES[name], cache_path(name)
    if release.sha256 is not None:
        raise ConfigError(f"{name} has a published SHA-256 ({release.sha256}): a file that does not match it is not "
                          f"the release, and one that does needs no accepting")
    if not cache.is_file():
        raise NotFoundError(f"{cache} is not there: copy {name}'s file from {release.page} there first")
    actual = file_sha256(cache)
    if actual != sha256.strip().lower():
        raise CheckpointError(f"{cache} has SHA-256 {actual}, not the {sha256} given: not the file that was checked")
    _write_record(name, cache, actual, cache.stat().st_size, f"accepted by the user ({TRUST})")
    return record_path(cache)


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


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """``python -m models.releases trust <name> <sha256>``: accept a release file put in the cache by hand."""
    parser = argparse.ArgumentParser(prog="python -m models.releases", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    accept = commands.add_parser("trust", help="accept the file in torch.hub's cache as the release's")
    accept.add_argument("name", help=f"the release: {', '.join(sorted(RELEASES))}")
    accept.add_argument("sha256", help="the file's SHA-256, as the error that refused it gave it")
    args = parser.parse_args(argv)
    record = trust(args.name, args.sha256)
    print(f"{cache_path(args.name)} accepted as {args.name}: its SHA-256 is recorded in {record}")
    return record


if __name__ == "__main__":
    from utils.cli import run_command

    run_command(main)
