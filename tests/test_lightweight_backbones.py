"""torchvision MobileNet and EfficientNet backbones: staged, cropped and frozen like the ResNets."""
import pytest
import torch
import torchvision

from models import VPRModel
from models.backbones import build_backbone
from models.backbones.efficientnet import EFFICIENTNETS
from models.backbones.mobilenet import MOBILENETS
from reference_weights import cache_as_published

SPECS = {**MOBILENETS, **EFFICIENTNETS}
LIGHTWEIGHT = sorted(SPECS)


def _feature_index(name: str) -> int:
    """``model.features.<i>.…`` -> i."""
    return int(name.split(".")[2])


@pytest.mark.parametrize("name", LIGHTWEIGHT)
def test_stage_table_follows_output_stride(name):
    constructor, _, ends, channels = SPECS[name]
    features = constructor(weights=None).features.eval()
    x = torch.zeros(1, 3, 64, 64)
    strides, widths = [], []
    with torch.no_grad():
        for block in features:
            x = block(x)
            strides.append(64 // x.shape[-1])
            widths.append(x.shape[1])
    assert ends[-1] == len(features)
    assert set(strides[: ends[0]]) == {2}
    for stage in range(1, 5):
        assert set(strides[ends[stage - 1]: ends[stage]]) == {2 ** (stage + 1)}, f"stage {stage}"
        assert widths[ends[stage] - 1] == channels[stage - 1]


@pytest.mark.parametrize("name", LIGHTWEIGHT)
@pytest.mark.parametrize("crop", [[], [4]])
def test_output_shape_matches_out_channels_and_stride(name, crop):
    backbone = build_backbone(name, pretrained=False, layers_to_freeze=-1, layers_to_crop=crop).eval()
    assert backbone.stride == (16 if crop else 32)
    with torch.no_grad():
        for h, w in [(64, 64), (96, 128)]:
            out = backbone(torch.zeros(2, 3, h, w))
            assert out.shape == (2, backbone.out_channels, h // backbone.stride, w // backbone.stride)


@pytest.mark.parametrize("name", LIGHTWEIGHT)
def test_vpr_model_derives_mixvpr_input_from_lightweight_backbone(name):
    model = VPRModel(backbone_arch=name, pretrained=False, layers_to_crop=[4], agg_arch="MixVPR",
                     agg_config={"out_channels": 16, "out_rows": 2}, image_size=(64, 64)).eval()
    assert (model.aggregator.in_h, model.aggregator.in_w) == (4, 4)
    assert model.aggregator.channel_proj.in_features == model.backbone.out_channels
    with torch.no_grad():
        descriptors = model(torch.randn(2, 3, 64, 64))
    assert descriptors.shape == (2, 32) == (2, model.descriptor_dim)
    torch.testing.assert_close(descriptors.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("name, stem_end, stage2_end", [("torchvision_mobilenet_v2", 2, 7),
                                                         ("torchvision_efficientnet_b0", 2, 4),
                                                         ("mobilenet_v3_small", 1, 4)])
def test_layers_to_freeze_freezes_stem_then_stages(name, stem_end, stage2_end):
    def trainable_blocks(freeze):
        backbone = build_backbone(name, pretrained=False, layers_to_freeze=freeze, layers_to_crop=[4])
        return {_feature_index(n) for n, p in backbone.named_parameters() if p.requires_grad}, \
            {_feature_index(n) for n, _ in backbone.named_parameters()}

    trainable, blocks = trainable_blocks(-1)
    assert trainable == blocks
    trainable, blocks = trainable_blocks(0)
    assert trainable == {i for i in blocks if i >= stem_end}
    trainable, blocks = trainable_blocks(2)
    assert trainable == {i for i in blocks if i >= stage2_end}


@pytest.mark.parametrize("crop, last_block", [([], 18), ([4], 13), ([3, 4], 6)])
def test_cropped_stages_and_classifier_absent_from_state_dict(crop, last_block):
    keys = build_backbone("torchvision_mobilenet_v2", pretrained=False, layers_to_crop=crop).state_dict()
    assert all(k.startswith("model.features.") for k in keys)
    assert max(_feature_index(k) for k in keys) == last_block


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "torchvision_efficientnet_b0"])
def test_state_dict_keys_are_torchvisions_under_model_prefix(name):
    ours = build_backbone(name, pretrained=False, layers_to_crop=[4]).state_dict()
    theirs = getattr(torchvision.models, name.removeprefix("torchvision_"))(weights=None).state_dict()
    for key, value in ours.items():
        assert key.startswith("model.")
        assert theirs[key[len("model."):]].shape == value.shape


def test_pretrained_loads_cached_imagenet_weights(tmp_path, monkeypatch):
    _, weights, _, _ = MOBILENETS["mobilenet_v3_small"]
    reference = torchvision.models.mobilenet_v3_small(weights=None)
    cache_as_published(reference.state_dict(), weights, tmp_path, monkeypatch)
    backbone = build_backbone("mobilenet_v3_small", pretrained=True, layers_to_crop=[4])
    torch.testing.assert_close(backbone.model.features[0][0].weight, reference.features[0][0].weight)


@pytest.mark.parametrize("config, message", [
    ({"layers_to_crop": [3]}, "only trailing stages"),
    ({"layers_to_crop": [1, 2, 3, 4]}, "keep at least stage 1"),
    ({"layers_to_freeze": 5}, "layers_to_freeze=5"),
])
def test_invalid_crop_or_freeze_says_what_is_allowed(config, message):
    with pytest.raises(ValueError, match=message):
        build_backbone("torchvision_efficientnet_b0", pretrained=False, **config)


def test_unknown_backbone_lists_lightweight_choices():
    with pytest.raises(ValueError, match="unknown backbone 'mobilenet'.*mobilenet_v2"):
        build_backbone("mobilenet", pretrained=False)
