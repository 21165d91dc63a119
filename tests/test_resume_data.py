"""Odd training data are not counted twice (duplicate CSV rows, a city listed twice), and settings that cannot
train stop at setup with one line: a batch larger than the training set, a loss distance given by name."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dataloaders.datamodule import VPRDataModule
from dataloaders.gsv_cities import GSVCitiesDataset
from main import VPRModel
from utils.errors import ConfigError, DataError
from utils.losses import get_loss, get_miner

FOUR = ["Synthville", "Pixelburg", "Rendertown", "Voxelton"]


def image_name(row) -> str:
    """The image file a GSV-Cities CSV row names."""
    return (f"{row.city_id}_{int(row.place_id):07d}_{int(row.year):04d}_{int(row.month):02d}_{int(row.northdeg):03d}_"
            f"{row.lat}_{row.lon}_{row.panoid}.jpg")


# ---------------------------------------------------------------- 5. training data counted twice
def gsv_with_csv(synthetic, dest: Path, city: str, rows: pd.DataFrame) -> Path:
    """A GSV-Cities root with ``city``'s CSV replaced by ``rows`` (the images: the tiny set's, linked)."""
    (dest / "Dataframes").mkdir(parents=True)
    (dest / "Images").symlink_to(Path(synthetic["gsv_cities"]) / "Images")
    rows.to_csv(dest / "Dataframes" / f"{city}.csv", index=False)
    return dest


def test_duplicate_csv_rows_train_once_with_a_note(synthetic, tmp_path, capsys):
    original = GSVCitiesDataset(synthetic["gsv_cities"], ["Synthville"])
    rows = pd.read_csv(Path(synthetic["gsv_cities"]) / "Dataframes" / "Synthville.csv", dtype=str,
                       keep_default_na=False)
    root = gsv_with_csv(synthetic, tmp_path / "gsv", "Synthville", pd.concat([rows, rows.iloc[[3, 0, 3]]]))
    capsys.readouterr()
    dataset = GSVCitiesDataset(root, ["Synthville"])
    np.testing.assert_array_equal(dataset.files, original.files)
    np.testing.assert_array_equal(dataset.offsets, original.offsets)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: GSV-Cities: {root / 'Dataframes' / 'Synthville.csv'}: 3 duplicate row(s) (an image "
                     f"listed again) left out"]


def test_rows_that_name_one_image_but_differ_are_refused(synthetic, tmp_path):
    rows = pd.read_csv(Path(synthetic["gsv_cities"]) / "Dataframes" / "Synthville.csv", dtype=str,
                       keep_default_na=False)
    rows["source"] = "survey"
    twin = rows.iloc[[2]].assign(source="other survey")
    root = gsv_with_csv(synthetic, tmp_path / "gsv", "Synthville", pd.concat([rows, twin]))
    expected = image_name(rows.iloc[2])
    assert f"Synthville/{expected}" in set(GSVCitiesDataset(synthetic["gsv_cities"], ["Synthville"]).files)
    with pytest.raises(DataError, match=rf"Synthville.csv: rows 4 and {len(rows) + 2} name the same image {expected} "
                                        rf"but differ in \['source'\]"):
        GSVCitiesDataset(root, ["Synthville"])


def test_a_city_listed_twice_is_refused(synthetic):
    with pytest.raises(ConfigError, match=r"Pixelburg is listed twice in --data.cities"):
        GSVCitiesDataset(synthetic["gsv_cities"], ["Pixelburg", "Synthville", "Pixelburg"])


# ---------------------------------------------------------------- one-line errors before the first step
def test_batch_size_larger_than_the_training_places_is_refused_at_setup(synthetic):
    data = VPRDataModule(gsv_root=str(synthetic["gsv_cities"]), cities=FOUR[:2], batch_size=64, image_size=(32, 32),
                         num_workers=0, val_sets=[])
    places = GSVCitiesDataset(synthetic["gsv_cities"], FOUR[:2]).num_places
    with pytest.raises(ConfigError, match=rf"batch_size=64 places per step, but the training set has {places} places "
                                          rf"\(Synthville \d+, Pixelburg \d+; (.|\n)*"
                                          rf"--data.batch_size {places} or less"):
        data.setup("fit")


def test_a_distance_given_by_name_builds_the_loss_and_the_miner():
    from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
    assert type(get_loss("MultiSimilarityLoss", distance="CosineSimilarity").distance) is CosineSimilarity
    miner = get_miner("MultiSimilarityMiner", distance={"class_path": "LpDistance", "init_args": {"power": 2}})
    assert type(miner.distance) is LpDistance and miner.distance.power == 2
    dotted = get_loss("ContrastiveLoss", distance={"class_path": "pytorch_metric_learning.distances.LpDistance"})
    assert type(dotted.distance) is LpDistance
    with pytest.raises(ConfigError, match=r"distance 'cosine'(.|\n)*one of CosineSimilarity, DotProductSimilarity, "
                                          r"LpDistance"):
        get_loss("MultiSimilarityLoss", distance="cosine")
    with pytest.raises(ConfigError, match=r"LpDistance does not take \['q'\]"):
        get_miner("MultiSimilarityMiner", distance={"class_path": "LpDistance", "init_args": {"q": 1}})
    # a training step with it: a finite loss, not a TypeError at step 1
    model = VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32),
                     loss_config={"distance": "CosineSimilarity"}, miner_config={"distance": "CosineSimilarity"})
    descriptors = torch.nn.functional.normalize(torch.randn(8, model.descriptor_dim), dim=1)
    loss, _ = model.metric_loss(descriptors, torch.arange(4).repeat_interleave(2))
    assert torch.isfinite(loss)
