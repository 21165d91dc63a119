"""Random draws of a training step as a function of (seed, epoch, step): a resumed run repeats them."""
import os
import random

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from .errors import ConfigError

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
    the data workers depend on (seed, epoch, place): ``GSVCitiesDataset``.) The seed is stored in every
    checkpoint: resuming with another one would draw another stream, and is refused."""

    def state_dict(self) -> dict:
        base = os.environ.get(SEED_ENV)
        return {"seed": None if base is None else int(base)}

    def load_state_dict(self, state_dict: dict) -> None:
        saved, current = state_dict.get("seed"), self.state_dict()["seed"]
        if "seed" in state_dict and saved != current:
            raise ConfigError(
                f"--seed_everything={current} given, the checkpoint's run has {saved}: every training step's random "
                f"draws follow that seed, so the run would not continue as it was. Drop the flag (or give "
                f"--seed_everything {saved}), or start a new run from its weights with --model.init_from <checkpoint>.")

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        base = os.environ.get(SEED_ENV)
        if base is None:
            return
        seed = step_seed(int(base), trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
