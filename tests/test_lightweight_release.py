"""The Lightweight-MixVPR project's networks: its constructor calls, its saved weights, its descriptors.

Reference data in tests/data/ comes from running that project's own code (its VPRModel, helper and
backbones, with timm 0.6.12 as it pinned; weight downloads patched out) outside this repository, on the
weights ``seeded_weights`` makes from each key's name:
``lightweight_mixvpr_layouts.json.gz``: per network its state_dict keys and shapes and its frozen
parameter names; ``lightweight_mixvpr_descriptors.npz``: its descriptors of ``images(...)``.
"""
import gzip
import json
import math
import socket
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision

from main import VPRModel, load_weights
from models import backbones
from models.backbones import build_backbone
from models.backbones.swin import SWINS, SwinV2
from models.layouts import lightweight
from models.architecture import infer_architecture, matching_configs
from reference_weights import cache_as_published

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads(gzip.decompress((DATA / "lightweight_mixvpr_layouts.json.gz").read_bytes()))["networks"]
DESCRIPTORS = np.load(DATA / "lightweight_mixvpr_descriptors.npz")
SWIN = "swinv2_base_window12to16_192to256_22kft1k"

# the project's published constructor calls, verbatim (README "Training" and kd_train.py)
EFFICIENTNET_CALL = dict(backbone_arch='efficientnet_b0', layers_to_freeze=2, layers_to_crop=[4], agg_arch='MixVPR',
                         agg_config={'in_channels': 1280, 'in_h': 10, 'in_w': 10, 'out_channels': 32, 'mix_depth': 4,
                                     'mlp_ratio': 1, 'out_rows': 4})
MOBILENET_CALL = dict(backbone_arch='mobilenet_v2', pretrained=False, layers_to_freeze=2, layers_to_crop=[4],
                      agg_arch='MixVPR', agg_config={'in_channels': 512, 'in_h': 20, 'in_w': 20, 'out_channels': 256,
                                                     'mix_depth': 4, 'mlp_ratio': 1, 'out_rows': 4})
STUDENT_CALL = dict(backbone_arch='resnet18', pretrained=False, layers_to_freeze=2, layers_to_crop=[4],
                    agg_arch='MixVPR', agg_config={'in_channels': 256, 'in_h': 20, 'in_w': 20, 'out_channels': 128,
                                                   'mix_depth': 4, 'mlp_ratio': 1, 'out_rows': 4})
TINY_SWIN = REFERENCE["swinv2_tiny_16"]["config"]


def seeded_weights(layout: dict) -> dict:
    """Deterministic tensors for {key: shape}, each seeded by its key's name: He-scaled weights, BN and
    LayerNorm scales near 1, small shifts, positive running variances."""
    out = {}
    for key, shape in layout.items():
        shape = tuple(shape)
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) >= 2:
            out[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))
        elif key.endswith(".weight"):
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[key] = 0.1 * torch.randn(shape, generator=g)
    return out


def images(n: int, size: int) -> torch.Tensor:
    """The reference's input: ``n`` seeded random images of ``size`` x ``size``."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def mixvpr_layout(channels: int, hw: int, out_channels: int, depth: int, rows: int) -> dict:
    """Keys and shapes of a MixVPR aggregator (the original project's names) under ``aggregator.``."""
    keys = {}
    for i in range(depth):
        p = f"aggregator.mix.{i}.mix."
        keys |= {p + "0.weight": (hw,), p + "0.bias": (hw,), p + "1.weight": (hw, hw), p + "1.bias": (hw,),
                 p + "3.weight": (hw, hw), p + "3.bias": (hw,)}
    return keys | {"aggregator.channel_proj.weight": (out_channels, channels),
                   "aggregator.channel_proj.bias": (out_channels,),
                   "aggregator.row_proj.weight": (rows, hw), "aggregator.row_proj.bias": (rows,)}


def mixvpr_reference(x: torch.Tensor, sd: dict, depth: int) -> torch.Tensor:
    """MixVPR written out from the paper with the tensors of ``sd``: (B, C, H, W) -> (B, D)."""
    h = x.flatten(2)
    for i in range(depth):
        p = f"aggregator.mix.{i}.mix."
        z = F.layer_norm(h, h.shape[-1:], sd[p + "0.weight"], sd[p + "0.bias"])
        h = h + F.linear(F.relu(F.linear(z, sd[p + "1.weight"], sd[p + "1.bias"])), sd[p + "3.weight"], sd[p + "3.bias"])
    h = F.linear(h.transpose(1, 2), sd["aggregator.channel_proj.weight"], sd["aggregator.channel_proj.bias"])
    h = F.linear(h.transpose(1, 2), sd["aggregator.row_proj.weight"], sd["aggregator.row_proj.bias"])
    return F.normalize(h.flatten(1), dim=-1)


def shapes(state_dict: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def reference_layout(name: str) -> dict:
    return {k: tuple(v) for k, v in REFERENCE[name]["layout"].items()}


def frozen(module: torch.nn.Module) -> set:
    return {n for n, p in module.named_parameters() if not p.requires_grad}


def as_ours(backbone_names) -> set:
    """Backbone parameter names of that project's layout, renamed to ours by the state_dict mapping."""
    renamed = lightweight.to_ours({f"backbone.{n}": None for n in backbone_names})
    return {k[len("backbone."):] for k in renamed}


# ------------------------------------------------------------------ EfficientNet-B0, 128-d
def test_published_efficientnet_call_loads_the_release_and_gives_its_descriptors(tmp_path):
    model = VPRModel(**EFFICIENTNET_CALL).eval()
    # the release's layout, derived from timm's own model: its whole state_dict (classifier included)
    trunk = timm.create_model("efficientnet_b0")
    release = {f"backbone.model.{k}": tuple(v.shape) for k, v in trunk.state_dict().items()}
    release |= mixvpr_layout(1280, 100, 32, 4, 4)
    assert release == reference_layout("efficientnet_b0_128")
    assert "backbone.model.classifier.weight" in release
    weights = seeded_weights(release)
    assert lightweight.is_layout(weights)
    ours = lightweight.to_ours(weights)
    assert set(weights) - set(ours) == {"backbone.model.classifier.weight", "backbone.model.classifier.bias"}
    # the release file, as that project saved it, through the one public loader (strict after the rename)
    torch.save(weights, tmp_path / "efficientnet_b0_128.ckpt")
    load_weights(model, tmp_path / "efficientnet_b0_128.ckpt")
    x = images(2, 320)
    with torch.no_grad():
        got = model(x)
        trunk.load_state_dict({k[len("backbone.model."):]: v for k, v in weights.items() if k.startswith("backbone.")})
        expected = mixvpr_reference(trunk.eval().forward_features(x), weights, depth=4)
    assert got.shape == (2, 128)
    torch.testing.assert_close(got, torch.from_numpy(DESCRIPTORS["efficientnet_b0_128"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_efficientnet_freezes_what_that_project_froze():
    model = VPRModel(**EFFICIENTNET_CALL)
    assert frozen(model) == set(REFERENCE["efficientnet_b0_128"]["frozen"])
    by_k = REFERENCE["efficientnet_b0_128"]["frozen_by_k"]
    for k in range(0, 5):
        backbone = build_backbone("efficientnet_b0", pretrained=False, layers_to_freeze=k, layers_to_crop=[4])
        assert frozen(backbone) == set(by_k[str(k)]), k
    # our one departure: -1 trains everything (there it froze conv_stem and blocks 0-2)
    assert not frozen(build_backbone("efficientnet_b0", pretrained=False, layers_to_freeze=-1))


@pytest.mark.parametrize("name, channels", [("efficientnet_b0", 1280), ("efficientnet_b1", 1280),
                                            ("efficientnet_b2", 1408), ("efficientnet_b3", 1536),
                                            ("efficientnet_b4", 1792)])
def test_efficientnet_is_timms_whole_trunk_at_stride_32(name, channels):
    backbone = build_backbone(name, pretrained=False, layers_to_freeze=-1).eval()
    assert (backbone.out_channels, backbone.stride) == (channels, 32)
    trunk = timm.create_model(name, num_classes=0)
    assert shapes(backbone.state_dict()) == {f"model.{k}": s for k, s in shapes(trunk.state_dict()).items()}
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, 64, 96)).shape == (1, channels, 2, 3)


# ------------------------------------------------------------------ MobileNetV2 with the upsampled 512-channel head
def test_published_mobilenet_call_loads_the_release_and_gives_its_descriptors():
    model = VPRModel(**MOBILENET_CALL).eval()
    torchvision_features = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    release = {f"backbone.model.features.{k}": tuple(v.shape) for k, v in torchvision_features.items()
               if int(k.split(".")[0]) < 18}
    release |= {"backbone.model.features.18.weight": (512, 320, 1, 1), "backbone.model.features.18.bias": (512,)}
    release |= {f"backbone.model.features.19.{k}": (512,) for k in ("weight", "bias", "running_mean", "running_var")}
    release |= {"backbone.model.features.19.num_batches_tracked": ()}
    release |= mixvpr_layout(512, 400, 256, 4, 4)
    assert release == reference_layout("mobilenet_v2_1024")
    weights = seeded_weights(release)
    assert lightweight.is_layout(weights) and lightweight.to_ours(weights) == weights
    model.load_state_dict(weights)
    with torch.no_grad():
        got = model(images(2, 320))
    assert got.shape == (2, 1024)
    torch.testing.assert_close(got, torch.from_numpy(DESCRIPTORS["mobilenet_v2_1024"]), atol=1e-5, rtol=0)
    # that project trained the whole network: its helper passes no freeze setting
    assert not frozen(model) and not REFERENCE["mobilenet_v2_1024"]["frozen"]


def test_mobilenet_head_is_always_20_by_20():
    backbone = build_backbone("mobilenet_v2", pretrained=False).eval()
    assert (backbone.out_channels, backbone.stride) == (512, 16)
    with torch.no_grad():
        for h, w in [(320, 320), (64, 96)]:
            assert backbone(torch.zeros(1, 3, h, w)).shape == (1, 512, 20, 20)


def test_mobilenet_pretrained_loads_imagenet_weights_before_the_head_is_replaced(tmp_path, monkeypatch):
    reference = torchvision.models.mobilenet_v2(weights=None)
    cache_as_published(reference.state_dict(), torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1, tmp_path,
                       monkeypatch)
    backbone = build_backbone("mobilenet_v2", pretrained=True)
    torch.testing.assert_close(backbone.model.features[17].conv[0][0].weight, reference.features[17].conv[0][0].weight)
    assert backbone.model.features[18].weight.shape == (512, 320, 1, 1)


# ------------------------------------------------------------------ the distilled ResNet18 student, 512-d
def test_distilled_student_call_loads_the_release_and_gives_its_descriptors():
    model = VPRModel(**STUDENT_CALL).eval()
    release = reference_layout("resnet18_512")
    assert shapes(model.state_dict()) == release
    weights = seeded_weights(release)
    assert not lightweight.is_layout(weights) and lightweight.to_ours(weights) == weights
    model.load_state_dict(weights)
    with torch.no_grad():
        got = model(images(2, 320))
    assert model.descriptor_dim == 512
    torch.testing.assert_close(got, torch.from_numpy(DESCRIPTORS["resnet18_512"]), atol=1e-5, rtol=0)
    assert frozen(VPRModel(**STUDENT_CALL)) == set(REFERENCE["resnet18_512"]["frozen"])


# ------------------------------------------------------------------ Swin-V2
def _swin_on_meta(**config) -> SwinV2:
    with torch.device("meta"):
        return build_backbone(SWIN, pretrained=False, **config)


def test_swin_base_takes_the_release_saved_with_timm_0_6():
    backbone = _swin_on_meta(layers_to_freeze=-1)
    assert (backbone.out_channels, backbone.stride, backbone.image_size) == (1024, 32, (256, 256))
    release = reference_layout("swinv2_base")
    masks = {k for k in release if k.endswith("attn_mask")}
    assert masks == {"backbone.model.layers.0.blocks.1.attn_mask", "backbone.model.layers.1.blocks.1.attn_mask"}
    assert "backbone.model.layers.0.downsample.reduction.weight" in release
    ours = lightweight.to_ours(release)
    assert set(release) - set(ours) == masks | {f"backbone.model.layers.{i}.downsample.{p}" for i in (0,)
                                                for p in ("reduction.weight", "norm.weight", "norm.bias")}
    assert ours == {f"backbone.{k}": s for k, s in shapes(backbone.state_dict()).items()}
    assert REFERENCE["swinv2_base"]["feature_map"] == [1024, 8, 8]


def test_swin_freezes_what_that_project_froze(monkeypatch):
    for k in (0, 3):  # patch_embed + stages 0-1 + the merging into stage 2, then 5 x k blocks of stage 2
        assert frozen(_swin_on_meta(layers_to_freeze=k)) == as_ours(REFERENCE["swinv2_base"]["frozen_by_k"][str(k)])
    # -1 trains all; k is bounded by the blocks of stage 2 (a tiny Swin: 2 blocks, so k = 0 only)
    tiny = {k: tuple(v) if isinstance(v, list) else v for k, v in TINY_SWIN.items()}
    monkeypatch.setitem(SWINS, "swinv2_tiny_test", ("swinv2_base_window12to16_192to256", tiny))
    assert not frozen(SwinV2("swinv2_tiny_test", pretrained=False, layers_to_freeze=-1))
    with pytest.raises(ValueError, match=r"layers_to_freeze=1.*0\.\.0"):
        SwinV2("swinv2_tiny_test", pretrained=False, layers_to_freeze=1)


def test_swin_map_and_descriptors_match_that_projects_code_on_a_tiny_swin(monkeypatch):
    name = "swinv2_tiny_test"
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in TINY_SWIN.items()}
    monkeypatch.setitem(SWINS, name, ("swinv2_base_window12to16_192to256", config))
    monkeypatch.setitem(backbones.BACKBONES, name, partial(SwinV2, name))
    model = VPRModel(backbone_arch=name, layers_to_freeze=-1, layers_to_crop=[], agg_arch="MixVPR",
                     agg_config={"out_channels": 8, "mix_depth": 2, "mlp_ratio": 1, "out_rows": 2},
                     image_size=(64, 64)).eval()
    assert (model.aggregator.in_h, model.aggregator.in_w) == (2, 2)
    weights = seeded_weights(reference_layout("swinv2_tiny_16"))
    assert lightweight.is_layout(weights)
    model.load_state_dict(lightweight.to_ours(weights))  # strict
    with torch.no_grad():
        got = model(images(2, 64))
    torch.testing.assert_close(got, torch.from_numpy(DESCRIPTORS["swinv2_tiny_16"]), atol=1e-5, rtol=0)


def test_swin_asks_for_its_image_size(monkeypatch):
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in TINY_SWIN.items()}
    monkeypatch.setitem(SWINS, "swinv2_tiny_test", ("swinv2_base_window12to16_192to256", config))
    backbone = SwinV2("swinv2_tiny_test", pretrained=False, layers_to_freeze=-1)
    with pytest.raises(ValueError, match=r"takes 64 x 64 images.*got 96 x 64: set image_size to \[64, 64\]"):
        backbone(torch.zeros(1, 3, 96, 64))


# ------------------------------------------------------------------ shared behaviour
@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v2"])
def test_release_networks_are_never_cropped(name):
    with pytest.raises(ValueError, match=r"layers_to_crop=\[3, 4\].*used whole.*torchvision_efficientnet_b0"):
        build_backbone(name, pretrained=False, layers_to_crop=[3, 4])


def test_bare_release_state_dicts_are_recognised():
    def arch_of(layout):
        return infer_architecture({k: torch.empty(s, device="meta") for k, s in layout.items()})

    arch = arch_of(reference_layout("efficientnet_b0_128"))
    assert (arch["backbone_arch"], arch["layers_to_crop"], arch["image_size"]) == ("efficientnet_b0", [], [320, 320])
    assert arch["agg_config"] == {"in_channels": 1280, "in_h": 10, "in_w": 10, "out_channels": 32, "mix_depth": 4,
                                  "mlp_ratio": 1, "out_rows": 4}
    assert [p.name for p in matching_configs(arch)] == ["lightweight_efficientnet_b0_128.yaml"]
    arch = arch_of(reference_layout("mobilenet_v2_1024"))
    assert (arch["backbone_arch"], arch["image_size"]) == ("mobilenet_v2", [320, 320])
    assert [p.name for p in matching_configs(arch)] == ["lightweight_mobilenet_v2_1024.yaml"]
    arch = arch_of(reference_layout("resnet18_512"))
    assert [p.name for p in matching_configs(arch)] == ["distilled_resnet18_512.yaml"]
    swin = reference_layout("swinv2_base")
    swin |= mixvpr_layout(1024, 64, 256, 4, 4)
    arch = arch_of(swin)
    assert (arch["backbone_arch"], arch["image_size"]) == (SWIN, [256, 256])


# ------------------------------------------------------------------ timm weights: cache, offline, never without pretrained
def _fake_hub_cache(root: Path, repo: str, state_dict: dict) -> None:
    """A Hugging Face cache holding ``state_dict`` as ``repo``'s model.safetensors (the hub's folder layout)."""
    from safetensors.torch import save_file

    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, folder / "snapshots" / ("0" * 40) / "model.safetensors")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache under tmp_path, with the hub client in offline mode."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def test_pretrained_timm_weights_load_from_the_cache_without_the_network(offline_hub):
    reference = timm.create_model("efficientnet_b0")
    _fake_hub_cache(offline_hub, "timm/efficientnet_b0.ra_in1k", reference.state_dict())
    backbone = build_backbone("efficientnet_b0", pretrained=True)
    torch.testing.assert_close(backbone.model.conv_head.weight, reference.conv_head.weight)
    torch.testing.assert_close(backbone.model.blocks[3][0].conv_pw.weight, reference.blocks[3][0].conv_pw.weight)


def test_pretrained_timm_weights_offline_say_how_to_proceed(offline_hub):
    with pytest.raises(RuntimeError, match=r"(?s)efficientnet_b0.*pretrained=False.*timm.create_model"
                                           r"\('efficientnet_b0.ra_in1k', pretrained=True\).*"
                                           r"models--timm--efficientnet_b0.ra_in1k"):
        build_backbone("efficientnet_b0", pretrained=True)


def test_release_networks_without_pretrained_never_touch_the_network(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    VPRModel(**EFFICIENTNET_CALL)
    VPRModel(**MOBILENET_CALL)
    assert _swin_on_meta().out_channels == 1024
