"""The Lightweight-MixVPR project's saved weights (github nadhiranoor/Lightweight-MixVPR) -> our keys.

Its checkpoints are VPRModel state_dicts, ``backbone.model.<network's own names>`` and
``aggregator.<MixVPR names>`` (the same MixVPR as ours). Per backbone (see the backbone modules'
docstrings for the networks):

- ``efficientnet_b0`` .. ``b4`` (timm trunk): timm's names, as ours, plus the unused ImageNet classifier
  ``backbone.model.classifier.weight`` / ``.bias``, which we drop;
- ``mobilenet_v2`` (torchvision features + its 512-channel head): exactly our keys;
- ``resnet18`` and the other ResNets (e.g. its distilled ResNet18 student): exactly our keys;
- ``swinv2_base_window12to16_192to256_22kft1k`` (saved with timm 0.6.12): patch merging
  ``backbone.model.layers.<i>.downsample.*`` becomes ``layers.<i+1>.downsample.*`` (timm moved it from
  the end of stage i to the start of stage i+1), and the saved attention masks
  ``backbone.model.layers.<i>.blocks.<j>.attn_mask`` are dropped (timm recomputes them). Recognised by
  Swin-V2's continuous position bias (``attn.cpb_mlp``), which a DINOv2 state_dict (SALAD's) lacks.

Nothing else is renamed or dropped, so a strict load still reports anything unexpected.
"""
import re

PREFIX = "backbone.model."
# the timm EfficientNet trunk's unused ImageNet classifier
CLASSIFIER = (PREFIX + "classifier.weight", PREFIX + "classifier.bias")
# the first patch merging of a Swin-V2 saved with timm < 0.9: at the end of stage 0
OLD_SWIN_MERGE = PREFIX + "layers.0.downsample.reduction.weight"
# Swin-V2's own parameters: the patch embedding and the continuous position bias MLP of its attention (ViTs
# such as DINOv2 have a patch embedding too, under the same name, but no stages of blocks with a cpb_mlp)
SWIN_V2 = (PREFIX + "patch_embed.proj.weight", PREFIX + "layers.0.blocks.0.attn.cpb_mlp.0.weight")
_SWIN_MERGE = re.compile(r"^backbone\.model\.layers\.(\d+)\.downsample\.")
_SWIN_MASK = re.compile(r"^backbone\.model\.layers\.\d+\.blocks\.\d+\.attn_mask$")


def is_layout(state_dict: dict) -> bool:
    """True when ``state_dict`` holds one of that project's own networks (timm EfficientNet trunk, its
    upsampled MobileNetV2 head, timm Swin-V2), whether saved by that project or by us."""
    keys = set(state_dict)
    timm_efficientnet = PREFIX + "conv_stem.weight" in keys
    upsampled_mobilenet = PREFIX + "features.18.bias" in keys and PREFIX + "features.19.running_var" in keys
    swin = all(k in keys for k in SWIN_V2)
    return timm_efficientnet or upsampled_mobilenet or swin


def to_ours(state_dict: dict) -> dict:
    """``state_dict`` with our VPRModel's keys: the EfficientNet classifier and Swin attention masks
    dropped by name, Swin-V2 patch mergings of a timm < 0.9 save moved to the next stage; values are
    the same tensors, everything else passes unchanged."""
    timm_efficientnet = PREFIX + "conv_stem.weight" in state_dict
    swin = all(k in state_dict for k in SWIN_V2)
    old_swin = OLD_SWIN_MERGE in state_dict
    out = {}
    for key, value in state_dict.items():
        if (timm_efficientnet and key in CLASSIFIER) or (swin and _SWIN_MASK.match(key)):
            continue
        if old_swin:
            key = _SWIN_MERGE.sub(lambda m: f"{PREFIX}layers.{int(m.group(1)) + 1}.downsample.", key)
        out[key] = value
    return out
