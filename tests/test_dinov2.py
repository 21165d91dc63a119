"""DINOv2 backbones: the official key layout, the official numerics at any size, freezing, settings, weights.

The reference outputs in tests/data/dinov2_reference.npz come from the official implementation
(facebookresearch/dinov2 at b8931f7, ``dinov2.models.vision_transformer.DinoVisionTransformer`` with the
hub's settings: img_size 518, patch 14, init_values 1.0, block_chunks 0, no registers,
interpolate_offset 0.1, no antialiasing; xFormers off), built at width 32, depth 2, 2 heads with the
MLP (``mlp_*``) and the SwiGLU FFN (``swiglu_*``), loaded with ``seeded_state_dict`` of its own
state_dict and run by a script outside this repository on ``seeded_image(h, w)``. Stored per input size:
``forward_features``' ``x_prenorm`` and the normed tokens (class token first), all of them except at
518 x 518 (first 17 tokens).
"""
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from main import VPRModel
from models.backbones import build_backbone
from models.backbones.dinov2 import DINOV2_ARCHS
from reference_weights import seeded_image, seeded_state_dict, shapes_of
from release_layouts import dinov2_layout

REFERENCE = np.load(Path(__file__).parent / "data" / "dinov2_reference.npz")


def seeded_backbone(name: str, **config):
    backbone = build_backbone(name, pretrained=False, **config).eval()
    backbone.model.load_state_dict(seeded_state_dict(shapes_of(backbone.model.state_dict())), strict=True)
    return backbone


def tokens(backbone, image) -> torch.Tensor:
    """(B, 1 + N, D): the class token, then the map's patch tokens row by row."""
    feature_map, token = backbone(image)
    return torch.cat([token[:, None], feature_map.flatten(2).transpose(1, 2)], dim=1)


@pytest.mark.parametrize("name", sorted(DINOV2_ARCHS))
def test_state_dict_matches_the_official_hub_layout(name):
    size = {"dinov2_vits14": (384, 12), "dinov2_vitb14": (768, 12), "dinov2_vitl14": (1024, 24),
            "dinov2_vitg14": (1536, 40)}[name]
    with torch.device("meta"):
        backbone = build_backbone(name, pretrained=False)
    expected = dinov2_layout(*size, swiglu=name == "dinov2_vitg14")
    assert shapes_of(backbone.model.state_dict()) == expected
    assert (backbone.out_channels, backbone.stride) == (size[0], 14)


@pytest.mark.parametrize("entry", [k for k in REFERENCE.files if k.endswith("_prenorm")])
@pytest.mark.parametrize("norm_layer", [False, True])
def test_outputs_match_the_official_implementation(tiny_dinov2, entry, norm_layer):
    ffn, size = entry.split("_")[:2]
    h, w = map(int, size.split("x"))
    name = "dinov2_vitt14_swiglu" if ffn == "swiglu" else "dinov2_vitt14"
    backbone = seeded_backbone(name, return_token=True, norm_layer=norm_layer, num_trainable_blocks=1)
    expected = torch.from_numpy(REFERENCE[entry.replace("_prenorm", "_norm") if norm_layer else entry])
    with torch.no_grad():
        ours = tokens(backbone, seeded_image(h, w))[:, :expected.shape[1]]
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() < 1e-4


def test_feature_map_shape_and_token(tiny_dinov2):
    backbone = build_backbone("dinov2_vitt14", pretrained=False, return_token=True)
    feature_map, token = backbone(torch.randn(2, 3, 42, 70))
    assert feature_map.shape == (2, 32, 3, 5) and token.shape == (2, 32)
    assert backbone.feature_map_shape((42, 70)) == (32, 3, 5)
    assert build_backbone("dinov2_vitt14", pretrained=False)(torch.randn(1, 3, 28, 28)).shape == (1, 32, 2, 2)


@pytest.mark.parametrize("trainable", [0, 1, 2])
def test_frozen_blocks_run_without_gradients_and_get_none(tiny_dinov2, trainable):
    backbone = build_backbone("dinov2_vitt14", pretrained=False, num_trainable_blocks=trainable, norm_layer=True)
    grad_enabled = []
    for block in backbone.model.blocks:
        block.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    backbone(torch.randn(2, 3, 28, 42)).square().sum().backward()
    frozen = 2 - trainable
    assert grad_enabled == [False] * frozen + [True] * trainable
    for name, p in backbone.model.named_parameters():
        block = int(name.split(".")[1]) if name.startswith("blocks.") else None
        trains = (name.startswith("norm.") or (block is not None and block >= frozen)
                  or (trainable == 2 and not name.startswith("mask_token")))
        assert p.requires_grad == trains, name
        assert (p.grad is not None) == trains, name


def test_unused_parameters_are_frozen(tiny_dinov2):
    backbone = build_backbone("dinov2_vitt14", pretrained=False, num_trainable_blocks=2, norm_layer=False)
    frozen = sorted(n for n, p in backbone.model.named_parameters() if not p.requires_grad)
    assert frozen == ["mask_token", "norm.bias", "norm.weight"]


@pytest.mark.parametrize("size,message", [
    ((320, 320), r"divisible by its patch size 14; got 320 x 320. Use a height of 308 or 322 and a width of "
                 r"308 or 322"),
    ((224, 100), r"a height of 224 and a width of 98 or 112"),
])
def test_image_size_not_divisible_by_14_names_the_sizes_that_fit(tiny_dinov2, size, message):
    with pytest.raises(ValueError, match=message):
        VPRModel(backbone_arch="dinov2_vitt14", agg_arch="GeM", image_size=size)
    with pytest.raises(ValueError, match=message):
        build_backbone("dinov2_vitt14", pretrained=False)(torch.zeros(1, 3, *size))


@pytest.mark.parametrize("blocks", [-1, 3, 1.5])
def test_num_trainable_blocks_outside_the_depth_is_refused(tiny_dinov2, blocks):
    with pytest.raises(ValueError, match=rf"num_trainable_blocks={blocks} for dinov2_vitt14: use 0..2"):
        build_backbone("dinov2_vitt14", pretrained=False, num_trainable_blocks=blocks)


def test_backbone_config_names_the_settings_a_backbone_takes(tiny_dinov2):
    with pytest.raises(ValueError, match=r"backbone 'resnet18' does not take \['return_token'\]"):
        VPRModel(backbone_arch="resnet18", backbone_config={"return_token": True}, agg_arch="GeM", image_size=(32, 32))
    with pytest.raises(ValueError, match=r"'dinov2_vitt14' does not take \['layers_to_crop'\].*num_trainable_blocks"):
        VPRModel(backbone_arch="dinov2_vitt14", backbone_config={"layers_to_crop": [4]}, agg_arch="GeM",
                 image_size=(28, 28))


def test_class_token_needs_an_aggregator_that_takes_it(tiny_dinov2):
    with pytest.raises(ValueError, match="returns its class token.*MixVPR takes only the feature map"):
        VPRModel(backbone_arch="dinov2_vitt14", backbone_config={"return_token": True}, agg_arch="MixVPR",
                 image_size=(28, 28))


def test_vpr_model_derives_mixvpr_input_from_the_patch_grid(tiny_dinov2):
    model = VPRModel(backbone_arch="dinov2_vitt14", agg_arch="MixVPR", agg_config={"out_channels": 8, "out_rows": 2},
                     image_size=(42, 56))
    assert (model.aggregator.in_h, model.aggregator.in_w, model.aggregator.channel_proj.in_features) == (3, 4, 32)
    assert model(torch.randn(2, 3, 42, 56)).shape == (2, 16)


def test_pretrained_loads_the_cached_official_weights(tiny_dinov2, tmp_path, monkeypatch):
    reference = seeded_backbone("dinov2_vitt14")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.model.state_dict(), tmp_path / "hub" / "checkpoints" / "dinov2_vitt14_pretrain.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = build_backbone("dinov2_vitt14", pretrained=True)
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(backbone.model.state_dict()[key], value)


def test_pretrained_offline_says_how_to_proceed(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as err, torch.device("meta"):
        build_backbone("dinov2_vits14", pretrained=True)
    message = str(err.value)
    assert "DINOv2 (LVD-142M) weights for dinov2_vits14" in message and "pretrained=False" in message
    assert str(tmp_path / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth") in message
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth" in message
