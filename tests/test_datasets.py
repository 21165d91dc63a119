"""Data sets parsed from generated files in the real formats, and the errors for bad input."""
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.io import loadmat

from dataloaders.eval import build_eval_set
from dataloaders.eval.base import positives_within
from dataloaders.eval.pittsburgh import read_db_struct
from dataloaders.gsv_cities import GSVCitiesDataset
from dataloaders.samplers import CityShuffleSampler
from dataloaders.synthetic import SYNTHETIC_CITIES
from dataloaders.transforms import EvalTransform, TrainTransform
from utils.errors import DataError


def test_gsv_cities_places_are_k_images_with_labels_unique_across_cities(synthetic):
    ds = GSVCitiesDataset(synthetic["gsv_cities"], SYNTHETIC_CITIES, img_per_place=4, min_img_per_place=4,
                          transform=TrainTransform((32, 32)))
    frames = [pd.read_csv(synthetic["gsv_cities"] / "Dataframes" / f"{c}.csv") for c in SYNTHETIC_CITIES]
    counts = [f.groupby("place_id").size() for f in frames]
    assert ds.num_places == sum(int((c >= 4).sum()) for c in counts)
    assert ds.num_images == sum(int(c[c >= 4].sum()) for c in counts)
    images, labels, skipped = ds[ds.num_places - 1]
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8 and labels.tolist() == [ds.num_places - 1] * 4
    assert skipped.numel() == 0
    # the last city's places carry labels after every other city's
    assert ds.city_of_place[-1] == len(SYNTHETIC_CITIES) - 1 and np.all(np.diff(ds.city_of_place) >= 0)


def test_gsv_cities_file_names_are_rebuilt_from_the_csv_as_written(synthetic):
    ds = GSVCitiesDataset(synthetic["gsv_cities"], SYNTHETIC_CITIES[:1], 4, 4)
    csv = pd.read_csv(synthetic["gsv_cities"] / "Dataframes" / f"{SYNTHETIC_CITIES[0]}.csv", dtype=str)
    row = csv.iloc[0]
    expected = (f"{row.city_id}/{row.city_id}_{int(row.place_id):07d}_{int(row.year):04d}_{int(row.month):02d}_"
                f"{int(row.northdeg):03d}_{row.lat}_{row.lon}_{row.panoid}.jpg")
    assert expected in set(ds.files)


def test_min_img_per_place_drops_small_places(synthetic):
    few = GSVCitiesDataset(synthetic["gsv_cities"], SYNTHETIC_CITIES, 4, min_img_per_place=4)
    many = GSVCitiesDataset(synthetic["gsv_cities"], SYNTHETIC_CITIES, 4, min_img_per_place=6)
    assert many.num_places < few.num_places
    assert np.diff(many.offsets).min() >= 6


def test_city_shuffle_keeps_cities_together_and_redraws_each_epoch():
    city_of_place = np.repeat([0, 1, 2], 20)
    sampler = CityShuffleSampler(city_of_place, seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(60)) and first != second
    assert np.all(np.diff(city_of_place[first]) >= 0)  # city by city
    sampler.set_epoch(0)
    assert list(sampler) == first  # the order is a function of (seed, epoch)


@pytest.mark.parametrize("name", ["pitts30k_val", "pitts30k_test", "pitts250k_val", "pitts250k_test"])
def test_pittsburgh_sets_follow_the_mat_file(synthetic, name):
    ds = build_eval_set(name, {"pitts_root": synthetic["pitts"]}, EvalTransform((32, 32)))
    struct = loadmat(str(synthetic["pitts"] / "datasets" / f"{name}.mat"))["dbStruct"][0, 0]
    assert ds.num_references == struct["utmDb"].shape[1] and ds.num_queries == struct["utmQ"].shape[1]
    assert ds.images[0] == str(synthetic["pitts"] / struct["dbImageFns"][0, 0][0])
    assert ds.images[ds.num_references] == str(synthetic["pitts"] / "queries_real" / struct["qImageFns"][0, 0][0])
    # positives: database within posDistThr = 25 m, by brute force
    dist = np.linalg.norm(struct["utmQ"].T[:, None] - struct["utmDb"].T[None], axis=-1)
    for q, gt in enumerate(ds.ground_truth):
        assert sorted(gt.tolist()) == np.flatnonzero(dist[q] <= 25).tolist()
    img, index, readable = ds[len(ds) - 1]
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and index == len(ds) - 1 and readable
    # the coordinates of every image (for distances in the retrieval pictures): database then queries
    np.testing.assert_allclose(ds.utm, np.concatenate([struct["utmDb"].T, struct["utmQ"].T]))


def test_msls_val_keeps_only_queries_with_positives(synthetic):
    root = synthetic["msls"]
    ds = build_eval_set("msls_val", {"msls_root": root})
    q_images, q_idx = np.load(root / "msls_val_qImages.npy"), np.load(root / "msls_val_qIdx.npy")
    assert ds.num_queries == len(q_idx) < len(q_images)
    assert ds.num_references == len(np.load(root / "msls_val_dbImages.npy"))
    assert ds.query_paths[0] == str(root / q_images[q_idx[0]])
    assert all(len(g) > 0 for g in ds.ground_truth)


def test_positives_within_radius_is_inclusive_and_nearest_first():
    db = np.array([[0.0, 0.0], [10.0, 0.0], [25.0, 0.0], [26.0, 0.0]])
    gt = positives_within(db, np.array([[0.0, 0.0], [100.0, 0.0]]), 25.0)
    assert gt[0].tolist() == [0, 1, 2] and gt[1].tolist() == []
    # queries with as many positives each stay one array per query
    gt = positives_within(db, np.array([[24.0, 0.0], [1.0, 0.0]]), 2.5)
    assert gt.dtype == object and [g.tolist() for g in gt] == [[2, 3], [0]]


def test_positives_within_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    db, queries = rng.uniform(0, 300, (500, 2)), rng.uniform(0, 300, (80, 2))
    gt = positives_within(db, queries, 25.0)
    distances = np.linalg.norm(queries[:, None] - db[None], axis=-1)
    for q, positives in enumerate(gt):
        expected = np.flatnonzero(distances[q] <= 25.0)
        assert positives.tolist() == expected[np.argsort(distances[q][expected], kind="stable")].tolist()


def test_missing_roots_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"GSV-Cities not found: expected .*Dataframes.*GSV_CITIES_ROOT"):
        GSVCitiesDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"pitts30k_test: ground truth not found.*PITTSBURGH_ROOT"):
        build_eval_set("pitts30k_test", {"pitts_root": tmp_path})
    with pytest.raises(FileNotFoundError, match=r"msls_val_dbImages.npy.*MSLS_ROOT"):
        build_eval_set("msls_val", {"msls_root": tmp_path})
    with pytest.raises(ValueError, match=r"unknown evaluation set 'pitts30k'; choose one of"):
        build_eval_set("pitts30k", {})


def test_wrong_layouts_are_reported(synthetic, tmp_path):
    gsv = tmp_path / "gsv"
    shutil.copytree(synthetic["gsv_cities"], gsv)
    with pytest.raises(FileNotFoundError, match=r"Atlantis.csv not found \(cities present: \["):
        GSVCitiesDataset(gsv, ["Atlantis"])
    city = SYNTHETIC_CITIES[0]
    victim = sorted((gsv / "Images" / city).iterdir())[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 image\(s\) listed in the CSVs are missing.*{re.escape(victim.name)}"):
        GSVCitiesDataset(gsv, [city])
    csv = gsv / "Dataframes" / f"{city}.csv"
    pd.read_csv(csv).drop(columns=["panoid"]).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"lacks columns \['panoid'\]"):
        GSVCitiesDataset(gsv, [city])
    pitts = tmp_path / "pitts"
    shutil.copytree(synthetic["pitts"], pitts)
    next((pitts / "queries_real").rglob("*.jpg")).unlink()
    with pytest.raises(FileNotFoundError, match=r"pitts30k_val: 1 image\(s\) missing"):
        build_eval_set("pitts30k_val", {"pitts_root": pitts})


def test_corrupt_image_names_its_path(synthetic, tmp_path):
    pitts = tmp_path / "pitts"
    shutil.copytree(synthetic["pitts"], pitts)
    ds = build_eval_set("pitts30k_test", {"pitts_root": pitts}, EvalTransform((32, 32)))
    with open(ds.images[0], "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(DataError, match=rf"cannot read image {ds.images[0]}"):
        ds[0]


def test_pittsburgh_mat_with_wrong_fields_is_rejected(tmp_path):
    from scipy.io import savemat
    savemat(str(tmp_path / "bad.mat"), {"dbStruct": {"whichSet": "val", "dbImageFns": np.array(["a"], dtype=object)}})
    with pytest.raises(ValueError, match="lacks fields"):
        read_db_struct(tmp_path / "bad.mat")


def test_eval_items_carry_their_index_for_distributed_gathering(synthetic):
    ds = build_eval_set("pitts30k_test", {"pitts_root": synthetic["pitts"]}, EvalTransform((32, 32)))
    batch = torch.utils.data.default_collate([ds[i] for i in (3, 5)])
    assert batch[1].tolist() == [3, 5]


def test_empty_city_and_city_without_qualifying_place_are_errors(synthetic, tmp_path):
    gsv = tmp_path / "gsv"
    shutil.copytree(synthetic["gsv_cities"], gsv)
    first, second = SYNTHETIC_CITIES[:2]
    csv = gsv / "Dataframes" / f"{first}.csv"
    pd.read_csv(csv).iloc[:0].to_csv(csv, index=False)  # header only
    with pytest.raises(ValueError, match=rf"{re.escape(str(csv))} has a header but no images"):
        GSVCitiesDataset(gsv, [second, first])
    with pytest.raises(ValueError, match=rf"no place of {second} .* has min_img_per_place=99 images"):
        GSVCitiesDataset(gsv, [second], img_per_place=4, min_img_per_place=99)
    csv = gsv / "Dataframes" / f"{second}.csv"
    pd.read_csv(csv, dtype=str).assign(year="20x0").to_csv(csv, index=False)
    with pytest.raises(ValueError, match=rf"{re.escape(str(csv))}: place_id, year, month, northdeg must be integers"):
        GSVCitiesDataset(gsv, [second])


def test_missing_images_of_several_cities_are_counted_together(synthetic, tmp_path):
    gsv = tmp_path / "gsv"
    shutil.copytree(synthetic["gsv_cities"], gsv)
    ds = GSVCitiesDataset(gsv, SYNTHETIC_CITIES[:2])
    for city in SYNTHETIC_CITIES[:2]:
        (gsv / "Images" / next(f for f in ds.files if f.startswith(city + "/"))).unlink()
    with pytest.raises(FileNotFoundError, match=r"2 image\(s\) listed in the CSVs are missing"):
        GSVCitiesDataset(gsv, SYNTHETIC_CITIES[:2])
