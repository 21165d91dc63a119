"""The evaluation preprocessing of a network: what its images go through before the forward pass.

One record says it (as timm's pretrained configs do): the image size (height, width), the resize policy
and the normalisation. It is the policy ``transforms.EvalTransform`` + ``transforms.normalize_batch``
implement, in this order: the decoded uint8 image is resized, divided by 255, then normalised
``(x - mean) / std``. Two resize policies (``RESIZES``):

- ``exact``: to exactly H x W (aspect ratio not kept, no crop) with an antialiased bilinear filter, PIL's
  ``Resize`` before ``ToTensor`` to the last bit (MixVPR, BoQ, SALAD, CliqueMining evaluate so);
- ``none``: each image at its own resolution (CosPlace's and EigenPlaces' test.py, VPR-methods-evaluation
  without ``--image_size``: NetVLAD, MegaLoc); ``image_size`` is then only the size the network was built
  and exported at. Images of different sizes are embedded in batches of one size each
  (``image_list.collate_by_size``). A network that needs a size of its own (MegaLoc: multiples of 14)
  resizes inside its forward, after the normalisation, as its authors' forward does.

Resizing after normalising (VPR-methods-evaluation's order with ``--image_size``) gives other descriptors;
no family here evaluates that way in its own code, so that order is not offered.
Checkpoints and releases carry the record (``as_dict``); a record naming another policy is refused
rather than evaluated the wrong way.
"""
from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence

from utils.errors import ConfigError

from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform

# the resize policies implemented (transforms.EvalTransform), and their words in ``describe``
RESIZES = {"exact": "resized to exactly that size", "none": "each image at its own resolution, not resized"}
RESIZE, INTERPOLATION, ANTIALIAS = "exact", "bilinear", True
ORDER = "resize uint8 image, then /255, then (x - mean) / std"


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing: ``image_size`` (height, width) images, resized by ``resize`` ("exact":
    to exactly that size; "none": not at all, ``image_size`` being the size the network is built at) with
    ``interpolation`` (antialiased when ``antialias``), normalised with ``mean``/``std`` (RGB, of values in
    0..1)."""

    image_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = RESIZE
    interpolation: str = INTERPOLATION
    antialias: bool = ANTIALIAS

    def __post_init__(self):
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2 or min(size) <= 0:
            raise ConfigError(f"evaluation image size {list(self.image_size)}: (height, width) with positive sizes")
        mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"normalisation mean={list(mean)}, std={list(std)}: three values each, std positive")
        if (self.resize not in RESIZES or (self.interpolation, bool(self.antialias)) != (INTERPOLATION, ANTIALIAS)):
            raise ConfigError(
                f"preprocessing resize={self.resize!r}, interpolation={self.interpolation!r}, antialias="
                f"{self.antialias}: this project evaluates with resize={RESIZE!r} or 'none', interpolation="
                f"{INTERPOLATION!r}, antialias={ANTIALIAS} only (dataloaders/transforms.EvalTransform)")
        object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "antialias", bool(self.antialias))

    def with_size(self, image_size: Optional[Sequence[int]]) -> "Preprocessing":
        """This record at ``image_size``, resized to exactly that size; None or the record's own size: unchanged
        (so a network evaluated at its own resolution stays so when a caller passes its size back)."""
        if image_size is None or tuple(int(s) for s in image_size) == self.image_size:
            return self
        return replace(self, image_size=tuple(image_size), resize=RESIZE)

    @property
    def fixed_size(self) -> Optional[tuple[int, int]]:
        """The (height, width) every image is resized to; None when images keep their own resolution."""
        return self.image_size if self.resize == RESIZE else None

    def transform(self) -> EvalTransform:
        """The uint8 transform of this record (resize, or none); the network normalises on its device."""
        return EvalTransform(self.fixed_size)

    def as_dict(self) -> dict:
        """Plain values (lists, str, bool) for a checkpoint, a release record or a JSON file."""
        out = asdict(self)
        out.update(image_size=list(self.image_size), mean=list(self.mean), std=list(self.std))
        return out

    @classmethod
    def from_dict(cls, record: dict) -> "Preprocessing":
        """The record ``as_dict`` wrote; ConfigError for a malformed one or an unknown field."""
        if not isinstance(record, dict) or "image_size" not in record:
            raise ConfigError(f"a preprocessing record is a dict with image_size, mean, std, resize ...; got {record!r}")
        unknown = sorted(set(record) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"preprocessing record with unknown fields {unknown}: written by a newer version?")
        try:
            return cls(**record)
        except (TypeError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"malformed preprocessing record {record!r}: {err}") from None

    def describe(self) -> str:
        """One line: '322 x 322 (resized to exactly that size, bilinear, antialiased), ImageNet mean/std', or
        'each image at its own resolution, not resized (network built at 512 x 512), ImageNet mean/std'."""
        stats = ("ImageNet mean/std" if (self.mean, self.std) == (IMAGENET_MEAN, IMAGENET_STD)
                 else f"mean {list(self.mean)}, std {list(self.std)}")
        if self.resize != RESIZE:
            return (f"{RESIZES[self.resize]} (network built at {self.image_size[0]} x {self.image_size[1]}), "
                    f"{stats}")
        return (f"{self.image_size[0]} x {self.image_size[1]} ({RESIZES[RESIZE]}, {self.interpolation}"
                f"{', antialiased' if self.antialias else ''}), {stats}")
