"""BoQ and SALAD: the released weights' layouts, the authors' numerics, BoQ's key renames, errors.

The reference outputs in tests/data/aggregator_reference.npz come from the authors' code, run by a
script outside this repository: serizba/salad at e593005 (models/backbones/dinov2.py DINOv2,
models/aggregators/salad.py SALAD) and amaralibey/Bag-of-Queries at 1a4965e (src/backbones.py DinoV2 and
ResNet, src/boq.py BoQ), with ``torch.hub.load`` answering the official DINOv2 code's tiny model (width
32, depth 2, 2 heads; see test_dinov2.py). Each network was assembled as ``backbone`` + ``aggregator``
(so its keys are the release's), loaded with ``seeded_state_dict`` of its own state_dict, put in eval
mode and run on ``seeded_image`` inputs:

- ``salad_70x98`` (batch 2), ``salad_56x84`` (batch 1): DINOv2(num_trainable_blocks=1, norm_layer=True,
  return_token=True) + SALAD(num_channels=32, num_clusters=8, cluster_dim=4, token_dim=6), with
  ``SALAD_GAIN`` on the seeded weights: scores of std ~13, where the Sinkhorn iteration count shows
  (3 vs 20 iterations: 0.026 apart; at the plain seeded scale, std 0.5, 3 iterations already converge).
- ``boq_dinov2_70x98`` (batch 2) and its ``_attention0/1`` (the cross-attention the model returns):
  DinoV2(unfreeze_n_blocks=1) + BoQ(in_channels=32, proj_channels=128, num_queries=4, num_layers=2, row_dim=3).
- ``boq_resnet18_64x64`` (batch 2): ResNet("resnet18", pretrained=False, crop_last_block=True) +
  BoQ(in_channels=256, proj_channels=64, num_queries=4, num_layers=2, row_dim=2).
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from main import VPRModel, load_weights
from models.aggregators import BoQ, SALAD
from models.aggregators.salad import log_optimal_transport
from models.layouts import boq as boq_layout_module
from reference_weights import seeded_image, seeded_state_dict, shapes_of
from release_layouts import boq_layout, dinov2_layout, prefixed, release, resnet_sequential_layout, salad_layout

REFERENCE = np.load(Path(__file__).parent / "data" / "aggregator_reference.npz")

# the releases' layouts, from the projects' published structure
SALAD_CKPT = release(prefixed("backbone.model.", dinov2_layout(768, 12)), salad_layout(768, 64, 128, 256))
BOQ_DINOV2_12288 = release(prefixed("backbone.dino.", dinov2_layout(768, 12)), boq_layout(768, 384, 64, 2, 32))
BOQ_RESNET50_16384 = release(prefixed("backbone.", resnet_sequential_layout("resnet50")),
                             boq_layout(1024, 512, 64, 2, 32))
# the same layouts at the sizes of the reference outputs
TINY_SALAD_CKPT = release(prefixed("backbone.model.", dinov2_layout(32, 2)), salad_layout(32, 8, 4, 6))
TINY_BOQ_DINOV2_RELEASE = release(prefixed("backbone.dino.", dinov2_layout(32, 2)), boq_layout(32, 128, 4, 2, 3))
TINY_BOQ_RESNET_RELEASE = release(prefixed("backbone.", resnet_sequential_layout("resnet18")),
                                  boq_layout(256, 64, 4, 2, 2))
SALAD_RELEASE = dict(backbone_arch="dinov2_vitb14",
                     backbone_config={"num_trainable_blocks": 4, "return_token": True, "norm_layer": True},
                     agg_arch="SALAD",
                     agg_config={"num_channels": 768, "num_clusters": 64, "cluster_dim": 128, "token_dim": 256},
                     image_size=(322, 322))
SALAD_GAIN = {"aggregator.score.3.weight": 30.0}
TINY_SALAD = dict(backbone_arch="dinov2_vitt14",
                  backbone_config={"num_trainable_blocks": 1, "return_token": True, "norm_layer": True},
                  agg_arch="SALAD", agg_config={"num_clusters": 8, "cluster_dim": 4, "token_dim": 6},
                  image_size=(70, 98))
TINY_BOQ_DINOV2 = dict(backbone_arch="dinov2_vitt14", backbone_config={"num_trainable_blocks": 1}, agg_arch="BoQ",
                       agg_config={"proj_channels": 128, "num_queries": 4, "num_layers": 2, "row_dim": 3},
                       image_size=(70, 98))
TINY_BOQ_RESNET = dict(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="BoQ",
                       agg_config={"proj_channels": 64, "num_queries": 4, "num_layers": 2, "row_dim": 2},
                       image_size=(64, 64))


def close(ours: torch.Tensor, entry: str) -> bool:
    return ours.shape == REFERENCE[entry].shape and (ours - torch.from_numpy(REFERENCE[entry])).abs().max() < 1e-4


# ------------------------------------------------------------------ SALAD
def test_salad_state_dict_keys_match_dino_salad_ckpt():
    with torch.device("meta"):
        model = VPRModel(**SALAD_RELEASE)
    assert shapes_of(model.state_dict()) == SALAD_CKPT
    assert model.descriptor_dim == 64 * 128 + 256 == 8448


def test_salad_hub_call_without_image_size_builds_at_the_authors_test_size():
    # serizba/salad's hubconf builds VPRModel without an image size: DINOv2 defaults to 322 x 322 (23 x 23 patches)
    with torch.device("meta"):
        model = VPRModel(**{k: v for k, v in SALAD_RELEASE.items() if k != "image_size"})
    assert model.image_size == (322, 322) and model.hparams.image_size == [322, 322]
    assert shapes_of(model.state_dict()) == SALAD_CKPT


def test_salad_release_loads_strictly_and_matches_the_authors(tiny_dinov2, tmp_path):
    torch.save(seeded_state_dict(TINY_SALAD_CKPT, gain=SALAD_GAIN), tmp_path / "dino_salad.ckpt")
    model = VPRModel(**TINY_SALAD)
    model.load_state_dict(torch.load(tmp_path / "dino_salad.ckpt"))
    model.eval()
    with torch.no_grad():
        assert close(model(seeded_image(70, 98, batch=2)), "salad_70x98")
        assert close(model(seeded_image(56, 84, batch=1)), "salad_56x84")


def test_salad_trains_its_heads_dustbin_and_last_block(tiny_dinov2):
    torch.manual_seed(0)
    model = VPRModel(**{**TINY_SALAD, "miner_name": "none"})
    loss, _ = model.metric_loss(model(torch.randn(4, 3, 70, 98)), torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert all(p.grad is not None for p in model.aggregator.parameters())
    assert all(p.grad is not None for p in model.backbone.model.blocks[1].parameters())
    assert all(p.grad is None for p in model.backbone.model.blocks[0].parameters())


def test_sinkhorn_gives_each_feature_unit_mass_and_the_dustbin_the_surplus():
    scores = torch.randn(2, 3, 10)
    plan = log_optimal_transport(scores, torch.tensor(0.5)).exp()      # (B, m + 1, n)
    torch.testing.assert_close(plan.sum(dim=1), torch.ones(2, 10))
    # rows approach 1 per cluster and n - m for the dustbin (3 iterations: close, not exact)
    rows = plan.sum(dim=2)
    assert (rows[:, :3] - 1).abs().max() < 0.2 and (rows[:, 3] - 7).abs().max() < 0.6


def test_salad_on_a_cnn_takes_the_mean_feature_as_global_token():
    model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="SALAD",
                     agg_config={"num_clusters": 4, "cluster_dim": 8, "token_dim": 16}, image_size=(64, 64))
    model.eval()
    images = torch.randn(2, 3, 64, 64)
    out = model(images)
    assert out.shape == (2, 48) and model.aggregator.num_channels == 256
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    feature_map = model.backbone(images)
    torch.testing.assert_close(out, model.aggregator((feature_map, feature_map.mean(dim=(2, 3)))))


def test_salad_needs_more_patches_than_clusters(tiny_dinov2):
    with pytest.raises(ValueError, match="num_clusters=64 needs more local features than clusters, but a 7 x 7 "
                                         "map has 49: use larger images"):
        VPRModel(**{**TINY_SALAD, "agg_config": {"num_clusters": 64}, "image_size": (98, 98)})


def test_salad_channels_must_fit_the_backbone(tiny_dinov2):
    with pytest.raises(ValueError, match="num_channels=768 given, but dinov2_vitt14 outputs a 32 x 5 x 7 map.*"
                                         "Use num_channels=32"):
        VPRModel(**{**TINY_SALAD, "agg_config": {"num_channels": 768}})


# ------------------------------------------------------------------ BoQ
def test_boq_dinov2_12288_release_layout_maps_onto_ours():
    with torch.device("meta"):
        model = VPRModel(backbone_arch="dinov2_vitb14", backbone_config={"num_trainable_blocks": 2}, agg_arch="BoQ",
                         agg_config={"in_channels": 768, "proj_channels": 384, "num_queries": 64, "num_layers": 2,
                                     "row_dim": 32}, image_size=(322, 322))
    assert boq_layout_module.is_layout(BOQ_DINOV2_12288)
    assert boq_layout_module.to_ours(BOQ_DINOV2_12288) == shapes_of(model.state_dict())
    assert model.descriptor_dim == 12288


def test_boq_resnet50_16384_release_layout_maps_onto_ours():
    with torch.device("meta"):
        model = VPRModel(backbone_arch="resnet50", layers_to_crop=[4], agg_arch="BoQ",
                         agg_config={"in_channels": 1024, "proj_channels": 512, "num_queries": 64, "num_layers": 2,
                                     "row_dim": 32}, image_size=(320, 320))
    assert boq_layout_module.is_layout(BOQ_RESNET50_16384)
    assert boq_layout_module.to_ours(BOQ_RESNET50_16384) == shapes_of(model.state_dict())
    assert model.descriptor_dim == 16384


def test_boq_dinov2_release_loads_strictly_and_matches_the_authors(tiny_dinov2, tmp_path):
    model = VPRModel(**TINY_BOQ_DINOV2)
    # the release file through the one public loader, which renames backbone.dino.* and loads strictly
    torch.save(seeded_state_dict(TINY_BOQ_DINOV2_RELEASE), tmp_path / "dinov2_12288.pth")
    load_weights(model, tmp_path / "dinov2_12288.pth")
    model.eval()
    images = seeded_image(70, 98, batch=2)
    with torch.no_grad():
        assert close(model(images), "boq_dinov2_70x98")
        maps = model.aggregator.attention_maps(model.backbone(images))
    for i, attention in enumerate(maps):
        assert attention.shape == (2, 4, 5, 7)
        assert close(attention.flatten(2), f"boq_dinov2_70x98_attention{i}")


def test_boq_resnet_release_loads_strictly_and_matches_the_authors(tmp_path):
    model = VPRModel(**TINY_BOQ_RESNET)
    torch.save(seeded_state_dict(TINY_BOQ_RESNET_RELEASE), tmp_path / "resnet50_16384.pth")
    load_weights(model, tmp_path / "resnet50_16384.pth")
    model.eval()
    with torch.no_grad():
        assert close(model(seeded_image(64, 64, batch=2)), "boq_resnet18_64x64")


def test_boq_renames_name_the_keys_that_do_not_fit():
    layout = TINY_BOQ_RESNET_RELEASE
    with pytest.raises(ValueError, match=r"not a BoQ release's key: backbone\.net\.3\.weight, head\.bias"):
        boq_layout_module.to_ours({**layout, "backbone.net.3.weight": (1,), "head.bias": (1,)})
    model = VPRModel(**TINY_BOQ_RESNET)
    incomplete = seeded_state_dict({k: v for k, v in layout.items() if k != "aggregator.boqs.1.queries"})
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "aggregator\.boqs\.1\.queries"'):
        model.load_state_dict(boq_layout_module.to_ours(incomplete), strict=True)
    assert not boq_layout_module.is_layout(model.state_dict())


def test_boq_attention_maps_leave_the_descriptor_unchanged():
    torch.manual_seed(0)
    boq = BoQ(in_channels=16, proj_channels=128, num_queries=5, num_layers=2, row_dim=3).eval()
    x = torch.randn(2, 16, 4, 6)
    before = boq(x)
    maps = boq.attention_maps(x)
    torch.testing.assert_close(boq(x), before)
    assert before.shape == (2, 384) and len(maps) == 2
    for attention in maps:
        assert attention.shape == (2, 5, 4, 6)
        torch.testing.assert_close(attention.sum(dim=(2, 3)), torch.ones(2, 5))


@pytest.mark.parametrize("proj_channels,message", [
    (32, "at least 64"), (129, "divisible by that head count; use e.g. 128")])
def test_boq_proj_channels_must_split_into_heads_of_64(proj_channels, message):
    with pytest.raises(ValueError, match=rf"BoQ proj_channels={proj_channels}: .*{message}"):
        BoQ(in_channels=16, proj_channels=proj_channels)


def test_boq_refuses_a_class_token(tiny_dinov2):
    with pytest.raises(ValueError, match="return_token=True.*BoQ takes only the feature map"):
        VPRModel(**{**TINY_BOQ_DINOV2, "backbone_config": {"return_token": True}})


def test_aggregators_on_unknown_settings_list_theirs():
    with pytest.raises(ValueError, match=r"SALAD does not take \['in_channels'\].*num_channels"):
        VPRModel(backbone_arch="resnet18", agg_arch="SALAD", agg_config={"in_channels": 256}, image_size=(64, 64))
    model = VPRModel(backbone_arch="resnet18", agg_arch="salad", agg_config={"num_clusters": 4}, image_size=(64, 64))
    assert isinstance(model.aggregator, SALAD)


# ------------------------------------------------------------------ architecture from bare weights
def meta_state(layout: dict) -> dict:
    return {k: torch.empty(shape, device="meta") for k, shape in layout.items()}


def test_architecture_is_read_back_from_the_released_layouts():
    from models.architecture import describe_architecture, infer_architecture

    arch = infer_architecture(meta_state(SALAD_CKPT))
    assert arch == {"backbone_arch": "dinov2_vitb14", "agg_arch": "SALAD", "agg_config": SALAD_RELEASE["agg_config"]}
    described = describe_architecture(arch)
    assert "configs/salad_dinov2_8448.yaml" in described and '"return_token": true' in described

    assert infer_architecture(meta_state(BOQ_DINOV2_12288)) == {
        "backbone_arch": "dinov2_vitb14", "agg_arch": "BoQ",
        "agg_config": {"in_channels": 768, "proj_channels": 384, "num_queries": 64, "num_layers": 2, "row_dim": 32}}
    arch = infer_architecture(meta_state(BOQ_RESNET50_16384))
    assert (arch["backbone_arch"], arch["layers_to_crop"]) == ("resnet50", [4])
    assert arch["agg_config"]["proj_channels"] == 512
    assert "configs/boq_resnet50_16384.yaml" in describe_architecture(arch)
