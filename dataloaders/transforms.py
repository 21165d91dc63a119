"""Image transforms: the paper's training augmentation and the plain evaluation transform.

Data sets hand uint8 images through the DataLoader (a quarter of float32's bytes, no float work in the
workers); ``prepare_images`` turns a batch into the model's float input on the device
(``VPRModel.on_after_batch_transfer``). Two places to decode (``data.decode_on``):

- ``cpu``: workers decode, resize (``EvalTransform``) and augment (``TrainTransform``) each image;
- ``gpu``: workers only read the files' bytes (``encoded=True`` data sets, ``EncodedCollate``); the
  device decodes them (nvJPEG on CUDA), resizes and applies the same RandAugment to the whole batch.

Both give the pixels of the original float pipeline (``train_transform``/``eval_transform``: PIL resize,
torchvision's RandAugment on PIL images, ToTensor, Normalize): resizing is the same antialiased
bilinear filter to the last bit, RandAugment the same operations and magnitudes (``rand_augment.py``).
"""
import signal
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as F2
from torch import Tensor
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_jpeg

from .image_io import decode_rgb
from .rand_augment import augment_batch, augment_image, draw_ops, magnitudes

# OpenCV single-threaded in every process that imports this: a DataLoader worker forked after OpenCV's thread
# pool started in the parent (transforms run there with num_workers=0) deadlocks in its first OpenCV call, and
# each worker uses one core anyway (torch's own setting in workers)
cv2.setNumThreads(1)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DECODE_ON = ("cpu", "gpu")


# ------------------------------------------------------------------------ the original float pipeline
def train_transform(image_size: Sequence[int], rand_augment_ops: int = 3) -> T.Compose:
    """The original PIL pipeline: resize to (height, width), RandAugment(num_ops), tensor, ImageNet
    normalisation; the reference ``TrainTransform`` + ``normalize_batch`` is tested against."""
    steps = [T.Resize(tuple(image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)]
    if rand_augment_ops > 0:
        steps.append(T.RandAugment(num_ops=rand_augment_ops, interpolation=T.InterpolationMode.BILINEAR))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def eval_transform(image_size: Sequence[int]) -> T.Compose:
    """PIL image -> resized (height, width), float, ImageNet-normalised (3, H, W) tensor (``models.inference``)."""
    return T.Compose([
        T.Resize(tuple(image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# ------------------------------------------------------------------------------- uint8, in the workers
# signals that stop a run: the main process ends it at a step boundary (utils.preemption)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


def init_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker, as torch has, so N workers use N cores;
    numpy's generator seeded from the worker's torch seed (torch seeds only itself and Python's random, so
    every worker would otherwise draw numpy's same numbers). SIGTERM and SIGUSR1 are ignored: when a cluster
    signals the whole process group, the main process finishes the step and saves a checkpoint, whereas a
    worker that died of the signal would make torch raise in the middle of the step. (Workers still end with
    the main process: torch stops them, or they notice that it is gone.)"""
    cv2.setNumThreads(1)
    np.random.seed(torch.initial_seed() % 2**32)
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def resize_uint8(images: Tensor, image_size: Sequence[int]) -> Tensor:
    """uint8 (..., 3, h, w) -> (..., 3, H, W), antialiased bilinear: on the CPU the same pixels as PIL's resize."""
    if tuple(images.shape[-2:]) == tuple(image_size):
        return images
    return F2.resize(images, list(image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)


def _hwc(image: Tensor) -> np.ndarray:
    """(3, H, W) uint8 tensor -> HWC array; a view when the tensor is channels-last in memory, as
    torch's uint8 resize returns it."""
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def _chw(image: np.ndarray) -> Tensor:
    """HWC uint8 array -> contiguous (3, H, W) tensor. OpenCV's channel split is ~5x faster than torch's
    strided copy, which collation would otherwise do on every channels-last image."""
    return torch.from_numpy(np.stack(cv2.split(image)))


class EvalTransform:
    """Decoded uint8 (3, h, w) image -> uint8 (3, H, W) at ``image_size`` (height, width), contiguous;
    ``image_size`` None: the image at its own size (h, w)."""

    def __init__(self, image_size: Optional[Sequence[int]]):
        self.image_size = tuple(image_size) if image_size is not None else None

    def __call__(self, image: Tensor) -> Tensor:
        if self.image_size is not None:
            image = resize_uint8(image, self.image_size)
        return _chw(_hwc(image))


class TrainTransform:
    """Decoded uint8 (3, h, w) image -> resized to ``image_size``, RandAugment(``rand_augment_ops``)
    -> contiguous uint8 (3, H, W). Draws its operations from torch's generator as ``T.RandAugment`` does."""

    def __init__(self, image_size: Sequence[int], rand_augment_ops: int = 3):
        self.image_size = tuple(image_size)
        self.rand_augment_ops = rand_augment_ops
        self.table = magnitudes(*self.image_size)

    def __call__(self, image: Tensor) -> Tensor:
        image = _hwc(resize_uint8(image, self.image_size))
        if self.rand_augment_ops > 0:
            image = augment_image(image, self.rand_augment_ops, self.table)
        return _chw(image)


# --------------------------------------------------------------------------------- on the device
def normalize_batch(images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """uint8 (..., 3, H, W) -> float32 normalised (ImageNet statistics by default), on the images' device; the
    arithmetic of ToTensor + Normalize (divide by 255, subtract the mean, divide by the std)."""
    mean = torch.tensor(mean, device=images.device).view(3, 1, 1)
    std = torch.tensor(std, device=images.device).view(3, 1, 1)
    return images.float().div_(255).sub_(mean).div_(std)


class EncodedImages:
    """A batch of undecoded image files (``data``: 1-D uint8 CPU tensors, laid out as ``shape``, e.g.
    (P, K) places x images or (B,)), decoded on the device by ``decode``. A plain object, not a
    tensor or a dataclass, so Lightning's batch transfer leaves the bytes on the CPU, where
    torchvision's decoders read them."""

    def __init__(self, data: list[Tensor], shape: tuple[int, ...], image_size: Sequence[int], rand_augment_ops: int):
        self.data, self.shape = data, tuple(shape)
        self.image_size, self.rand_augment_ops = tuple(image_size), rand_augment_ops

    def __len__(self) -> int:
        return len(self.data)

    def decode(self, device: torch.device | str, generator: Optional[torch.Generator] = None) -> Tensor:
        """uint8 (*shape, 3, H, W) on ``device``: decoded (JPEG on the device, other formats on the CPU),
        resized, and with ``rand_augment_ops`` > 0 augmented (operations drawn from ``generator``)."""
        device = torch.device(device)
        is_jpeg = [d[:2].tolist() == [0xFF, 0xD8] for d in self.data]  # the JPEG start-of-image marker
        jpegs = [d for d, j in zip(self.data, is_jpeg) if j]
        decoded = iter(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device) if jpegs else [])
        images = [next(decoded) if j else decode_rgb(d, "an image of the batch").to(device)
                  for d, j in zip(self.data, is_jpeg)]
        # resize images of one size together: one kernel per size, not one per image
        out = torch.empty(len(images), 3, *self.image_size, dtype=torch.uint8, device=device)
        sizes: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            sizes.setdefault(tuple(image.shape[-2:]), []).append(i)
        for rows in sizes.values():
            out[rows] = resize_uint8(torch.stack([images[i] for i in rows]), self.image_size)
        if self.rand_augment_ops > 0:
            ops, signs = draw_ops(len(out), self.rand_augment_ops, generator)
            out = augment_batch(out, ops, signs, magnitudes(*self.image_size))
        return out.reshape(*self.shape, 3, *self.image_size)


class EncodedCollate:
    """DataLoader ``collate_fn`` for ``encoded=True`` data sets: evaluation items (bytes, index, readable) ->
    (EncodedImages, indices, readable); training items (K files' bytes, labels, skipped file indices) ->
    (EncodedImages (P, K), labels, all skipped indices)."""

    def __init__(self, image_size: Sequence[int], rand_augment_ops: int = 0):
        self.image_size, self.rand_augment_ops = tuple(image_size), rand_augment_ops

    def __call__(self, items: list) -> list:
        first = items[0][0]
        if isinstance(first, (list, tuple)) or first is None:
            # training places (K files, labels, skipped file indices); a place without K files sits out
            places = [item for item in items if item[0] is not None]
            data = [d for item in places for d in item[0]]
            shape = (len(places), len(places[0][0]) if places else 0)
            rest = [default_collate([item[1] for item in places]), torch.cat([item[2] for item in items])]
        else:
            data, shape = [item[0] for item in items], (len(items),)
            rest = default_collate([tuple(item[1:]) for item in items])
        return [EncodedImages(data, shape, self.image_size, self.rand_augment_ops), *rest]


def prepare_images(images: Tensor | EncodedImages, device: torch.device | str) -> Tensor:
    """The model's input on ``device``: float32 normalised (..., 3, H, W) from a uint8 batch, an
    ``EncodedImages`` batch (decoded there), or a float batch (taken as already normalised)."""
    if isinstance(images, EncodedImages):
        images = images.decode(device)
    if images.dtype == torch.uint8:
        return normalize_batch(images.to(device))
    return images
