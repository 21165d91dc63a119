"""VPRModel: compatibility with the released MixVPR weights, shapes, dimension checks, names, schedule."""
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from main import VPRModel, VPRNet, load_weights
from models import build_network
from models.aggregators import AGGREGATORS, MixVPR, build_aggregator
from models.backbones import build_backbone

SNIPPET = dict(backbone_arch="resnet50", layers_to_crop=[4], agg_arch="MixVPR",
               agg_config={"in_channels": 1024, "in_h": 20, "in_w": 20, "out_channels": 1024, "mix_depth": 4,
                           "mlp_ratio": 1, "out_rows": 4})


def released_checkpoint_layout() -> dict:
    """Keys and shapes of the authors' released ResNet50-MixVPR-4096 state_dict, built independently."""
    trunk = torchvision.models.resnet50(weights=None).state_dict()
    keys = {f"backbone.model.{k}": tuple(v.shape) for k, v in trunk.items()
            if not k.startswith(("layer4.", "fc."))}
    for i in range(4):
        keys |= {f"aggregator.mix.{i}.mix.0.weight": (400,), f"aggregator.mix.{i}.mix.0.bias": (400,),
                 f"aggregator.mix.{i}.mix.1.weight": (400, 400), f"aggregator.mix.{i}.mix.1.bias": (400,),
                 f"aggregator.mix.{i}.mix.3.weight": (400, 400), f"aggregator.mix.{i}.mix.3.bias": (400,)}
    keys |= {"aggregator.channel_proj.weight": (1024, 1024), "aggregator.channel_proj.bias": (1024,),
             "aggregator.row_proj.weight": (4, 400), "aggregator.row_proj.bias": (4,)}
    return keys


def test_state_dict_keys_match_released_checkpoint(tmp_path):
    model = VPRModel(**SNIPPET)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == released_checkpoint_layout()
    # a bare state_dict saved elsewhere loads strictly into a fresh snippet model
    torch.save(model.state_dict(), tmp_path / "released.pth")
    fresh = VPRModel(**SNIPPET)
    fresh.load_state_dict(torch.load(tmp_path / "released.pth"))
    x = torch.randn(1, 3, 320, 320)
    model.eval(), fresh.eval()
    assert model.descriptor_dim == 4096
    torch.testing.assert_close(fresh(x), model(x))


def test_mixvpr_forward_follows_the_paper():
    torch.manual_seed(0)
    agg = MixVPR(in_channels=8, in_h=3, in_w=2, out_channels=5, mix_depth=2, mlp_ratio=2, out_rows=3)
    x = torch.randn(4, 8, 3, 2)
    h = x.flatten(2)                                   # (B, C, HW)
    for layer in agg.mix:
        ln, fc1, _, fc2 = layer.mix
        h = h + fc2(F.relu(fc1(F.layer_norm(h, (6,), ln.weight, ln.bias))))
    h = agg.channel_proj(h.transpose(1, 2)).transpose(1, 2)     # (B, out_channels, HW)
    h = agg.row_proj(h)                                          # (B, out_channels, out_rows)
    expected = F.normalize(h.flatten(1), dim=-1)
    torch.testing.assert_close(agg(x), expected)
    assert agg(x).shape == (4, 15)


@pytest.mark.parametrize("name,config,dim", [
    ("MixVPR", {"in_channels": 16, "in_h": 4, "in_w": 5, "out_channels": 8, "out_rows": 2}, 16),
    ("GeM", {"in_channels": 16}, 16),
    ("ConvAP", {"in_channels": 16, "out_channels": 8, "s1": 2, "s2": 2}, 32),
    ("CosPlace", {"in_channels": 16, "out_dim": 12}, 12),
    ("NetVLAD", {"in_channels": 16, "num_clusters": 4}, 64),
    ("BoQ", {"in_channels": 16, "proj_channels": 64, "num_queries": 3, "num_layers": 1, "row_dim": 2}, 128),
    ("SALAD", {"num_channels": 16, "num_clusters": 4, "cluster_dim": 3, "token_dim": 5}, 17),
])
def test_aggregator_output_shape_and_unit_norm(name, config, dim):
    agg = build_aggregator(name, **config)
    out = agg(torch.rand(3, 16, 4, 5))
    assert out.shape == (3, dim) and agg.out_dim == dim
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("arch,crop,channels,stride", [
    ("resnet18", [4], 256, 16), ("resnet18", [], 512, 32), ("resnet50", [4], 1024, 16),
    ("resnet50", [3, 4], 512, 8), ("resnext50_32x4d", [4], 1024, 16), ("wide_resnet50_2", [4], 1024, 16),
])
def test_backbone_reports_its_output_channels_and_stride(arch, crop, channels, stride):
    backbone = build_backbone(arch, pretrained=False, layers_to_crop=crop)
    out = backbone(torch.zeros(1, 3, 64, 96))
    assert (backbone.out_channels, backbone.stride) == (channels, stride)
    assert out.shape == (1, channels, 64 // stride, 96 // stride)


def test_cropped_stages_are_absent_from_the_state_dict():
    keys = build_backbone("resnet18", pretrained=False, layers_to_crop=[3, 4]).state_dict()
    assert any(k.startswith("model.layer2.") for k in keys)
    assert not any(k.startswith(("model.layer3.", "model.layer4.", "model.fc.")) for k in keys)


@pytest.mark.parametrize("k,frozen", [(-1, []), (0, ["conv1", "bn1"]), (2, ["conv1", "bn1", "layer1", "layer2"])])
def test_layers_to_freeze_freezes_stem_and_first_k_stages(k, frozen):
    backbone = build_backbone("resnet18", pretrained=False, layers_to_freeze=k, layers_to_crop=[4])
    for name, p in backbone.model.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in frozen), name


def test_aggregator_dims_are_derived_from_backbone_and_image_size():
    model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="MixVPR",
                     agg_config={"out_channels": 32, "out_rows": 2}, image_size=(64, 96))
    assert (model.aggregator.in_h, model.aggregator.in_w) == (4, 6)
    assert model.aggregator.channel_proj.in_features == 256
    assert model(torch.randn(2, 3, 64, 96)).shape == (2, 64)


def test_wrong_aggregator_dims_fail_with_the_right_values():
    with pytest.raises(ValueError, match=r"in_channels=256, in_h=4, in_w=4"):
        VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="MixVPR",
                 agg_config={"in_channels": 1024, "in_h": 20, "in_w": 20}, image_size=(64, 64))


def test_mixvpr_rejects_an_image_of_another_size():
    model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="MixVPR", image_size=(64, 64))
    with pytest.raises(ValueError, match="4 x 4 feature map but got 5 x 5"):
        model(torch.randn(1, 3, 80, 80))


@pytest.mark.parametrize("kwargs,match", [
    ({"backbone_arch": "resnet51"}, "unknown backbone 'resnet51'; choose one of"),
    ({"agg_arch": "MixVPRx"}, "unknown aggregator 'MixVPRx'; choose one of"),
    ({"loss_name": "TripletMargin"}, "unknown loss 'TripletMargin'; choose one of"),
    ({"miner_name": "MultiSimilarity"}, "unknown miner 'MultiSimilarity'; choose one of"),
    ({"optimizer": "lamb"}, "unknown optimizer 'lamb'; choose one of"),
    ({"agg_config": {"dim": 3}}, r"does not take \['dim'\]"),
])
def test_unknown_names_list_the_valid_ones(kwargs, match):
    base = dict(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32))
    with pytest.raises(ValueError, match=match):
        VPRModel(**{**base, **kwargs})


def test_pretrained_offline_says_how_to_proceed(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError) as err:
        build_backbone("resnet18", pretrained=True)
    message = str(err.value)
    assert "pretrained=False" in message and str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message


def test_paper_loss_and_miner_defaults():
    model = VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32))
    assert (model.loss_fn.alpha, model.loss_fn.beta, model.loss_fn.base) == (1.0, 50, 0.0)
    assert type(model.loss_fn.distance).__name__ == "DotProductSimilarity"
    assert model.miner.epsilon == 0.1 and type(model.miner.distance).__name__ == "CosineSimilarity"
    assert VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), miner_name="none").miner is None


def test_image_size_follows_the_map_size_like_the_original_constructor():
    # the original code built this model for 160 x 160 images (10 x 10 maps at stride 16)
    model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="MixVPR",
                     agg_config={"in_channels": 256, "in_h": 10, "in_w": 10, "out_channels": 8, "out_rows": 2})
    assert model.image_size == (160, 160) and list(model.hparams.image_size) == [160, 160]
    assert VPRModel(backbone_arch="resnet18", agg_arch="GeM").image_size == (320, 320)


def test_original_keywords_are_deprecated_aliases():
    with pytest.warns(FutureWarning, match="warmpup_steps is deprecated"):
        model = VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), warmpup_steps=123)
    assert model.hparams.warmup_steps == 123 and "warmpup_steps" not in model.hparams
    with pytest.warns(FutureWarning, match="miner_margin is deprecated"):
        model = VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), miner_margin=0.2)
    assert model.miner.epsilon == 0.2


def test_construction_downloads_nothing_even_with_pretrained(monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("construction must not download")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    model = VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), pretrained=True)
    assert model.hparams.pretrained


def test_network_is_the_models_modules_with_the_same_keys():
    model = VPRModel(**SNIPPET)
    net = model.net
    assert isinstance(net, VPRNet) and net.backbone is model.backbone and net.aggregator is model.aggregator
    assert list(net.state_dict()) == list(model.state_dict())
    model.eval()
    assert not net.training
    x = torch.randn(1, 3, 320, 320)
    torch.testing.assert_close(net(x), model(x))


def test_load_weights_takes_the_release_file_and_lightning_prefixes(tmp_path):
    model = VPRModel(**SNIPPET)
    torch.save(model.state_dict(), tmp_path / "release.ckpt")
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "wrapped.pth")
    for name in ("release.ckpt", "wrapped.pth"):
        net = load_weights(build_network(**{k: v for k, v in SNIPPET.items()}), tmp_path / name)
        torch.testing.assert_close(net.state_dict()["aggregator.row_proj.weight"],
                                   model.state_dict()["aggregator.row_proj.weight"])


def test_aggregator_registry_names_are_exact():
    assert set(AGGREGATORS) == {"mixvpr", "gem", "convap", "cosplace", "netvlad", "boq", "salad", "megaloc"}
    with pytest.raises(ValueError, match="unknown aggregator 'mix'"):
        build_aggregator("mix")
