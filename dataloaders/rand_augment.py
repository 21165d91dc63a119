"""RandAugment (Cubuk et al., 2020) exactly as torchvision's ``T.RandAugment`` draws it, on uint8 images.

The paper's training recipe uses torchvision's RandAugment(num_ops=3, bilinear) on PIL images. Two
implementations of the same 14 operations, magnitudes and draws live here:

- ``augment_image``: one HWC uint8 numpy image on the CPU (data-loader workers). It consumes the torch
  random generator exactly as ``T.RandAugment`` does, so under one seed it picks the same operations
  and signs. The colour operations are torchvision's own PIL ops (the same pixels); integer
  translations are array shifts and sharpness is OpenCV's ``filter2D`` with PIL's kernel and blend
  (the same pixels); shear and rotation are OpenCV's float ``warpAffine`` with PIL's map, edge rule and
  truncation (the same pixels but for about one in 10,000, one grey level off). The geometric ops and
  sharpness cost PIL ~2.5-4 ms each on a 320 x 320 image, OpenCV about a third of that.
- ``augment_batch``: a (N, 3, H, W) uint8 tensor on any device (the GPU path), torchvision's tensor
  ops applied once per group of images that drew the same operation and sign (shear and rotation in
  float, truncated as PIL does); choices come from ``draw_ops``, the same distribution drawn for the
  whole batch at once. Pixels agree with the CPU path within a grey level, except on the one-pixel rim
  of a warped image, which torch blends with black.
"""
import math
from typing import Optional

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as F
import torchvision.transforms.v2.functional as F2
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

# torchvision's operation order: the index drawn selects the operation
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}
MAGNITUDE, NUM_BINS = 9, 31  # torchvision's defaults, the paper's setting
_IS_SIGNED = torch.tensor([op in SIGNED for op in OPS])
# PIL's colour operations, as torchvision applies them to PIL images (factor = 1 + magnitude)
_PIL_OPS = {
    "Brightness": lambda img, m: F.adjust_brightness(img, 1.0 + m),
    "Color": lambda img, m: F.adjust_saturation(img, 1.0 + m),
    "Contrast": lambda img, m: F.adjust_contrast(img, 1.0 + m),
    "Posterize": lambda img, m: F.posterize(img, int(m)),
    "Solarize": lambda img, m: F.solarize(img, m),
    "AutoContrast": lambda img, m: F.autocontrast(img),
    "Equalize": lambda img, m: F.equalize(img),
}


def magnitudes(height: int, width: int) -> dict[str, float]:
    """Unsigned magnitude of each operation for an image of (height, width), as torchvision computes it
    (float32 ``linspace`` values: the same factors to the last bit)."""
    bin_of = lambda start, stop: float(torch.linspace(start, stop, NUM_BINS)[MAGNITUDE])
    return {
        "Identity": 0.0, "ShearX": bin_of(0.0, 0.3), "ShearY": bin_of(0.0, 0.3),
        "TranslateX": bin_of(0.0, 150.0 / 331.0 * width), "TranslateY": bin_of(0.0, 150.0 / 331.0 * height),
        "Rotate": bin_of(0.0, 30.0), "Brightness": bin_of(0.0, 0.9), "Color": bin_of(0.0, 0.9),
        "Contrast": bin_of(0.0, 0.9), "Sharpness": bin_of(0.0, 0.9),
        "Posterize": float(8 - round(MAGNITUDE / ((NUM_BINS - 1) / 4))), "Solarize": bin_of(255.0, 0.0),
        "AutoContrast": 0.0, "Equalize": 0.0,
    }


def draw_ops(n: int, num_ops: int, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """(operation indices (n, num_ops) int64 into ``OPS``, signs (n, num_ops) of +-1.0): uniform
    operations, each signed one negated with probability 1/2, as ``T.RandAugment`` draws them."""
    ops = torch.randint(len(OPS), (n, num_ops), generator=generator)
    flip = torch.randint(2, (n, num_ops), generator=generator).bool() & _IS_SIGNED[ops]
    return ops, 1.0 - 2.0 * flip.double()


def draw_ops_like_torchvision(num_ops: int) -> list[tuple[int, float]]:
    """One image's [(operation index, sign)] drawn from the global generator call for call as
    ``T.RandAugment.forward`` does: under the same seed, the same operations and signs."""
    choices = []
    for _ in range(num_ops):
        op = int(torch.randint(len(OPS), (1,)).item())
        sign = -1.0 if OPS[op] in SIGNED and torch.randint(2, (1,)) else 1.0
        choices.append((op, sign))
    return choices


# ------------------------------------------------------------------------------------------------ CPU
def _warp(img: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Bilinear warp of an HWC uint8 image by ``inverse`` (2 x 3, output -> input, PIL's continuous
    coordinates: pixel i covers [i, i + 1)) as PIL's ``Image.transform`` does it: black where the
    source point falls outside the image, edge pixels repeated for the neighbours of points inside,
    the interpolated value truncated."""
    a, t = inverse[:, :2], inverse[:, 2]
    # OpenCV addresses pixel centres by integer index: shift both ends by half a pixel
    m = np.hstack([a, (t + a @ [0.5, 0.5] - 0.5)[:, None]])
    h, w = img.shape[:2]
    # in float32, then truncated as PIL does (OpenCV's uint8 warp rounds: +0.45 grey level on average)
    out = cv2.warpAffine(img.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE).astype(np.uint8)
    # nearest-neighbour rounding of the source index is PIL's inside test on the source point
    inside = cv2.warpAffine(np.ones((h, w), np.uint8), m, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.bitwise_and(out, out, mask=inside)


def _shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``img`` moved by whole pixels (content moves right/down for positive dx/dy), black where it left."""
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    if abs(dx) < w and abs(dy) < h:
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[max(-dy, 0):h - max(dy, 0),
                                                                         max(-dx, 0):w - max(dx, 0)]
    return out


def _sharpness(img: np.ndarray, factor: float) -> Image.Image:
    """PIL's ``ImageEnhance.Sharpness``: its SMOOTH filter (border pixels kept) by OpenCV, then PIL's blend."""
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13
    smooth = cv2.filter2D(img, -1, kernel)
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = img[0], img[-1], img[:, 0], img[:, -1]
    return Image.blend(Image.fromarray(smooth), Image.fromarray(img), factor)


def _array_op(img: np.ndarray, op: str, magnitude: float) -> np.ndarray | Image.Image:
    """The operations done on arrays: geometry and sharpness."""
    h, w = img.shape[:2]
    if op == "ShearX":  # shear about the top-left corner: input x = x + m y
        return _warp(img, np.array([[1.0, magnitude, 0.0], [0.0, 1.0, 0.0]]))
    if op == "ShearY":
        return _warp(img, np.array([[1.0, 0.0, 0.0], [magnitude, 1.0, 0.0]]))
    if op == "TranslateX":  # torchvision translates by int(magnitude): a whole-pixel shift
        return _shift(img, int(magnitude), 0)
    if op == "TranslateY":
        return _shift(img, 0, int(magnitude))
    if op == "Rotate":  # counter-clockwise by ``magnitude`` degrees about the image centre, as PIL rotates
        angle = -math.radians(magnitude)
        a = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
        centre = np.array([w / 2, h / 2])
        return _warp(img, np.hstack([a, (centre - a @ centre)[:, None]]))
    return _sharpness(img, 1.0 + magnitude)


def _as_array(img: np.ndarray | Image.Image) -> np.ndarray:
    return img if isinstance(img, np.ndarray) else np.asarray(img)


def _step(img: np.ndarray | Image.Image, op: str, magnitude: float) -> np.ndarray | Image.Image:
    """One operation on an array or a PIL image, converting only when the operation needs the other kind."""
    if op == "Identity":
        return img
    if op in _PIL_OPS:
        return _PIL_OPS[op](img if isinstance(img, Image.Image) else Image.fromarray(img), magnitude)
    return _array_op(_as_array(img), op, magnitude)


def apply_op(img: np.ndarray, op: str, magnitude: float) -> np.ndarray:
    """One RandAugment operation with signed ``magnitude`` on an HWC uint8 RGB image (returns a new
    array or ``img`` itself), with the maps and factors of torchvision's ``_apply_op`` on PIL images."""
    return _as_array(_step(img, op, magnitude))


def augment_image(img: np.ndarray, num_ops: int, table: Optional[dict[str, float]] = None) -> np.ndarray:
    """``num_ops`` random operations on one HWC uint8 RGB image, drawn as ``T.RandAugment`` draws them."""
    table = table or magnitudes(*img.shape[:2])
    for op, sign in draw_ops_like_torchvision(num_ops):
        img = _step(img, OPS[op], sign * table[OPS[op]])
    return _as_array(img)


# ---------------------------------------------------------------------------------------- any device
def _truncated(images: Tensor) -> Tensor:
    """Float interpolation results -> uint8 truncated as PIL does (torchvision's uint8 ops round: a
    +0.45 grey-level shift per warp); the margin absorbs float32 error on whole values."""
    return images.add_(1e-3).floor_().clamp_(0, 255).to(torch.uint8)


def _apply_op_batch(images: Tensor, op: str, magnitude: float) -> Tensor:
    """One operation on a (n, 3, H, W) uint8 batch, with torchvision's tensor ops and ``_apply_op``'s arguments."""
    bilinear = InterpolationMode.BILINEAR
    if op == "Identity":
        return images
    if op in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        return _truncated(F2.affine(images.float(), angle=0.0, translate=[0, 0], scale=1.0, interpolation=bilinear,
                                    center=[0, 0], shear=[shear, 0.0] if op == "ShearX" else [0.0, shear]))
    if op in ("TranslateX", "TranslateY"):
        shift = [int(magnitude), 0] if op == "TranslateX" else [0, int(magnitude)]
        return F2.affine(images, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=bilinear)
    if op == "Rotate":
        return _truncated(F2.rotate(images.float(), magnitude, interpolation=bilinear))
    if op == "Brightness":
        return F2.adjust_brightness(images, 1.0 + magnitude)
    if op == "Color":
        return F2.adjust_saturation(images, 1.0 + magnitude)
    if op == "Contrast":
        return F2.adjust_contrast(images, 1.0 + magnitude)
    if op == "Sharpness":
        return F2.adjust_sharpness(images, 1.0 + magnitude)
    if op == "Posterize":
        return F2.posterize(images, int(magnitude))
    if op == "Solarize":
        return F2.solarize(images, magnitude)
    if op == "AutoContrast":
        return F2.autocontrast(images)
    return F2.equalize(images)


def augment_batch(images: Tensor, ops: Tensor, signs: Tensor, table: Optional[dict[str, float]] = None) -> Tensor:
    """(N, 3, H, W) uint8 on any device, per image the operations ``ops`` (N, num_ops) with ``signs``
    (from ``draw_ops``), applied in order; one batched call per (step, operation, sign) group."""
    table = table or magnitudes(*images.shape[-2:])
    images = images.clone()
    for step in range(ops.shape[1]):
        keys = ops[:, step] * 2 + (signs[:, step] < 0)
        for key in torch.unique(keys).tolist():
            rows = torch.nonzero(keys == key).flatten().to(images.device)
            op, sign = OPS[key // 2], -1.0 if key % 2 else 1.0
            images[rows] = _apply_op_batch(images[rows], op, sign * table[op])
    return images

