"""BoQ's released weights (amaralibey/Bag-of-Queries, v1.0) -> our VPRModel keys.

The releases are state_dicts of the authors' hub model, ``backbone`` + ``aggregator``:

``dinov2_12288.pth`` (DINOv2 ViT-B/14 + BoQ 384 x 32)::

    backbone.dino.<official DINOv2 keys>   the whole hub model: cls_token, pos_embed, mask_token,
                                           patch_embed.proj, blocks.0-11.*, norm (stored, not applied)
    aggregator.<BoQ keys>                  proj_c, norm_input, boqs.0-1.*, fc (ours are the same)

``resnet50_16384.pth`` (ResNet50 cut after layer3 + BoQ 512 x 32)::

    backbone.net.<i>.<torchvision keys>    an nn.Sequential of conv1 (0), bn1 (1), relu (2), maxpool (3),
                                           layer1 (4), layer2 (5), layer3 (6); layer4 (7) when not cut
    aggregator.<BoQ keys>

Ours: ``backbone.model.<official DINOv2 keys>`` and ``backbone.model.{conv1,bn1,layer1,...}``.
"""
import re

# position in the authors' nn.Sequential -> torchvision ResNet attribute (2 and 3, relu and maxpool, hold no weights)
RESNET_SEQUENTIAL = {0: "conv1", 1: "bn1", 4: "layer1", 5: "layer2", 6: "layer3", 7: "layer4"}
_RESNET_KEY = re.compile(r"backbone\.net\.(\d+)\.(.+)")


def is_layout(state_dict: dict) -> bool:
    """True when ``state_dict`` is in a BoQ release's layout (``backbone.dino.*`` or ``backbone.net.<i>.*``)."""
    return any(k.startswith(("backbone.dino.", "backbone.net.")) for k in state_dict)


def _our_key(key: str) -> str | None:
    if key.startswith("aggregator."):
        return key
    if key.startswith("backbone.dino."):
        return "backbone.model." + key[len("backbone.dino."):]
    match = _RESNET_KEY.fullmatch(key)
    if match and int(match.group(1)) in RESNET_SEQUENTIAL:
        return f"backbone.model.{RESNET_SEQUENTIAL[int(match.group(1))]}.{match.group(2)}"
    return None


def to_ours(state_dict: dict) -> dict:
    """The same tensors under our keys. Raises ValueError naming every key that is not a BoQ release's
    (anything but ``aggregator.*``, ``backbone.dino.*`` and ``backbone.net.{0,1,4,5,6,7}.*``)."""
    renamed, unplaced = {}, []
    for key, value in state_dict.items():
        ours = _our_key(key)
        if ours is None:
            unplaced.append(key)
        else:
            renamed[ours] = value
    if unplaced:
        shown = ", ".join(unplaced[:8]) + (f" ... ({len(unplaced)} in all)" if len(unplaced) > 8 else "")
        raise ValueError(f"not a BoQ release's key: {shown}. Expected aggregator.*, backbone.dino.* (DINOv2) or "
                         f"backbone.net.<i>.* with i in {sorted(RESNET_SEQUENTIAL)} (ResNet)")
    return renamed
