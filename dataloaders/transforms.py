"""Image transforms: the paper's training augmentation and the plain evaluation transform."""
from typing import Sequence

import torchvision.transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(image_size: Sequence[int], rand_augment_ops: int = 3) -> T.Compose:
    """Resize to (height, width), RandAugment(num_ops), tensor, ImageNet normalisation."""
    steps = [T.Resize(tuple(image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)]
    if rand_augment_ops > 0:
        steps.append(T.RandAugment(num_ops=rand_augment_ops, interpolation=T.InterpolationMode.BILINEAR))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def eval_transform(image_size: Sequence[int]) -> T.Compose:
    """Resize to (height, width), tensor, ImageNet normalisation."""
    return T.Compose([
        T.Resize(tuple(image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
