"""VPRDataModule: GSV-Cities for training, named benchmarks for validation and test."""
import os
from typing import Optional, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from .eval import EVAL_SETS, FOLDER_PREFIX, build_eval_set, is_eval_set
from .gsv_cities import TRAIN_CITIES, GSVCitiesDataset
from .samplers import CityShuffleSampler, ResumableLoader
from .transforms import eval_transform, train_transform

# data-root setting -> environment variable used when the setting is not given
ROOT_ENV = {"gsv_root": "GSV_CITIES_ROOT", "pitts_root": "PITTSBURGH_ROOT", "msls_root": "MSLS_ROOT"}


class VPRDataModule(L.LightningDataModule):
    """Batches of ``batch_size`` places x ``img_per_place`` images from GSV-Cities; evaluation sets by name.

    ``val_sets`` are names (pitts30k_val, msls_val, ...) or ``folder:<root>`` for the generic folder
    format, whose positives lie within ``pos_radius`` metres. Data roots come from the arguments, else from the environment (GSV_CITIES_ROOT, PITTSBURGH_ROOT,
    MSLS_ROOT). ``synthetic=True`` generates the embedded synthetic data sets once under
    ``synthetic_dir`` and uses them for every root not given explicitly.
    """

    def __init__(
        self,
        gsv_root: Optional[str] = None,
        cities: Optional[Sequence[str]] = None,
        batch_size: int = 120,
        img_per_place: int = 4,
        min_img_per_place: int = 4,
        shuffle_all: bool = False,
        image_size: tuple[int, int] = (320, 320),
        rand_augment_ops: int = 3,
        num_workers: int = 4,
        val_sets: Sequence[str] = ("pitts30k_val",),
        pos_radius: float = 25.0,
        pitts_root: Optional[str] = None,
        msls_root: Optional[str] = None,
        eval_batch_size: int = 64,
        synthetic: bool = False,
        synthetic_dir: str = "LOGS/synthetic_data",
        synthetic_scale: str = "default",
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        unknown = [s for s in val_sets if not is_eval_set(s)]
        if unknown:
            raise ValueError(f"unknown evaluation set(s) {unknown}; choose from {sorted(EVAL_SETS)} "
                             f"or {FOLDER_PREFIX}<root> for a set in the generic folder format")
        self.train_dataset: Optional[GSVCitiesDataset] = None
        self.val_datasets: list = []

    def roots(self) -> dict[str, Optional[str]]:
        """Data roots: argument, else environment variable, else the synthetic data (when enabled)."""
        hp = self.hparams
        roots = {k: getattr(hp, k) or os.environ.get(env) for k, env in ROOT_ENV.items()}
        if hp.synthetic:
            from .synthetic import synthetic_roots
            generated = synthetic_roots(hp.synthetic_dir)
            roots = {k: getattr(hp, k) or str(generated[k]) for k in ROOT_ENV}
        return roots

    def cities(self) -> Sequence[str]:
        """The training cities: as configured, else the synthetic ones or the paper's 23."""
        if self.hparams.cities:
            return self.hparams.cities
        if self.hparams.synthetic and not self.hparams.gsv_root:
            from .synthetic import SYNTHETIC_CITIES
            return SYNTHETIC_CITIES
        return TRAIN_CITIES

    def prepare_data(self) -> None:
        """Generate the synthetic data sets once (first process only)."""
        if self.hparams.synthetic:
            from .synthetic import generate_synthetic
            generate_synthetic(self.hparams.synthetic_dir, scale=self.hparams.synthetic_scale, seed=self.hparams.seed)

    def setup(self, stage: str) -> None:
        """Open and check every data set the stage needs, before any training step."""
        roots = self.roots()
        if stage == "fit" and self.train_dataset is None:
            if roots["gsv_root"] is None:
                raise ValueError("GSV-Cities root not set: pass --data.gsv_root, set GSV_CITIES_ROOT, "
                                 "or use --data.synthetic true for the embedded synthetic data")
            self.train_dataset = GSVCitiesDataset(
                roots["gsv_root"], self.cities(), self.hparams.img_per_place, self.hparams.min_img_per_place,
                train_transform(self.hparams.image_size, self.hparams.rand_augment_ops))
        if not self.val_datasets:
            tf = eval_transform(self.hparams.image_size)
            self.val_datasets = [build_eval_set(name, roots, tf, self.hparams.pos_radius) for name in self.hparams.val_sets]

    def train_dataloader(self) -> DataLoader:
        """``batch_size`` places per optimizer step over all processes, city by city in a new order each
        epoch; under DDP each process loads its ``batch_size / world_size`` slice of every step's places."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        hp = self.hparams
        sampler = CityShuffleSampler(self.train_dataset.city_of_place, hp.shuffle_all, hp.seed,
                                     batch_size=hp.batch_size, num_replicas=world, rank=rank)
        return ResumableLoader(self.train_dataset, batch_size=hp.batch_size // world, sampler=sampler,
                               num_workers=hp.num_workers, pin_memory=torch.cuda.is_available(),
                               persistent_workers=hp.num_workers > 0, batches_done=self._batches_done)

    def _batches_done(self) -> int:
        """Training batches of the current epoch done so far (what a checkpoint taken now has trained)."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _eval_loaders(self) -> list[DataLoader]:
        return [DataLoader(ds, batch_size=self.hparams.eval_batch_size, shuffle=False,
                           num_workers=self.hparams.num_workers, pin_memory=torch.cuda.is_available()) for ds in self.val_datasets]

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per validation set, database first then queries."""
        return self._eval_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        """The validation sets, for ``trainer.test``."""
        return self._eval_loaders()
