"""torch.hub entry points: each builds its release's network (the released keys and shapes, descriptor size
and test image size) and loads the published file from torch.hub's cache; offline without the file, the
error names where to put it."""
import gzip
import json
import urllib.error
from pathlib import Path

import pytest
import torch

from models.layouts import boq as boq_layout, lightweight as lightweight_layout
from reference_weights import seeded_state_dict, shapes_of
from release_layouts import (boq_layout as boq_aggregator, dinov2_layout, mixvpr_layout, prefixed, release,
                             resnet_layout, resnet_sequential_layout, salad_layout)
from utils.errors import CheckpointError, ConfigError, NotFoundError

REPO = Path(__file__).resolve().parents[1]
LIGHTWEIGHT = json.loads(gzip.decompress((REPO / "tests" / "data" / "lightweight_mixvpr_layouts.json.gz").read_bytes()))


def lightweight_release(name: str) -> dict:
    """That project's saved layout (read off its own code, tests/data) under our names."""
    return lightweight_layout.to_ours({k: tuple(v) for k, v in LIGHTWEIGHT["networks"][name]["layout"].items()})


# entry, its arguments -> (the release's layout under our keys, descriptor size, image size)
ENTRIES = {
    ("mixvpr", "resnet50", 4096): (
        release(prefixed("backbone.model.", resnet_layout("resnet50")), mixvpr_layout(1024, 400, 1024, 4, 4)),
        4096, (320, 320)),
    ("boq", "dinov2", None): (
        boq_layout.to_ours(release(prefixed("backbone.dino.", dinov2_layout(768, 12)),
                                   boq_aggregator(768, 384, 64, 2, 32))), 12288, (322, 322)),
    ("boq", "resnet50", 16384): (
        boq_layout.to_ours(release(prefixed("backbone.", resnet_sequential_layout("resnet50")),
                                   boq_aggregator(1024, 512, 64, 2, 32))), 16384, (384, 384)),
    ("salad", "dinov2", None): (
        release(prefixed("backbone.model.", dinov2_layout(768, 12)), salad_layout(768, 64, 128, 256)),
        8448, (322, 322)),
    ("lightweight_mixvpr", "efficientnet_b0", None): (lightweight_release("efficientnet_b0_128"), 128, (320, 320)),
    ("lightweight_mixvpr", "mobilenet_v2", 1024): (lightweight_release("mobilenet_v2_1024"), 1024, (320, 320)),
    ("lightweight_mixvpr", "resnet18", None): (lightweight_release("resnet18_512"), 512, (320, 320)),
}


def hub_load(entry: str, **kwargs) -> torch.nn.Module:
    return torch.hub.load(str(REPO), entry, source="local", **kwargs)


def dimension(value) -> dict:
    return {} if value is None else {"descriptors_dimension": value}


@pytest.mark.parametrize("entry,backbone,dim", list(ENTRIES), ids=[f"{e}-{b}" for e, b, _ in ENTRIES])
def test_hub_entry_builds_the_release_network(entry, backbone, dim):
    layout, descriptor_dim, image_size = ENTRIES[entry, backbone, dim]
    with torch.device("meta"):
        net = hub_load(entry, backbone=backbone, pretrained=False, **dimension(dim))
    assert shapes_of(net.state_dict()) == layout
    assert (net.descriptor_dim, net.image_size, net.training) == (descriptor_dim, image_size, False)
    # the release's evaluation preprocessing: its published test size, ImageNet mean/std
    assert (net.preprocessing.image_size, net.mean, net.std) == (image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_hub_entry_names_the_releases_of_its_family():
    with pytest.raises(ConfigError, match=r"no boq release for backbone='resnet18', descriptors_dimension=None; "
                                          r"the releases are \['boq_dinov2_12288', 'boq_resnet50_16384'\]"):
        hub_load("boq", backbone="resnet18", pretrained=False)
    with pytest.raises(ConfigError, match=r"no mixvpr release .* descriptors_dimension=2048"):
        hub_load("mixvpr", descriptors_dimension=2048, pretrained=False)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch.hub cache under tmp_path; downloads fail as offline."""
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


@pytest.mark.parametrize("entry,backbone,file_name,url", [
    ("boq", "dinov2", "dinov2_12288.pth",
     "https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/dinov2_12288.pth"),
    ("boq", "resnet50", "resnet50_16384.pth",
     "https://github.com/amaralibey/Bag-of-Queries/releases/download/v1.0/resnet50_16384.pth"),
    ("salad", "dinov2", "dino_salad.ckpt", "https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt"),
    ("lightweight_mixvpr", "mobilenet_v2", "lightweight_mixvpr_mobilenet_v2_1024.ckpt", "1zwumBOinylXe77KwDhZjUffwxGLyx3s9"),
])
def test_pretrained_offline_names_the_file_to_put_in_the_cache(torch_home, entry, backbone, file_name, url):
    with torch.device("meta"), pytest.raises(NotFoundError) as error:
        hub_load(entry, backbone=backbone, pretrained=True)
    message = str(error.value)
    assert str(torch_home / "hub" / "checkpoints" / file_name) in message
    assert url in message and "pretrained=False" in message


@pytest.mark.parametrize("backbone,name,as_lightning", [
    ("efficientnet_b0", "efficientnet_b0_128", True), ("resnet18", "resnet18_512", False)])
def test_pretrained_loads_the_release_from_the_cache(torch_home, backbone, name, as_lightning):
    from models.releases import RELEASES, file_sha256, release_name, trust

    saved = {k: tuple(v) for k, v in LIGHTWEIGHT["networks"][name]["layout"].items()}
    weights = seeded_state_dict(saved)
    cache = torch_home / "hub" / "checkpoints" / RELEASES[release_name("lightweight", backbone)].file_name
    cache.parent.mkdir(parents=True)
    # as that project saved them: a Lightning checkpoint (with its classifier) or a bare state_dict
    torch.save({"state_dict": weights, "epoch": 73} if as_lightning else weights, cache)
    # a file put in the cache by hand has no record of a download: it is used once accepted by its hash
    with pytest.raises(CheckpointError, match=r"was not downloaded by this project.*python -m models.releases trust"):
        hub_load("lightweight_mixvpr", backbone=backbone, pretrained=True)
    trust(release_name("lightweight", backbone), file_sha256(cache))
    net = hub_load("lightweight_mixvpr", backbone=backbone, pretrained=True)
    state = net.state_dict()
    assert set(state) == set(lightweight_layout.to_ours(weights))
    assert all(torch.equal(state[k], weights[k]) for k in state)
