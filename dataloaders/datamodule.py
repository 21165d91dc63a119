"""VPRDataModule: GSV-Cities for training, named benchmarks for validation and test."""
import os
from typing import Literal, Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from utils.errors import ConfigError

from .eval import BENCHMARKS, FOLDER_PREFIX, build_eval_set, expand_benchmarks, is_eval_set
from .gsv_cities import TRAIN_CITIES, GSVCitiesDataset, collate_places, fingerprint_differences
from .roots import roots_of
from .samplers import CityShuffleSampler, ResumableLoader
from .transforms import DECODE_ON, EncodedCollate, EvalTransform, TrainTransform, init_worker
from .unreadable import find_unreadable, unreadable_error


def default_num_workers(processes_per_node: int = 1) -> int:
    """Data-loading workers per process: the CPUs this process may run on (its affinity: what SLURM or
    taskset granted), shared by the node's processes, less one core for the process itself."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, cpus // max(1, processes_per_node) - 1)


def check_recipe(batch_size: int, img_per_place: int, min_img_per_place: int, image_size: Sequence[int],
                 eval_image_size: Optional[Sequence[int]], eval_batch_size: int, pos_radius: float) -> None:
    """ConfigError for data settings that cannot train: the metric loss learns from pairs of images of one
    place (positives) against images of other places in the batch (negatives), so a batch needs at least 2
    places of at least 2 images (batch_size 1 trains at loss 0 for ever)."""
    problems = []
    if batch_size < 2:
        problems.append(f"batch_size={batch_size}: a batch needs at least 2 places, the other places' images being "
                        f"the negatives (with 1 the loss is 0 and nothing is learnt); the paper uses 120")
    if img_per_place < 2:
        problems.append(f"img_per_place={img_per_place}: a place needs at least 2 images to give a positive pair; "
                        f"the paper uses 4")
    if min_img_per_place < img_per_place:
        problems.append(f"min_img_per_place={min_img_per_place} < img_per_place={img_per_place}: every place must "
                        f"have at least img_per_place images")
    for name, size in (("image_size", image_size), ("eval_image_size", eval_image_size)):
        if size is not None and (len(size) != 2 or min(size) <= 0):
            problems.append(f"{name}={list(size)}: (height, width) with positive sizes, e.g. [320, 320]")
    if eval_batch_size < 1:
        problems.append(f"eval_batch_size={eval_batch_size} must be at least 1")
    if not pos_radius > 0:
        problems.append(f"pos_radius={pos_radius} must be positive (metres)")
    if problems:
        raise ConfigError("data settings: " + "; ".join(problems) + " (set them with --data.<name>)")


def check_batch_fits(batch_size: int, dataset: GSVCitiesDataset) -> None:
    """ConfigError when a step's ``batch_size`` places exceed the training set's: every epoch is cut into
    global batches of batch_size places (``CityShuffleSampler``), and with fewer places there is not one."""
    if dataset.num_places >= batch_size:
        return
    per_city = np.bincount(dataset.city_of_place, minlength=len(dataset.cities))
    cities = ", ".join(f"{city} {n}" for city, n in zip(dataset.cities, per_city.tolist()))
    raise ConfigError(f"data.batch_size={batch_size} places per step, but the training set has {dataset.num_places} "
                      f"places ({cities}; places with at least min_img_per_place={dataset.min_img_per_place} images): "
                      f"lower it (--data.batch_size {dataset.num_places} or less) or add cities (--data.cities)")


class VPRDataModule(L.LightningDataModule):
    """GSV-Cities for training (batches of places x images), named benchmarks for validation and test.

    Every checkpoint stores the fingerprint of the training data (``state_dict``): a fit resumed from it on
    other cities, places or images stops with a ConfigError (``load_state_dict``).

    Args:
        gsv_root: GSV-Cities root (Dataframes/, Images/); default $GSV_CITIES_ROOT.
        cities: training cities (default: the paper's 23, or the synthetic ones).
        batch_size: places per optimizer step (the paper: 120).
        img_per_place: images drawn per place (K, the paper: 4).
        min_img_per_place: places with fewer images are left out.
        shuffle_all: mix cities in a batch instead of the paper's city-by-city order.
        image_size: (height, width) of training images.
        rand_augment_ops: RandAugment operations per training image (0: none).
        num_workers: data-loading processes per DataLoader (default: this process's share of the CPUs,
            less one; see ``default_num_workers``).
        decode_on: cpu (workers decode, resize and augment; batches hold uint8 images the model normalises
            on its device) or gpu (workers only read the files; the device decodes, resizes and augments).
        val_sets: sets evaluated during training: any registered benchmark with labels (pitts30k_val,
            msls_val, nordland, tokyo247, ...: ``dataloaders.eval.BENCHMARKS``), or folder:<root> (the generic
            folder format).
        test_sets: sets evaluated by ``main.py test`` (the paper's tables); also suite:<paper> (suite:mixvpr ...).
        eval_image_size: (height, width) of validation and test images (default: image_size).
        pos_radius: positives of folder: sets, metres (named benchmarks keep their published positives).
        check_counts: check each named benchmark's database and query counts against the published ones
            (a mismatch stops the run naming the likely cause); false makes it a note, and the results say
            the counts were not checked.
        benchmarks_root: a folder holding the benchmarks in VPR-datasets-downloader's layout (tokyo247/,
            st_lucia/, nordland/, svox/, ...: each benchmark's sub-folders in the registry), for every root
            below that is not set; default $VPR_BENCHMARKS_ROOT.
        pitts_root: Pittsburgh root (images, queries_real/, datasets/*.mat); default $PITTSBURGH_ROOT.
        msls_root: MSLS root with the msls_val_*.npy ground truth (and msls_test_*.npy, train_val/ CSVs);
            default $MSLS_ROOT.
        nordland_root: VPR-Bench's Nordland (ref/, query/, Nordland_*.npy); default $NORDLAND_ROOT.
        nordland_10frames_root: VPR-datasets-downloader's Nordland; default $NORDLAND_10FRAMES_ROOT.
        sped_root: SPED (VPR-Bench's ref/, query/, SPED_*.npy, or the downloader's); default $SPED_ROOT.
        tokyo247_root: Tokyo 24/7 (folder format); default $TOKYO247_ROOT.
        st_lucia_root: St Lucia (folder format); default $ST_LUCIA_ROOT.
        amstertime_root: AmsterTime (folder format); default $AMSTERTIME_ROOT.
        eynsham_root: Eynsham (folder format); default $EYNSHAM_ROOT.
        svox_root: SVOX (images/test/gallery, queries_<condition>); default $SVOX_ROOT.
        sf_xl_root: SF-XL (processed/test/database, queries_v1, queries_v2); default $SF_XL_ROOT.
        eval_batch_size: images per evaluation batch.
        synthetic: use the embedded synthetic data sets for every root not given (generated once).
        synthetic_dir: where the synthetic data sets are generated.
        synthetic_scale: default (the demo) or tiny (tests).
        seed: seed of the synthetic data, of the training order and of the images and augmentations drawn
            per place (a function of (seed, epoch, place): resumed runs draw what uninterrupted ones draw).
        skip_unreadable: leave unreadable images out instead of stopping: a training image is replaced by
            another image of its place (a place without img_per_place readable images sits the step out),
            an evaluation image leaves its set as in eval.py (a database image leaves the database, a
            query the evaluation). Each is listed once in skipped_images.txt of the run folder and counted
            in the logged metric skipped_images.
        check_images: before training, decode every training and evaluation image (in num_workers
            processes, with a progress bar): unreadable ones stop the run at once, or with
            skip_unreadable are left out from the start.
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
        decode_on: Literal["cpu", "gpu"] = "cpu",
        val_sets: Sequence[str] = ("pitts30k_val",),
        test_sets: Sequence[str] = ("pitts30k_test", "pitts250k_test", "msls_val"),
        eval_image_size: Optional[tuple[int, int]] = None,
        pos_radius: float = 25.0,
        check_counts: bool = True,
        benchmarks_root: Optional[str] = None,
        pitts_root: Optional[str] = None,
        msls_root: Optional[str] = None,
        nordland_root: Optional[str] = None,
        nordland_10frames_root: Optional[str] = None,
        sped_root: Optional[str] = None,
        tokyo247_root: Optional[str] = None,
        st_lucia_root: Optional[str] = None,
        amstertime_root: Optional[str] = None,
        eynsham_root: Optional[str] = None,
        svox_root: Optional[str] = None,
        sf_xl_root: Optional[str] = None,
        eval_batch_size: int = 64,
        synthetic: bool = False,
        synthetic_dir: str = "LOGS/synthetic_data",
        synthetic_scale: Literal["default", "tiny"] = "default",
        seed: int = 0,
        skip_unreadable: bool = False,
        check_images: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        if decode_on not in DECODE_ON:
            raise ConfigError(f"unknown decode_on {decode_on!r}; choose one of {DECODE_ON}")
        if num_workers is not None and num_workers < 0:
            raise ConfigError(f"num_workers={num_workers} must be >= 0 (or unset for the CPU-count default)")
        check_recipe(batch_size, img_per_place, min_img_per_place, image_size, eval_image_size, eval_batch_size,
                     pos_radius)
        if skip_unreadable and decode_on == "gpu" and not check_images:
            raise ConfigError("skip_unreadable with decode_on=gpu: images decoded on the device cannot be left out "
                              "one by one; also set --data.check_images true (unreadable images are then left out "
                              "before training), or use --data.decode_on cpu")
        # suite:<paper> -> its benchmarks
        self.test_set_names = test_sets = expand_benchmarks(test_sets)[0]
        unknown = [s for s in (*val_sets, *test_sets) if not is_eval_set(s)]
        if unknown:
            raise ConfigError(f"unknown evaluation set(s) {unknown}; choose from {sorted(BENCHMARKS)} "
                              f"or {FOLDER_PREFIX}<root> for a set in the generic folder format")
        unlabelled = [s for s in (*val_sets, *test_sets) if s in BENCHMARKS and BENCHMARKS[s].scoring != "recall"]
        if unlabelled:
            raise ConfigError(f"{unlabelled} have no public labels, so training cannot score them: evaluate them "
                              f"with eval.py, which writes the prediction file their server scores")
        self.train_dataset: Optional[GSVCitiesDataset] = None
        self.val_datasets: list = []
        self.test_datasets: list = []
        # images left out at setup (check_images with skip_unreadable), by data set: SkippedImages lists them
        self.skipped_at_setup: dict[str, list[str]] = {}

    def roots(self) -> dict[str, Optional[str]]:
        """Data roots: argument, else environment variable, else the synthetic data (when enabled)."""
        return roots_of(self.hparams)

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
                raise ConfigError("GSV-Cities root not set: pass --data.gsv_root, set GSV_CITIES_ROOT, "
                                 "or use --data.synthetic true for the embedded synthetic data")
            self.train_dataset = GSVCitiesDataset(
                roots["gsv_root"], self.cities(), hp.img_per_place, hp.min_img_per_place,
                None if encoded else TrainTransform(hp.image_size, hp.rand_augment_ops), encoded=encoded,
                skip_unreadable=hp.skip_unreadable, seed=hp.seed)
            if hp.check_images:
                paths = self.train_dataset.paths
                bad = find_unreadable(paths, self.num_workers(), "checking GSV-Cities images")
                if len(bad):
                    if not hp.skip_unreadable:
                        raise unreadable_error("GSV-Cities", paths, bad)
                    self.skipped_at_setup["gsv_cities"] = [str(paths[i]) for i in bad]
                    self.train_dataset.without_files(bad)
            check_batch_fits(hp.batch_size, self.train_dataset)
        if stage in ("fit", "validate") and not self.val_datasets:
            self.val_datasets = self._eval_sets(hp.val_sets, roots)
        if stage == "test" and not self.test_datasets:
            self.test_datasets = self._eval_sets(self.test_set_names, roots)

    def state_dict(self) -> dict:
        """Saved in every checkpoint: the fingerprint of the training data (``GSVCitiesDataset.fingerprint``)."""
        return {"training_data": self.train_dataset.fingerprint()} if self.train_dataset is not None else {}

    def load_state_dict(self, state: dict) -> None:
        """A resumed fit continues the checkpoint's training stream: training data that differ from the
        fingerprint it saved (other cities, places or images; a moved copy is the same) are a ConfigError."""
        trainer = self.trainer
        saved = state.get("training_data")
        if saved is None or self.train_dataset is None or trainer is None or trainer.state.fn != "fit":
            return
        differences = fingerprint_differences(saved, self.train_dataset.fingerprint())
        if differences:
            raise ConfigError(
                f"--ckpt_path {trainer.ckpt_path}: the training data differ from the checkpoint's: "
                + "; ".join(differences) + ". A resumed run continues the checkpoint's training stream: give the data "
                "it trained on (the same cities; a copy at another --data.gsv_root is fine), or start a new run from "
                "its weights with --model.init_from <checkpoint> to train on these.")

    @property
    def eval_image_size(self) -> tuple[int, int]:
        """(height, width) of validation and test images."""
        return tuple(self.hparams.eval_image_size or self.hparams.image_size)

    def _eval_sets(self, names: Sequence[str], roots: dict) -> list:
        hp = self.hparams
        encoded = hp.decode_on == "gpu"
        transform = None if encoded else EvalTransform(self.eval_image_size)
        datasets = [build_eval_set(name, roots, transform, hp.pos_radius, hp.check_counts) for name in names]
        for i, dataset in enumerate(datasets):
            dataset.encoded = encoded
            # with skip_unreadable, an unreadable image is a zero image marked unreadable (decoded in the workers)
            dataset.skip_unreadable = hp.skip_unreadable and not encoded
            dataset.image_size = self.eval_image_size
            if hp.check_images:
                bad = find_unreadable(dataset.images, self.num_workers(), f"checking {dataset.name} images")
                if len(bad):
                    if not hp.skip_unreadable:
                        raise unreadable_error(dataset.name, dataset.images, bad)
                    self.skipped_at_setup[dataset.name] = [dataset.images[j] for j in bad]
                    datasets[i] = dataset.without(bad)
        return datasets

    def num_workers(self) -> int:
        """Workers per DataLoader: as configured, else ``default_num_workers`` for this node's processes."""
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        trainer = self.trainer
        processes = trainer.num_devices if trainer is not None else max(1, torch.cuda.device_count())
        return default_num_workers(processes)

    def _collate(self, image_size, rand_augment_ops: int, training: bool = False):
        """Default collation (training: ``collate_places``), or for decode_on='gpu' the batch of file bytes
        the device decodes."""
        if self.hparams.decode_on == "gpu":
            return EncodedCollate(image_size, rand_augment_ops)
        return collate_places if training else None

    def train_dataloader(self) -> DataLoader:
        """``batch_size`` places per optimizer step over all processes, city by city in a new order each
        epoch; under DDP each process loads its ``batch_size / world_size`` slice of every step's places."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        hp = self.hparams
        # the epoch about to run: restored from a checkpoint by now (trainer.current_epoch catches up only later)
        epoch = trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0
        sampler = CityShuffleSampler(self.train_dataset.city_of_place, hp.shuffle_all, hp.seed,
                                     batch_size=hp.batch_size, num_replicas=world, rank=rank, epoch=epoch,
                                     on_set_epoch=self.train_dataset.set_epoch)
        workers = self.num_workers()
        return ResumableLoader(self.train_dataset, batch_size=hp.batch_size // world, sampler=sampler,
                               num_workers=workers, pin_memory=torch.cuda.is_available(),
                               persistent_workers=workers > 0, worker_init_fn=init_worker,
                               collate_fn=self._collate(hp.image_size, hp.rand_augment_ops, True),
                               batches_done=self._batches_done)

    def _batches_done(self) -> int:
        """Training batches of the current epoch done so far (what a checkpoint taken now has trained)."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _eval_loaders(self, datasets) -> list[DataLoader]:
        workers = self.num_workers()
        return [DataLoader(ds, batch_size=self.hparams.eval_batch_size, shuffle=False, num_workers=workers,
                           pin_memory=torch.cuda.is_available(), worker_init_fn=init_worker,
                           collate_fn=self._collate(self.eval_image_size, 0))
                for ds in datasets]

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per validation set, database first then queries."""
        return self._eval_loaders(self.val_datasets)

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per test set (``test_sets``), database first then queries."""
        return self._eval_loaders(self.test_datasets)
