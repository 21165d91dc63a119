"""A list of image files as a dataset: the one image reader of evaluation, inference and retrieval."""
from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

from utils.errors import DataError

from utils.images import load_image


class ImageList(Dataset):
    """Item i: ``(image i transformed, i, readable)``; the index lets descriptors be put back in order
    after a distributed sampler interleaved them.

    An unreadable file raises an error naming it, unless ``skip_unreadable``: then the item is a zero
    image of ``image_size`` (height, width) with ``readable`` False, and the consumer leaves it out.
    """

    def __init__(self, paths: Sequence[str], transform: Optional[Callable] = None, skip_unreadable: bool = False,
                 image_size: Optional[Sequence[int]] = None):
        if skip_unreadable and image_size is None:
            raise ValueError("skip_unreadable needs image_size, the size of the stand-in for an unreadable image")
        self.images = [str(p) for p in paths]
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        self.image_size = tuple(image_size) if image_size is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            image = load_image(self.images[index])
        except DataError:
            if not self.skip_unreadable:
                raise
            return torch.zeros(3, *self.image_size), index, False
        if self.transform is not None:
            image = self.transform(image)
        return image, index, True
