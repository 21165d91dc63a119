"""A list of image files as a dataset: the one image reader of evaluation, inference and retrieval."""
from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from utils.errors import DataError

from .image_io import check_image, decode_rgb, read_bytes


class ImageList(Dataset):
    """Item i: ``(image i, i, readable)``; the index lets descriptors be put back in order after a
    distributed sampler interleaved them.

    The image is the file decoded to uint8 (3, h, w) and passed through ``transform`` (e.g.
    ``transforms.EvalTransform``: uint8 (3, H, W)); with ``encoded``, the file's bytes as a 1-D uint8 tensor,
    for decoding on the device (``transforms.EncodedCollate``). An unreadable file raises an error naming
    it, unless ``skip_unreadable``: then the item is a zero image of ``image_size`` (height, width) with
    ``readable`` False, and the consumer leaves it out.
    """

    def __init__(self, paths: Sequence[str], transform: Optional[Callable] = None, skip_unreadable: bool = False,
                 image_size: Optional[Sequence[int]] = None, encoded: bool = False):
        if skip_unreadable and (image_size is None or encoded):
            raise ValueError("skip_unreadable needs image_size (the size of the stand-in for an unreadable image) "
                             "and images decoded by the workers (decode_on cpu)")
        self.images = [str(p) for p in paths]
        self.transform = transform
        self.skip_unreadable = skip_unreadable
        self.image_size = tuple(image_size) if image_size is not None else None
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        path = self.images[index]
        try:
            data = read_bytes(path)
            if self.encoded:
                check_image(data, path)  # decoded on the device: its size is checked here
                return data, index, True
            image = decode_rgb(data, path)
        except DataError:
            if not self.skip_unreadable:
                raise
            return torch.zeros(3, *self.image_size, dtype=torch.uint8), index, False
        if self.transform is not None:
            image = self.transform(image)
        return image, index, True


def collate_by_size(items: list) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``ImageList`` items (image, index, readable) -> one collated (images, indices, readable) batch per
    image size, sizes in the order they first appear: images kept at their own resolution
    (``Preprocessing`` resize 'none') cannot be stacked together. Images of one size give one batch."""
    groups: dict[tuple, list] = {}
    for item in items:
        groups.setdefault(tuple(item[0].shape), []).append(item)
    return [default_collate(group) for group in groups.values()]
