"""The evaluation preprocessing of a network: what its images go through before the forward pass.

One record says it (as timm's pretrained configs do): the image size (height, width), the resize policy
and the normalisation. It is the policy ``transforms.EvalTransform`` + ``transforms.normalize_batch``
implement, in this order: the decoded uint8 image is resized to exactly H x W (aspect ratio not kept, no
crop) with an antialiased bilinear filter, divided by 255, then normalised ``(x - mean) / std``.
Checkpoints and releases carry the record (``as_dict``); a record naming another policy is refused
rather than evaluated the wrong way.
"""
from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence

from utils.errors import ConfigError

from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform

# the one resize policy implemented (transforms.resize_uint8)
RESIZE, INTERPOLATION, ANTIALIAS = "exact", "bilinear", True
ORDER = "resize uint8 image, then /255, then (x - mean) / std"


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing: ``image_size`` (height, width) images, resized by ``resize`` ("exact":
    to exactly that size) with ``interpolation`` (antialiased when ``antialias``), normalised with
    ``mean``/``std`` (RGB, of values in 0..1)."""

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
        if (self.resize, self.interpolation, bool(self.antialias)) != (RESIZE, INTERPOLATION, ANTIALIAS):
            raise ConfigError(
                f"preprocessing resize={self.resize!r}, interpolation={self.interpolation!r}, antialias="
                f"{self.antialias}: this project evaluates with resize={RESIZE!r}, interpolation="
                f"{INTERPOLATION!r}, antialias={ANTIALIAS} only (dataloaders/transforms.EvalTransform)")
        object.__setattr__(self, "image_size", size)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "antialias", bool(self.antialias))

    def with_size(self, image_size: Optional[Sequence[int]]) -> "Preprocessing":
        """This record at another image size (None: unchanged)."""
        return self if image_size is None else replace(self, image_size=tuple(image_size))

    def transform(self) -> EvalTransform:
        """The uint8 transform of this record (resize); the network normalises on its device."""
        return EvalTransform(self.image_size)

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
        """One line: '322 x 322 (resized to exactly that size, bilinear, antialiased), ImageNet mean/std'."""
        stats = ("ImageNet mean/std" if (self.mean, self.std) == (IMAGENET_MEAN, IMAGENET_STD)
                 else f"mean {list(self.mean)}, std {list(self.std)}")
        return (f"{self.image_size[0]} x {self.image_size[1]} (resized to exactly that size, {self.interpolation}"
                f"{', antialiased' if self.antialias else ''}), {stats}")
