"""GSV-Cities training data (Ali-bey et al., Neurocomputing 2022): one item is a place, K images of it.

Construction is linear in the number of images (one CSV read and one directory listing per city, hash
lookups, integer sorts): about 3 s for the full 530k-image set (bench/dataset_setup.py), so every DDP
process builds its own copy.
"""
import hashlib
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from utils.errors import ConfigError, DataError, NotFoundError

from .image_io import check_image, decode_rgb, read_bytes

TRAIN_CITIES = ("Bangkok", "BuenosAires", "LosAngeles", "MexicoCity", "OSL", "Rome", "Barcelona", "Chicago",
                "Madrid", "Miami", "Phoenix", "TRT", "Boston", "Lisbon", "Medellin", "Minneapolis", "PRG",
                "WashingtonDC", "Brussels", "London", "Melbourne", "Osaka", "PRS")
COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
LAYOUT = ("<root>/Dataframes/<City>.csv (columns place_id, year, month, northdeg, city_id, lat, lon, panoid) and "
          "<root>/Images/<city_id>/<city_id>_<place_id:07d>_<year:04d>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg")
INT_COLUMNS = ("place_id", "year", "month", "northdeg")


def read_city(root: Path, city: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(place ids (N,) int64, image folders (N,) object (the rows' city_id), image file names (N,) object)
    of one city's CSV, lat/lon kept exactly as written. A missing, header-only or malformed CSV raises
    an error naming it. Repeated rows (the same image listed again) are kept once, with a note; rows that
    name the same image but differ in another column raise DataError (``check_repeated_rows``)."""
    csv = root / "Dataframes" / f"{city}.csv"
    if not csv.is_file():
        present = sorted(p.stem for p in (root / "Dataframes").glob("*.csv"))
        raise NotFoundError(f"GSV-Cities: {csv} not found (cities present: {present}). "
                                f"Set --data.cities to cities that exist. Expected layout: {LAYOUT}")
    try:
        df = pd.read_csv(csv, dtype={c: (np.int64 if c in INT_COLUMNS else str) for c in COLUMNS},
                         keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"GSV-Cities: {csv} is empty ({csv.stat().st_size} bytes, not even the header line); restore "
                        f"it or remove {city} from --data.cities. Expected layout: {LAYOUT}") from None
    except ValueError as err:
        raise DataError(f"GSV-Cities: {csv}: {', '.join(INT_COLUMNS)} must be integers ({err})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"GSV-Cities: {csv} lacks columns {missing}; expected {COLUMNS}. Expected layout: {LAYOUT}")
    if df.empty:
        raise DataError(f"GSV-Cities: {csv} has a header but no images; remove {city} from --data.cities "
                         f"or restore the file")
    folders = df["city_id"].tolist()
    # one f-string per row: linear, and lat/lon/panoid go in exactly as written in the CSV
    names = [f"{c}_{p:07d}_{y:04d}_{m:02d}_{n:03d}_{la}_{lo}_{pa}.jpg" for c, p, y, m, n, la, lo, pa in
             zip(folders, *(df[c].tolist() for c in INT_COLUMNS), df["lat"].tolist(), df["lon"].tolist(),
                 df["panoid"].tolist())]
    place_id = df["place_id"].to_numpy(np.int64)
    folders, names = np.asarray(folders, dtype=object), np.asarray(names, dtype=object)
    # an image listed twice would train twice as often: one hash pass over the names finds repeats
    repeated = pd.Index(names).duplicated()
    if repeated.any():
        check_repeated_rows(csv, df, names)
        print(f"note: GSV-Cities: {csv}: {int(repeated.sum())} duplicate row(s) (an image listed again) left out",
              file=sys.stderr)
        place_id, folders, names = place_id[~repeated], folders[~repeated], names[~repeated]
    return place_id, folders, names


def check_repeated_rows(csv: Path, df: pd.DataFrame, names: np.ndarray) -> None:
    """DataError when rows that name the same image differ in another column (which one is right is not
    ours to guess); identical rows are plain repeats."""
    shared = pd.Index(names).duplicated(keep=False)
    rows = df[shared].assign(_name=names[shared])
    distinct = rows.drop_duplicates()
    clash = distinct["_name"].duplicated(keep=False).to_numpy()
    if not clash.any():
        return
    name = distinct["_name"].to_numpy()[clash][0]
    same = rows[rows["_name"] == name].drop(columns="_name")
    differ = [c for c in same.columns if same[c].nunique() > 1]
    lines = " and ".join(str(i + 2) for i in same.index[:2])  # line 1 is the header
    raise DataError(f"GSV-Cities: {csv}: rows {lines} name the same image {name} but differ in {differ}: "
                    f"keep the right one and remove the other")


def missing_images(root: Path, folders: np.ndarray, names: np.ndarray) -> list[str]:
    """The images ``<folder>/<name>`` not under ``root/Images``: one directory listing per folder and a
    hash lookup per image (linear in the number of images)."""
    missing = []
    unique = pd.unique(folders)
    for folder in unique:
        present = set(os.listdir(root / "Images" / folder)) if (root / "Images" / folder).is_dir() else set()
        in_folder = names if len(unique) == 1 else names[folders == folder]
        missing += [f"{folder}/{n}" for n in in_folder if n not in present]
    return missing


class GSVCitiesDataset(Dataset):
    """Places of the given cities; item i = (K images of place i, (K,) place labels, skipped files).

    Images are uint8 ``(K, 3, H, W)`` tensors: each file decoded and passed through ``transform`` (uint8
    (3, h, w) -> uint8 (3, H, W), e.g. ``transforms.TrainTransform``); float conversion and normalisation
    happen on the device (``transforms.normalize_batch``). With ``encoded=True`` the item holds the K
    files' bytes instead (a list of 1-D uint8 tensors) for decoding on the device (``EncodedCollate``).
    Place labels are contiguous integers, unique across cities. Places with fewer than
    ``min_img_per_place`` images are dropped.

    Each access draws K of the place's images at random, and the transform its augmentation, from a
    generator seeded by (``seed``, epoch, place): the same epoch shows the same images whatever the number
    of DataLoader workers and whether the run was resumed (``set_epoch``; ``VPRDataModule`` calls it).
    An unreadable image stops with its path, or with ``skip_unreadable`` is replaced by another image of
    the place; a place without K readable images is left out of the step (its images are None). The third
    element, a 1-D int64 tensor, holds the indices (into ``files``) of the images skipped for this item.
    """

    def __init__(self, root: str | Path, cities: Sequence[str] = TRAIN_CITIES, img_per_place: int = 4,
                 min_img_per_place: int = 4, transform: Optional[Callable[[Tensor], Tensor]] = None,
                 encoded: bool = False, skip_unreadable: bool = False, seed: int = 0):
        root = Path(root)
        if not (root / "Dataframes").is_dir():
            raise NotFoundError(f"GSV-Cities not found: expected {root / 'Dataframes'} with one <City>.csv per "
                                    f"city. Set --data.gsv_root or the GSV_CITIES_ROOT environment variable. "
                                    f"Expected layout: {LAYOUT}")
        if min_img_per_place < img_per_place:
            raise ConfigError(f"min_img_per_place={min_img_per_place} < img_per_place={img_per_place}: every place "
                             f"must have at least img_per_place images")
        if encoded and transform is not None:
            raise ValueError("encoded items hold the files' bytes: the transform runs on the device, not here")
        twice = sorted(c for c, n in Counter(cities).items() if n > 1)
        if twice:
            raise ConfigError(f"GSV-Cities: {', '.join(twice)} is listed twice in --data.cities ({list(cities)}): its "
                              f"places would train under two labels each, every place the negative of its own copy; "
                              f"list each city once")
        keys, files, missing = [], [], []
        for i, city in enumerate(cities):
            place_id, folders, names = read_city(root, city)
            # one int64 key per (city, place), ordered by city then place: place ids repeat across cities
            key = np.int64(i) << 40 | place_id
            _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
            keep = counts[inverse] >= min_img_per_place
            if not keep.any():
                raise DataError(f"GSV-Cities: no place of {city} ({root / 'Dataframes' / f'{city}.csv'}) has "
                                 f"min_img_per_place={min_img_per_place} images (the most is {counts.max()}); "
                                 f"lower --data.min_img_per_place or remove {city} from --data.cities")
            folders, names = folders[keep], names[keep]
            missing += missing_images(root, folders, names)
            keys.append(key[keep])
            files.append(np.asarray([f"{f}/{n}" for f, n in zip(folders.tolist(), names.tolist())], dtype=object))
        if not keys:
            raise ConfigError("GSV-Cities: no cities given; set --data.cities or leave it unset for the paper's 23")
        if missing:
            images = root / "Images"
            raise NotFoundError(f"GSV-Cities: {len(missing)} image(s) listed in the CSVs are missing under "
                                    f"{images}, e.g. {[str(images / m) for m in missing[:3]]}. Expected layout: {LAYOUT}")
        key, files = np.concatenate(keys), np.concatenate(files)
        place_keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")
        self.root = root
        self.cities = tuple(cities)
        self.img_per_place = img_per_place
        self.min_img_per_place = min_img_per_place
        self.transform = transform
        self.encoded = encoded
        self.skip_unreadable = skip_unreadable
        self.seed = int(seed)
        # in shared memory: DataLoader workers (started once, persistent) see what set_epoch writes
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._set_places(files[order], counts, (place_keys >> 40).astype(np.int64))

    def _set_places(self, files: np.ndarray, counts: np.ndarray, city_of_place: np.ndarray) -> None:
        """Files grouped by place (``counts`` files per place, in place order); at least 2 places."""
        self.files = files
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.city_of_place = city_of_place
        if self.num_places < 2:
            cities = ", ".join(self.cities)
            raise DataError(f"GSV-Cities: only {self.num_places} place of {cities} has min_img_per_place="
                            f"{self.min_img_per_place} readable images: the metric loss needs at least 2 places per "
                            f"batch (the other places are the negatives) and learns nothing from one. Add cities "
                            f"(--data.cities) or lower --data.min_img_per_place")

    def without_files(self, indices: Sequence[int]) -> None:
        """Leave out the files at ``indices`` (e.g. found unreadable at setup), in place; places left with
        fewer than ``min_img_per_place`` images leave too. Labels are renumbered (still contiguous)."""
        counts = np.diff(self.offsets)
        place_of_file = np.repeat(np.arange(self.num_places), counts)
        keep = np.ones(len(self.files), dtype=bool)
        keep[np.asarray(indices, dtype=np.int64)] = False
        remaining = np.bincount(place_of_file[keep], minlength=self.num_places)
        kept_places = remaining >= self.min_img_per_place
        keep &= kept_places[place_of_file]
        self._set_places(self.files[keep], remaining[kept_places], self.city_of_place[kept_places])

    def fingerprint(self) -> dict:
        """What the training stream is drawn from, as built (after ``without_files``): the cities and, per
        city, its number of places, of images, and a SHA-256 of its image names (relative to the root) in
        place order with the images per place. Equal fingerprints: the same places, labels and files, at
        any root. Linear: one pass over the names (about 0.1 s at the real 527k images)."""
        counts = np.diff(self.offsets)
        places = np.bincount(self.city_of_place, minlength=len(self.cities))
        images = np.bincount(self.city_of_place, weights=counts, minlength=len(self.cities)).astype(np.int64)
        place_ends, file_ends = np.cumsum(places), np.cumsum(images)
        digests = []
        for c in range(len(self.cities)):
            first_place, first_file = place_ends[c] - places[c], file_ends[c] - images[c]
            digest = hashlib.sha256(counts[first_place:place_ends[c]].astype("<i8").tobytes())
            digest.update("\n".join(self.files[first_file:file_ends[c]].tolist()).encode())
            digests.append(digest.hexdigest())
        return {"cities": list(self.cities), "places": places.tolist(), "images": images.tolist(), "digests": digests}

    @property
    def num_places(self) -> int:
        """Number of places kept."""
        return len(self.offsets) - 1

    @property
    def num_images(self) -> int:
        """Number of images of the kept places."""
        return len(self.files)

    @property
    def paths(self) -> list[Path]:
        """The image files, in ``files`` order."""
        return [self.root / "Images" / f for f in self.files]

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next items are drawn for (their random draws depend on it)."""
        self._epoch[0] = int(epoch)

    def item_seed(self, place: int) -> int:
        """The seed of the random draws of ``place`` in the current epoch: a function of (seed, epoch, place)."""
        return int(np.random.SeedSequence([self.seed, int(self._epoch[0]), int(place)]).generate_state(1)[0])

    def __len__(self) -> int:
        return self.num_places

    def __getitem__(self, place: int):
        start, stop = int(self.offsets[place]), int(self.offsets[place + 1])
        labels = torch.full((self.img_per_place,), place, dtype=torch.long)
        # draws from torch's generator (the transform's RandAugment draws as torchvision's does), seeded for
        # this item and restored afterwards: with no workers the main process's random state is untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.item_seed(place))
            images, skipped = [], []
            for i in (start + torch.randperm(stop - start)).tolist():
                if len(images) == self.img_per_place:
                    break
                path = self.root / "Images" / self.files[i]
                try:
                    data = read_bytes(path)
                    if self.encoded:
                        check_image(data, path)  # decoded on the device: its size is checked here
                    images.append(data if self.encoded else decode_rgb(data, path))
                except (DataError, NotFoundError) as err:
                    if not self.skip_unreadable:
                        raise type(err)(f"{err} (GSV-Cities training image; --data.check_images true finds "
                                        f"every unreadable image before training)") from None
                    skipped.append(i)
            skipped = torch.tensor(skipped, dtype=torch.long)
            if len(images) < self.img_per_place:
                return None, labels, skipped  # too few readable images: the place sits this step out
            if self.encoded:
                return images, labels, skipped
            if self.transform is not None:
                images = [self.transform(img) for img in images]
        return torch.stack(images), labels, skipped


def collate_places(items: list) -> list:
    """DataLoader ``collate_fn`` of GSVCitiesDataset items (decoded on the CPU): [(P, K, 3, H, W) images,
    (P, K) labels, (S,) indices of the files skipped as unreadable]; places without K readable images
    (images None) are left out of the batch."""
    kept = [(images, labels) for images, labels, _ in items if images is not None]
    if not kept:
        raise DataError(f"none of the {len(items)} places of a training batch has img_per_place readable images; "
                        f"see the images listed in skipped_images.txt of the run folder")
    skipped = torch.cat([s for _, _, s in items]) if items else torch.zeros(0, dtype=torch.long)
    return [*default_collate(kept), skipped]


def fingerprint_differences(saved: dict, current: dict) -> list[str]:
    """How two ``GSVCitiesDataset.fingerprint()`` differ, in words (empty: the same training data)."""
    if saved["cities"] != current["cities"]:
        return [f"cities [{', '.join(saved['cities'])}] in the checkpoint, [{', '.join(current['cities'])}] given"]
    differences = []
    for i, city in enumerate(saved["cities"]):
        (places, images), now = (saved["places"][i], saved["images"][i]), (current["places"][i], current["images"][i])
        if (places, images) != now:
            differences.append(f"{city}: {places} places of {images} images in the checkpoint, {now[0]} of {now[1]} "
                               f"given")
        elif saved["digests"][i] != current["digests"][i]:
            differences.append(f"{city}: the same counts but other image files (or images per place)")
    return differences
