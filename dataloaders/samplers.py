"""The order of GSV-Cities places in training: city by city, one global batch per optimizer step, split
across processes, resumable mid-epoch.

One process and N processes see the same global batches: batch b of epoch e is the same ``batch_size``
places whatever the number of processes, and process r takes the r-th of its N equal slices. The order
depends only on (seed, epoch). ``CityShuffleSampler`` subclasses ``DistributedSampler`` so that Lightning
uses it as it is under DDP (Lightning replaces only samplers that are not ``DistributedSampler``s: its
shuffling wrapper would break the city grouping and give every process a whole batch of its own).
"""
from typing import Callable, Iterator, Optional

import numpy as np
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from utils.errors import ConfigError


class CityShuffleSampler(DistributedSampler):
    """Place indices of one process: the places city by city, each city's places in a new random order
    every epoch (the paper's order: a batch mostly holds places of one city, which gives hard negatives);
    ``shuffle_all`` mixes cities instead.

    city_of_place: (num_places,) city index of each place.
    batch_size: places per optimizer step over all processes (the global batch); each process loads
        ``batch_size // num_replicas`` of them per step. None: one process, no slicing.
    num_replicas, rank: number of processes and this one's rank (given, not read from torch.distributed).
    epoch: the epoch to start at (a resumed run's: Lightning creates the first iterator before it calls
        ``set_epoch``).
    on_set_epoch: also called with every epoch set (the training set draws its images per epoch).

    The last global batch of an epoch is shortened to a multiple of ``num_replicas`` places (at most
    ``num_replicas - 1`` places of the epoch are left out; none with one process), so that every
    process takes the same number of steps. ``set_epoch`` (called by Lightning at each epoch start)
    selects the order; ``resume(epoch, batches_done)`` skips the global batches already trained in
    that epoch.
    """

    def __init__(self, city_of_place: np.ndarray, shuffle_all: bool = False, seed: int = 0,
                 batch_size: Optional[int] = None, num_replicas: int = 1, rank: int = 0, epoch: int = 0,
                 on_set_epoch: Optional[Callable[[int], None]] = None):
        self.city_of_place = np.asarray(city_of_place)
        super().__init__(self.city_of_place, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        if num_replicas > 1 and batch_size is None:
            raise ValueError("CityShuffleSampler: batch_size (places per step over all processes) is needed "
                             "to split batches across processes")
        if batch_size is not None and (batch_size < num_replicas or batch_size % num_replicas):
            raise ConfigError(f"data.batch_size={batch_size} places per step cannot be split evenly across "
                             f"{num_replicas} processes: use a multiple of {num_replicas} (it is the number of "
                             f"places per optimizer step over all processes)")
        self.batch_size = batch_size or max(1, len(self.city_of_place))
        self.shuffle_all = shuffle_all
        self._resume_epoch, self._resume_batches = -1, 0
        self.on_set_epoch = on_set_epoch
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order (Lightning calls this at every epoch start) and tell ``on_set_epoch``."""
        super().set_epoch(epoch)
        if self.on_set_epoch is not None:
            self.on_set_epoch(epoch)

    def global_order(self) -> np.ndarray:
        """(num_places,) this epoch's order of all places, the same in every process."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle_all:
            return rng.permutation(len(self.city_of_place))
        return np.concatenate([rng.permutation(np.flatnonzero(self.city_of_place == c))
                               for c in np.unique(self.city_of_place)]).astype(np.int64)

    def _split(self) -> tuple[int, int]:
        """(full global batches, places in the shortened last one) of an epoch."""
        n, world = len(self.city_of_place), self.num_replicas
        full, rest = divmod(n, self.batch_size)
        return full, rest - rest % world

    def rank_order(self) -> np.ndarray:
        """This process's places of the epoch: its slice of each global batch, in step order."""
        order, world, r = self.global_order(), self.num_replicas, self.rank
        full, rest = self._split()
        cut = full * self.batch_size
        mine = [order[:cut].reshape(full, world, -1)[:, r].ravel()]
        if rest:
            mine.append(order[cut:cut + rest].reshape(world, -1)[r])
        mine = np.concatenate(mine)
        if self.epoch == self._resume_epoch:
            mine = mine[self._resume_batches * (self.batch_size // world):]
        return mine

    def resume(self, epoch: int, batches_done: int) -> None:
        """In ``epoch``, start after its first ``batches_done`` global batches (already trained)."""
        self._resume_epoch, self._resume_batches = int(epoch), int(batches_done)

    def __len__(self) -> int:
        full, rest = self._split()
        return (full * self.batch_size + rest) // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_order().tolist())


class ResumableLoader(DataLoader):
    """A DataLoader over a ``CityShuffleSampler`` whose position survives a checkpoint.

    Lightning saves ``state_dict()`` with every checkpoint and, when it resumes in the middle of an
    epoch, calls ``load_state_dict`` before iterating: the epoch then continues with the places not yet
    trained instead of replaying its first batches. ``batches_done`` returns the number of this epoch's
    batches trained so far (the datamodule reads it from the trainer).
    """

    def __init__(self, *args, batches_done: Callable[[], int], **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict:
        """{'epoch': current epoch, 'batches_done': its global batches trained so far} ({} when Lightning
        replaced the sampler, e.g. for ``overfit_batches``)."""
        if not isinstance(self.sampler, CityShuffleSampler):
            return {}
        return {"epoch": self.sampler.epoch, "batches_done": int(self.batches_done())}

    def load_state_dict(self, state: dict) -> None:
        """Continue ``state['epoch']`` after its first ``state['batches_done']`` batches."""
        if state and isinstance(self.sampler, CityShuffleSampler):
            self.sampler.resume(state["epoch"], state["batches_done"])
