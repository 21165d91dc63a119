"""Random draws of a training step as a function of (seed, epoch, step): a resumed run repeats them."""
import os
import random

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

# where Lightning's seed_everything (LightningCLI's --seed_everything) leaves the seed it set
SEED_ENV = "PL_GLOBAL_SEED"


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A 32-bit seed that is a function of (seed, epoch, batch index, process rank)."""
    return int(np.random.SeedSequence([seed, epoch, batch_idx, rank]).generate_state(1)[0])


class StepSeeds(Callback):
    """Before every training step, seed torch (CPU and CUDA), numpy and Python's random with
    ``step_seed(seed, epoch, batch, rank)``: dropout, the device's RandAugment (decode_on=gpu) and anything
    else drawn in the main process then depend on where the step is in training, not on what ran
    before, so a run resumed from a checkpoint draws what the uninterrupted run drew. The seed is the
    one ``seed_everything`` set; without one, nothing is seeded. (The images and augmentations drawn by
    the data workers depend on (seed, epoch, place): ``GSVCitiesDataset``.)"""

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        base = os.environ.get(SEED_ENV)
        if base is None:
            return
        seed = step_seed(int(base), trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
