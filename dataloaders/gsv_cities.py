"""GSV-Cities training data (Ali-bey et al., Neurocomputing 2022): one item is a place, K images of it."""
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .image_io import load_image
from .samplers import CityShuffleSampler  # noqa: F401  (re-exported: its former home)

TRAIN_CITIES = ("Bangkok", "BuenosAires", "LosAngeles", "MexicoCity", "OSL", "Rome", "Barcelona", "Chicago",
                "Madrid", "Miami", "Phoenix", "TRT", "Boston", "Lisbon", "Medellin", "Minneapolis", "PRG",
                "WashingtonDC", "Brussels", "London", "Melbourne", "Osaka", "PRS")
COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
LAYOUT = ("<root>/Dataframes/<City>.csv (columns place_id, year, month, northdeg, city_id, lat, lon, panoid) and "
          "<root>/Images/<city_id>/<city_id>_<place_id:07d>_<year:04d>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg")


def read_city(root: Path, city: str) -> pd.DataFrame:
    """One city's dataframe with its image file names, lat/lon kept exactly as written."""
    csv = root / "Dataframes" / f"{city}.csv"
    if not csv.is_file():
        present = sorted(p.stem for p in (root / "Dataframes").glob("*.csv"))
        raise FileNotFoundError(f"GSV-Cities: {csv} not found (cities present: {present}). "
                                f"Set --data.cities to cities that exist. Expected layout: {LAYOUT}")
    df = pd.read_csv(csv, dtype={"lat": str, "lon": str, "panoid": str, "city_id": str})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"GSV-Cities: {csv} lacks columns {missing}; expected {COLUMNS}")
    z = lambda col, width: df[col].astype(np.int64).astype(str).str.zfill(width)
    df["file"] = (df["city_id"] + "/" + df["city_id"] + "_" + z("place_id", 7) + "_" + z("year", 4) + "_"
                  + z("month", 2) + "_" + z("northdeg", 3) + "_" + df["lat"] + "_" + df["lon"] + "_"
                  + df["panoid"] + ".jpg")
    return df


def check_images(root: Path, files: np.ndarray) -> None:
    """Raise naming the missing images; one directory listing per city, not one stat per image."""
    images = root / "Images"
    present = []
    for city_dir in {f.split("/", 1)[0] for f in files}:
        folder = images / city_dir
        present += [f"{city_dir}/{n}" for n in os.listdir(folder)] if folder.is_dir() else []
    missing = files[~np.isin(files, np.asarray(present, dtype=object))]
    if len(missing):
        raise FileNotFoundError(f"GSV-Cities: {len(missing)} image(s) listed in the CSVs are missing under {images}, "
                                f"e.g. {[str(images / m) for m in missing[:3]]}. Expected layout: {LAYOUT}")


class GSVCitiesDataset(Dataset):
    """Places of the given cities; item i = (K images of place i as (K, 3, H, W), (K,) place labels).

    Place labels are contiguous integers, unique across cities. Places with fewer than
    ``min_img_per_place`` images are dropped. Each access draws K of the place's images at random.
    """

    def __init__(self, root: str | Path, cities: Sequence[str] = TRAIN_CITIES, img_per_place: int = 4,
                 min_img_per_place: int = 4, transform: Optional[Callable] = None):
        root = Path(root)
        if not (root / "Dataframes").is_dir():
            raise FileNotFoundError(f"GSV-Cities not found: expected {root / 'Dataframes'} with one <City>.csv per "
                                    f"city. Set --data.gsv_root or the GSV_CITIES_ROOT environment variable. "
                                    f"Expected layout: {LAYOUT}")
        if min_img_per_place < img_per_place:
            raise ValueError(f"min_img_per_place={min_img_per_place} < img_per_place={img_per_place}: every place "
                             f"must have at least img_per_place images")
        frames = [read_city(root, c).assign(city_index=i) for i, c in enumerate(cities)]
        df = pd.concat(frames, ignore_index=True)
        # one key per (city, place): place ids repeat across cities
        key = df["city_index"].to_numpy(np.int64) * (1 << 40) + df["place_id"].to_numpy(np.int64)
        uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        keep = counts[inverse] >= min_img_per_place
        files = df["file"].to_numpy(dtype=object)[keep]
        check_images(root, files)
        key, inverse = key[keep], np.unique(key[keep], return_inverse=True)[1]
        order = np.argsort(inverse, kind="stable")
        self.root = root
        self.cities = tuple(cities)
        self.files = files[order]
        counts = np.bincount(inverse)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.city_of_place = (np.unique(key) >> 40).astype(np.int64)
        self.img_per_place = img_per_place
        self.transform = transform

    @property
    def num_places(self) -> int:
        """Number of places kept."""
        return len(self.offsets) - 1

    @property
    def num_images(self) -> int:
        """Number of images of the kept places."""
        return len(self.files)

    def __len__(self) -> int:
        return self.num_places

    def __getitem__(self, place: int):
        start, stop = self.offsets[place], self.offsets[place + 1]
        chosen = start + torch.randperm(int(stop - start))[: self.img_per_place].numpy()
        images = [load_image(self.root / "Images" / self.files[i]) for i in chosen]
        if self.transform is not None:
            images = [self.transform(img) for img in images]
        return torch.stack(images), torch.full((self.img_per_place,), place, dtype=torch.long)
