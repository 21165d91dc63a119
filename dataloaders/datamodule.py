"""VPRDataModule: GSV-Cities for training, named benchmarks for validation and test."""
from typing import Literal, Optional, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from utils.errors import ConfigError

from .eval import EVAL_SETS, FOLDER_PREFIX, build_eval_set, is_eval_set
from .gsv_cities import TRAIN_CITIES, CityShuffleSampler, GSVCitiesDataset
from .roots import data_roots
from .transforms import eval_transform, train_transform


class VPRDataModule(L.LightningDataModule):
    """GSV-Cities for training (batches of places x images), named benchmarks for validation and test.

    Args:
        gsv_root: GSV-Cities root (Dataframes/, Images/); default $GSV_CITIES_ROOT.
        cities: training cities (default: the paper's 23, or the synthetic ones).
        batch_size: places per optimizer step (the paper: 120).
        img_per_place: images drawn per place (K, the paper: 4).
        min_img_per_place: places with fewer images are left out.
        shuffle_all: mix cities in a batch instead of the paper's city-by-city order.
        image_size: (height, width) of training images.
        rand_augment_ops: RandAugment operations per training image (0: none).
        num_workers: data-loading processes.
        val_sets: sets evaluated during training: pitts30k_val, pitts30k_test, pitts250k_val,
            pitts250k_test, msls_val, or folder:<root> (the generic folder format).
        test_sets: sets evaluated by ``main.py test`` (the paper's tables).
        eval_image_size: (height, width) of validation and test images (default: image_size).
        pos_radius: positives of folder: sets, metres (named sets keep their published positives).
        pitts_root: Pittsburgh root (images, queries_real/, datasets/*.mat); default $PITTSBURGH_ROOT.
        msls_root: MSLS root with the msls_val_*.npy ground truth; default $MSLS_ROOT.
        eval_batch_size: images per evaluation batch.
        synthetic: use the embedded synthetic data sets for every root not given (generated once).
        synthetic_dir: where the synthetic data sets are generated.
        synthetic_scale: default (the demo) or tiny (tests).
        seed: seed of the synthetic data and of the training order.
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
        test_sets: Sequence[str] = ("pitts30k_test", "pitts250k_test", "msls_val"),
        eval_image_size: Optional[tuple[int, int]] = None,
        pos_radius: float = 25.0,
        pitts_root: Optional[str] = None,
        msls_root: Optional[str] = None,
        eval_batch_size: int = 64,
        synthetic: bool = False,
        synthetic_dir: str = "LOGS/synthetic_data",
        synthetic_scale: Literal["default", "tiny"] = "default",
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        unknown = [s for s in (*val_sets, *test_sets) if not is_eval_set(s)]
        if unknown:
            raise ConfigError(f"unknown evaluation set(s) {unknown}; choose from {sorted(EVAL_SETS)} "
                              f"or {FOLDER_PREFIX}<root> for a set in the generic folder format")
        self.train_dataset: Optional[GSVCitiesDataset] = None
        self.val_datasets: list = []
        self.test_datasets: list = []

    def roots(self) -> dict[str, Optional[str]]:
        """Data roots: argument, else environment variable, else the synthetic data (when enabled)."""
        hp = self.hparams
        return data_roots(hp.gsv_root, hp.pitts_root, hp.msls_root, hp.synthetic, hp.synthetic_dir,
                          hp.synthetic_scale, hp.seed)

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
                raise ConfigError("GSV-Cities root not set: pass --data.gsv_root, set GSV_CITIES_ROOT, "
                                 "or use --data.synthetic true for the embedded synthetic data")
            self.train_dataset = GSVCitiesDataset(
                roots["gsv_root"], self.cities(), self.hparams.img_per_place, self.hparams.min_img_per_place,
                train_transform(self.hparams.image_size, self.hparams.rand_augment_ops))
        if stage in ("fit", "validate") and not self.val_datasets:
            self.val_datasets = self._eval_sets(self.hparams.val_sets, roots)
        if stage == "test" and not self.test_datasets:
            self.test_datasets = self._eval_sets(self.hparams.test_sets, roots)

    def _eval_sets(self, names: Sequence[str], roots: dict) -> list:
        transform = eval_transform(self.hparams.eval_image_size or self.hparams.image_size)
        return [build_eval_set(name, roots, transform, self.hparams.pos_radius) for name in names]

    def train_dataloader(self) -> DataLoader:
        """P places per batch, city by city in a new order each epoch."""
        sampler = CityShuffleSampler(self.train_dataset.city_of_place, self.hparams.shuffle_all, self.hparams.seed)
        return DataLoader(self.train_dataset, batch_size=self.hparams.batch_size, sampler=sampler,
                          num_workers=self.hparams.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.hparams.num_workers > 0)

    def _eval_loaders(self, datasets) -> list[DataLoader]:
        return [DataLoader(ds, batch_size=self.hparams.eval_batch_size, shuffle=False,
                           num_workers=self.hparams.num_workers, pin_memory=torch.cuda.is_available())
                for ds in datasets]

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per validation set, database first then queries."""
        return self._eval_loaders(self.val_datasets)

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per test set (``test_sets``), database first then queries."""
        return self._eval_loaders(self.test_datasets)
