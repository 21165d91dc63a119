"""VPRDataModule: GSV-Cities for training, named benchmarks for validation and test."""
import os
from typing import Optional, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from .eval import EVAL_SETS, FOLDER_PREFIX, build_eval_set, is_eval_set
from .gsv_cities import TRAIN_CITIES, CityShuffleSampler, GSVCitiesDataset
from .transforms import DECODE_ON, EncodedCollate, EvalTransform, TrainTransform, init_worker

# data-root setting -> environment variable used when the setting is not given
ROOT_ENV = {"gsv_root": "GSV_CITIES_ROOT", "pitts_root": "PITTSBURGH_ROOT", "msls_root": "MSLS_ROOT"}


def default_num_workers(processes_per_node: int = 1) -> int:
    """Data-loading workers per process: the CPUs this process may run on (its affinity: what SLURM or
    taskset granted), shared by the node's processes, less one core for the process itself."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, cpus // max(1, processes_per_node) - 1)


class VPRDataModule(L.LightningDataModule):
    """Batches of ``batch_size`` places x ``img_per_place`` images from GSV-Cities; evaluation sets by name.

    ``val_sets`` are names (pitts30k_val, msls_val, ...) or ``folder:<root>`` for the generic folder
    format, whose positives lie within ``pos_radius`` metres. Data roots come from the arguments, else from the environment (GSV_CITIES_ROOT, PITTSBURGH_ROOT,
    MSLS_ROOT). ``synthetic=True`` generates the embedded synthetic data sets once under
    ``synthetic_dir`` and uses them for every root not given explicitly.

    Batches hold uint8 images; the model normalises them on its device. ``decode_on='gpu'`` moves
    decoding, resizing and RandAugment to the device too (workers only read the files).
    ``num_workers`` defaults to ``default_num_workers`` for the number of processes on this node.
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
        num_workers: Optional[int] = None,
        decode_on: str = "cpu",
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
        if decode_on not in DECODE_ON:
            raise ValueError(f"unknown decode_on {decode_on!r}; choose one of {DECODE_ON}")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be >= 0 (or unset for the CPU-count default)")
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
        hp = self.hparams
        encoded = hp.decode_on == "gpu"
        if stage == "fit" and self.train_dataset is None:
            if roots["gsv_root"] is None:
                raise ValueError("GSV-Cities root not set: pass --data.gsv_root, set GSV_CITIES_ROOT, "
                                 "or use --data.synthetic true for the embedded synthetic data")
            self.train_dataset = GSVCitiesDataset(
                roots["gsv_root"], self.cities(), hp.img_per_place, hp.min_img_per_place,
                None if encoded else TrainTransform(hp.image_size, hp.rand_augment_ops), encoded=encoded)
        if not self.val_datasets:
            tf = None if encoded else EvalTransform(hp.image_size)
            self.val_datasets = [build_eval_set(name, roots, tf, hp.pos_radius) for name in hp.val_sets]
            for dataset in self.val_datasets:
                dataset.encoded = encoded

    def num_workers(self) -> int:
        """Workers per DataLoader: as configured, else ``default_num_workers`` for this node's processes."""
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        trainer = self.trainer
        processes = trainer.num_devices if trainer is not None else max(1, torch.cuda.device_count())
        return default_num_workers(processes)

    def _collate(self, rand_augment_ops: int):
        """Default collation, or for decode_on='gpu' the batch of file bytes the device decodes."""
        if self.hparams.decode_on == "gpu":
            return EncodedCollate(self.hparams.image_size, rand_augment_ops)
        return None

    def train_dataloader(self) -> DataLoader:
        """P places per batch, city by city in a new order each epoch."""
        sampler = CityShuffleSampler(self.train_dataset.city_of_place, self.hparams.shuffle_all, self.hparams.seed)
        workers = self.num_workers()
        return DataLoader(self.train_dataset, batch_size=self.hparams.batch_size, sampler=sampler,
                          num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                          collate_fn=self._collate(self.hparams.rand_augment_ops), worker_init_fn=init_worker)

    def _eval_loaders(self) -> list[DataLoader]:
        workers = self.num_workers()
        return [DataLoader(ds, batch_size=self.hparams.eval_batch_size, shuffle=False, num_workers=workers,
                           pin_memory=torch.cuda.is_available(), collate_fn=self._collate(0)) for ds in self.val_datasets]

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per validation set, database first then queries."""
        return self._eval_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        """The validation sets, for ``trainer.test``."""
        return self._eval_loaders()
