"""VPRNet: the place-recognition network itself, backbone -> aggregator, as a plain ``nn.Module``.

This is what released weights load into and what torch.hub, export and inference use; ``VPRModel`` (the
LightningModule) wraps one and adds the training recipe. Its state_dict holds ``backbone.*`` and
``aggregator.*`` and nothing else, the layout of the authors' MixVPR releases. It carries, outside the
state_dict, the size it was built for (``image_size``) and its evaluation preprocessing
(``preprocessing``: test image size, resize policy, mean/std), which checkpoints and releases record.
"""
from typing import Optional, Sequence

from torch import Tensor, nn

from dataloaders.preprocessing import Preprocessing
from dataloaders.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_batch
from utils.errors import ConfigError

from . import helper

DEFAULT_IMAGE_SIZE = (320, 320)
# the arguments that fix the network's architecture (what a bare state_dict must be told)
ARCHITECTURE_ARGS = ("backbone_arch", "backbone_config", "layers_to_crop", "agg_arch", "agg_config", "image_size")


class VPRNet(nn.Module):
    """(B, 3, H, W) images, normalised with ``mean``/``std`` -> (B, descriptor_dim) L2-normalised descriptors.

    backbone: a feature extractor exposing ``out_channels`` and ``stride``.
    aggregator: maps the backbone's output to a descriptor and exposes ``out_dim``.
    image_size: (height, width) the network was built for (MixVPR's layers depend on it).
    preprocessing: how evaluation feeds it (``dataloaders.preprocessing.Preprocessing``); default: images of
        ``image_size`` normalised with ``mean``/``std``. A checkpoint or release may record another test size
        (SALAD: trained at 224, evaluated at 322).
    """

    def __init__(self, backbone: nn.Module, aggregator: nn.Module, image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 preprocessing: Optional[Preprocessing] = None):
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator
        self.image_size = tuple(int(s) for s in image_size)
        self.preprocessing = preprocessing or Preprocessing(self.image_size, tuple(mean), tuple(std))

    @property
    def mean(self) -> tuple[float, float, float]:
        """RGB mean of the normalisation (the preprocessing's)."""
        return self.preprocessing.mean

    @property
    def std(self) -> tuple[float, float, float]:
        """RGB standard deviation of the normalisation (the preprocessing's)."""
        return self.preprocessing.std

    @property
    def descriptor_dim(self) -> int:
        """Length of the descriptor."""
        return self.aggregator.out_dim

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, descriptor_dim) L2-normalised descriptors."""
        return self.aggregator(self.backbone(x))

    def normalize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 images (0..255) -> float images normalised with this network's mean/std."""
        return normalize_batch(images, self.mean, self.std)

    def load_pretrained(self) -> None:
        """Load the backbone's published pretrained weights (ImageNet, DINOv2 ...), downloading them once.

        Offline, the error names the file to copy into torch.hub's cache, or says to train with
        ``pretrained=False``. A backbone without pretrained weights raises ConfigError.
        """
        load = getattr(self.backbone, "load_pretrained", None)
        if load is None:
            raise ConfigError(f"{type(self.backbone).__name__} has no pretrained weights: use pretrained=False")
        load()


def derive_image_size(backbone: nn.Module, agg_config: dict) -> tuple[int, int]:
    """The image size of a model built without one: the aggregator's map size (``in_h``, ``in_w``, as in
    the original MixVPR constructor) times the backbone's stride, else the backbone's
    ``default_image_size`` when it has one (DINOv2: 322 x 322), else 320 x 320."""
    if "in_h" in agg_config and "in_w" in agg_config and getattr(backbone, "stride", None):
        return int(agg_config["in_h"]) * backbone.stride, int(agg_config["in_w"]) * backbone.stride
    return tuple(getattr(backbone, "default_image_size", DEFAULT_IMAGE_SIZE))


def build_network(backbone_arch: str = "resnet50", pretrained: bool = False, layers_to_freeze: int = 2,
                  layers_to_crop: Sequence[int] = (4,), agg_arch: str = "MixVPR", agg_config: Optional[dict] = None,
                  image_size: Optional[Sequence[int]] = None, backbone_config: Optional[dict] = None) -> VPRNet:
    """The VPRNet of these settings (see ``VPRModel`` for their meaning).

    ``pretrained`` loads the backbone's published weights now (a download the first time); models
    built for training leave that to the start of training. ``image_size`` None derives it from
    ``agg_config``'s ``in_h``/``in_w`` (see ``derive_image_size``).
    """
    agg_config = dict(agg_config or {})
    if image_size is not None:
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) <= 0:
            raise ConfigError(f"image_size={list(image_size)}: (height, width) with positive sizes, e.g. "
                              f"[320, 320] (--data.image_size)")
    backbone = helper.get_backbone(backbone_arch, False, layers_to_freeze, layers_to_crop, backbone_config)
    size = image_size or derive_image_size(backbone, agg_config)
    aggregator = helper.get_aggregator(agg_arch, agg_config, backbone, size, backbone_arch)
    net = VPRNet(backbone, aggregator, size)
    if pretrained:
        net.load_pretrained()
    return net
