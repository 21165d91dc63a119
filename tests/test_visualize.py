"""Retrieval pictures frame positives green and the rest red; recall curves are written as PNG."""
import csv

import numpy as np
import pytest
from PIL import Image

from dataloaders.eval import EvalDataset
from utils.visualize import (BORDER, GREEN, QUERY, RED, UNKNOWN, plot_recall_curves, retrieval_figure,
                             save_retrievals, tile_origin)


@pytest.fixture
def images(tmp_path):
    """Six solid-colour JPEGs: a query q.jpg and database images d0..d4.jpg."""
    paths = {}
    for name, value in (("q", 30), ("d0", 60), ("d1", 90), ("d2", 120), ("d3", 150), ("d4", 180)):
        paths[name] = tmp_path / f"{name}.jpg"
        Image.new("RGB", (40, 30), (value, value, value)).save(paths[name])
    return paths


def frame_colour(picture: Image.Image, position: int) -> np.ndarray:
    """The colour in the middle of the top frame edge of tile ``position``."""
    x, y = tile_origin(position)
    return np.asarray(picture.convert("RGB"), dtype=int)[y + BORDER // 2, x + 40]


def test_frames_are_green_for_positives_red_otherwise_and_query_framed_apart(images):
    picture = retrieval_figure(images["q"], [images["d0"], images["d1"], images["d2"]], [True, False, True])
    assert tuple(frame_colour(picture, 0)) == QUERY
    assert [tuple(frame_colour(picture, j)) for j in (1, 2, 3)] == [GREEN, RED, GREEN]
    # the image sits inside its frame
    x, y = tile_origin(2)
    assert tuple(np.asarray(picture)[y + BORDER + 5, x + BORDER + 5]) == (90, 90, 90)


def test_frames_without_ground_truth_are_neutral(images):
    picture = retrieval_figure(images["q"], [images["d0"], images["d1"]], None)
    assert [tuple(frame_colour(picture, j)) for j in (1, 2)] == [UNKNOWN, UNKNOWN]


def test_saved_retrievals_follow_the_ground_truth_and_list_paths(images, tmp_path):
    db = [str(images[f"d{i}"]) for i in range(5)]
    dataset = EvalDataset("toy", db, [str(images["q"])] * 3, [np.array([1, 2]), np.array([4]), np.array([], dtype=np.int64)])
    predictions = np.array([[1, 0, 2], [0, 4, 3], [2, 3, 0]])
    distances = np.tile(np.array([0.1, 0.2, 0.3], dtype=np.float32), (3, 1))
    csv_path, pictures = save_retrievals(dataset, predictions, distances, tmp_path / "out", num_pictures=-1)
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["prediction_is_positive"] for r in rows] == ["1;0;1", "0;1;0", "0;0;0"]
    assert rows[0]["positives"] == f"{db[1]};{db[2]}" and rows[2]["positives"] == ""
    assert rows[1]["predictions"].split(";") == [db[0], db[4], db[3]]
    colours = [[tuple(frame_colour(Image.open(p), j)) for j in (1, 2, 3)] for p in pictures]
    near = lambda c, ref: max(abs(a - b) for a, b in zip(c, ref)) < 40  # JPEG
    assert all(near(c, GREEN if h else RED) for row, hit in zip(colours, ([1, 0, 1], [0, 1, 0], [0, 0, 0]))
               for c, h in zip(row, hit))
    _, failures = save_retrievals(dataset, predictions, distances, tmp_path / "failures", -1, failures_only=True)
    assert [p.name for p in failures] == ["q00001.jpg", "q00002.jpg"]


def test_recall_curves_png_holds_several_models(tmp_path):
    curves = {"pitts30k_test": {"a": {1: 0.5, 5: 0.7, 10: 0.8}, "b": {1: 0.6, 5: 0.8, 10: 0.9}},
              "msls_val": {"a": {1: 0.4, 5: 0.6, 10: 0.7}, "b": {1: 0.3, 5: 0.5, 10: 0.6}}}
    path = plot_recall_curves(curves, tmp_path / "curves.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height > 100
