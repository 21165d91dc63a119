"""The evaluation command end to end on generated data in each real format, its cache and its errors."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import eval as eval_cli
from dataloaders.eval import EvalDataset, build_eval_set
from dataloaders.eval.pittsburgh import read_db_struct
from dataloaders.preprocessing import Preprocessing
from main import main as train_main
from models import VPRModel, VPRNet, build_network, load_weights, read_checkpoint
from models.descriptor_cache import cache_key
from models.evaluation import drop_images
from utils.errors import CheckpointError, DataError
from utils.visualize import BORDER, GREEN, RED, tile_origin

REPO = Path(__file__).resolve().parents[1]
ARCH = {"backbone_arch": "resnet18", "layers_to_crop": [4], "agg_arch": "MixVPR",
        "agg_config": {"out_channels": 16, "mix_depth": 1, "out_rows": 2}}


def run_eval(checkpoints, out_dir, benchmarks, synthetic, *extra) -> dict:
    """eval.py in-process on the CPU, without workers or progress bars; returns its results."""
    return eval_cli.main(["--checkpoint", json.dumps(list(map(str, checkpoints))), "--benchmarks", json.dumps(benchmarks),
                          "--data.pitts_root", str(synthetic["pitts"]), "--data.msls_root", str(synthetic["msls"]),
                          "--out_dir", str(out_dir), "--num_workers", "0", "--device", "cpu", "--progress", "false",
                          *map(str, extra)])


def results_dir(out_dir: Path) -> Path:
    """The folder of the newest eval run under ``out_dir``."""
    return max(out_dir.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def make_folder_set(pitts_root: Path, split: str, root: Path) -> Path:
    """The images of a Pittsburgh split in the generic folder format, named @east@north@...@ from the .mat."""
    db = read_db_struct(pitts_root / "datasets" / f"{split}.mat")
    for part, names, utm, base in (("database", db["db_images"], db["utm_db"], pitts_root),
                                   ("queries", db["q_images"], db["utm_q"], pitts_root / "queries_real")):
        folder = root / "images" / "test" / part
        folder.mkdir(parents=True)
        for i, (name, (east, north)) in enumerate(zip(names, utm)):
            shutil.copy(base / name, folder / f"@{east:.2f}@{north:.2f}@17@T@@@@{i:05d}@@@@@@@.jpg")
    return root


@pytest.fixture(scope="module")
def trained(synthetic, tmp_path_factory):
    """A checkpoint written by our training command (one tiny epoch) and its validation recall."""
    logs = tmp_path_factory.mktemp("train")
    cli = train_main([
        "--config", str(REPO / "configs" / "synthetic_demo.yaml"), "--data.synthetic", "false",
        "--data.gsv_root", str(synthetic["gsv_cities"]), "--data.pitts_root", str(synthetic["pitts"]),
        "--data.msls_root", str(synthetic["msls"]), "--data.cities", "[Synthville]",
        "--data.val_sets", "[pitts30k_val]", "--data.image_size", "[32, 32]", "--data.batch_size", "4",
        "--data.num_workers", "0", "--model.backbone_arch", "resnet18",
        "--model.agg_config", json.dumps(ARCH["agg_config"]), "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "1", "--trainer.enable_progress_bar", "false",
        "--logs_dir", str(logs)])
    ckpt = Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("pitts30k_val/")}
    return ckpt, metrics


@pytest.fixture(scope="module")
def bare(trained, tmp_path_factory):
    """The trained weights as a bare state_dict (.pth) and a config giving their architecture."""
    folder = tmp_path_factory.mktemp("bare")
    state, _ = read_checkpoint(trained[0])
    torch.save(state, folder / "weights.pth")
    (folder / "arch.yaml").write_text(yaml.safe_dump({"model": ARCH, "data": {"image_size": [32, 32]}}))
    return folder / "weights.pth", folder / "arch.yaml"


@pytest.fixture(scope="module")
def folder_set(synthetic, tmp_path_factory) -> Path:
    """pitts30k_test of the synthetic data rewritten in the generic folder format."""
    return make_folder_set(synthetic["pitts"], "pitts30k_test", tmp_path_factory.mktemp("folder") / "synthfolder")


def test_eval_of_a_trained_checkpoint_reproduces_its_validation_recall(trained, synthetic, tmp_path):
    ckpt, metrics = trained
    results = run_eval([ckpt], tmp_path, ["pitts30k_val"], synthetic)
    recall = results["last"]["benchmarks"]["pitts30k_val"]["recall"]
    for k in (1, 5, 10):
        assert recall[str(k)] == pytest.approx(metrics[f"pitts30k_val/R{k}"], abs=1e-6)
    for name in ("recalls.csv", "recalls.json", "recalls.md", "recall_curves.png", "recall_pitts30k_val.png"):
        assert (tmp_path / "version_0" / name).is_file(), name
    # a second evaluation into the same folder keeps the first one's results
    first = (tmp_path / "version_0" / "recalls.json").read_text()
    run_eval([ckpt], tmp_path, ["pitts30k_val"], synthetic, "--k", "[1]")
    assert (tmp_path / "version_0" / "recalls.json").read_text() == first
    assert json.loads((tmp_path / "version_1" / "recalls.json").read_text())["protocol"]["k"] == [1]


def test_bare_state_dict_with_config_matches_its_checkpoint_side_by_side(trained, bare, synthetic, folder_set,
                                                                        tmp_path):
    weights, config = bare
    # msls (.npy) and the generic folder format here; Pittsburgh's .mat in the test above
    results = run_eval([trained[0], weights], tmp_path, ["msls_val", f"folder:{folder_set}"], synthetic,
                       "--config", config, "--names", "[ckpt, bare]")
    for benchmark in ("msls_val", "synthfolder"):
        assert results["ckpt"]["benchmarks"][benchmark]["recall"] == results["bare"]["benchmarks"][benchmark]["recall"]
    out = results_dir(tmp_path)
    table = (out / "recalls.md").read_text().splitlines()
    assert table[0] == "| Model | Dim | MSLS-val R@1 | R@5 | R@10 | synthfolder R@1 | R@5 | R@10 |"
    assert table[2].split(" | ")[:2] == ["| ckpt", "32"] and table[3].split(" | ")[:2] == ["| bare", "32"]
    assert table[2].split(" | ")[2:] == table[3].split(" | ")[2:]
    rows = list(csv.DictReader((out / "recalls.csv").open()))
    assert [(r["model"], r["benchmark"]) for r in rows] == [("ckpt", "msls_val"), ("ckpt", "synthfolder"),
                                                            ("bare", "msls_val"), ("bare", "synthfolder")]
    saved = json.loads((out / "recalls.json").read_text())
    r1 = saved["models"]["bare"]["benchmarks"]["msls_val"]["recall"]["1"]
    assert rows[2]["R@1"] == f"{100 * r1:.2f}"


def test_folder_positives_follow_the_radius(folder_set, synthetic):
    pitts = build_eval_set("pitts30k_test", {"pitts_root": synthetic["pitts"]})
    same = build_eval_set(f"folder:{folder_set}", {})
    assert same.num_references == pitts.num_references and same.num_queries == pitts.num_queries
    # the folder set sorts by name (@east@north@...): map its images back to Pittsburgh's order by the copy number
    number = lambda paths: np.array([int(Path(p).name.split("@")[8]) for p in paths])
    db, queries = number(same.database_paths), number(same.query_paths)
    by_query = {q: sorted(db[g].tolist()) for q, g in zip(queries, same.ground_truth)}
    assert all(by_query[i] == sorted(g.tolist()) for i, g in enumerate(pitts.ground_truth))
    wide = build_eval_set(f"folder:{folder_set}", {}, pos_radius=60.0)
    assert sum(map(len, wide.ground_truth)) > sum(map(len, same.ground_truth))


class ForwardCounter:
    """Counts VPRNet.forward calls (monkeypatched in)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = VPRNet.forward

        def counted(model, x):
            self.calls += 1
            return original(model, x)
        monkeypatch.setattr(VPRNet, "forward", counted)



GEM_FLAGS = ["--model.backbone_arch", "resnet18", "--model.layers_to_crop", "[4]", "--model.agg_arch", "GeM",
             "--model.agg_config", "{}"]


def test_cached_descriptors_are_reused_and_invalidated_by_size_or_weights(gem_weights, synthetic, tmp_path,
                                                                          monkeypatch):
    counter = ForwardCounter(monkeypatch)
    run = lambda weights, size: run_eval([weights], tmp_path, ["pitts30k_test"], synthetic, *GEM_FLAGS,
                                         "--data.image_size", f"[{size}, {size}]", "--names", "[gem]"
                                         )["gem"]["benchmarks"]["pitts30k_test"]
    first = run(gem_weights, 32)
    assert counter.calls > 0 and not first["descriptors_cached"]
    counter.calls = 0
    second = run(gem_weights, 32)
    assert counter.calls == 0 and second["descriptors_cached"] and second["recall"] == first["recall"]
    run(gem_weights, 48)
    assert counter.calls > 0
    counter.calls = 0
    changed = tmp_path / "changed.pth"
    state = torch.load(gem_weights)
    state["aggregator.p"] = state["aggregator.p"] + 0.5
    torch.save(state, changed)
    assert not run(changed, 32)["descriptors_cached"] and counter.calls > 0
    assert len(list((tmp_path / "descriptors").glob("*.npy"))) == 3
    # an image replaced in place (same path, new content) is embedded again
    counter.calls = 0
    image = build_eval_set("pitts30k_test", {"pitts_root": synthetic["pitts"]}).database_paths[0]
    original = Path(image).read_bytes()
    try:
        Image.open(image).transpose(Image.FLIP_LEFT_RIGHT).save(image, quality=95)
        assert not run(gem_weights, 32)["descriptors_cached"] and counter.calls > 0
    finally:
        Path(image).write_bytes(original)


def test_cache_key_depends_on_network_images_preprocessing_and_precision(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"a"), b.write_bytes(b"bb")
    paths = [str(a), str(b)]
    at = lambda *size: Preprocessing(size).as_dict()
    base = cache_key("w", paths, at(32, 32), "32")
    assert cache_key("w", paths, at(32, 32), "32-true") == base
    for other in (cache_key("v", paths, at(32, 32), "32"), cache_key("w", paths[::-1], at(32, 32), "32"),
                  cache_key("w", paths, at(48, 32), "32"), cache_key("w", paths, at(32, 32), "16-mixed"),
                  cache_key("w", paths, Preprocessing((32, 32), mean=(0.5, 0.5, 0.5)).as_dict(), "32")):
        assert other != base
    b.write_bytes(b"cc!")  # same path, other content
    assert cache_key("w", paths, at(32, 32), "32") != base


def test_retrieval_pictures_frame_known_positives_green(trained, synthetic, tmp_path):
    run_eval([trained[0]], tmp_path, ["pitts30k_test"], synthetic, "--visualize", 4, "--top_k", 3)
    folder = results_dir(tmp_path) / "retrievals" / "last" / "pitts30k_test"
    rows = list(csv.DictReader((folder / "retrievals.csv").open()))
    dataset = build_eval_set("pitts30k_test", {"pitts_root": synthetic["pitts"]})
    assert len(rows) == dataset.num_queries and len(list(folder.glob("q*.jpg"))) == 4
    colours = set()
    for row in rows[:4]:
        i = int(row["query_index"])
        positives = {dataset.database_paths[j] for j in dataset.ground_truth[i]}
        assert set(row["positives"].split(";") if row["positives"] else []) == positives
        picture = np.asarray(Image.open(folder / f"q{i:05d}.jpg").convert("RGB"), dtype=int)
        for j, predicted in enumerate(row["predictions"].split(";")):
            x, y = tile_origin(j + 1)
            expected = GREEN if predicted in positives else RED
            colours.add(expected)
            assert np.abs(picture[y + BORDER // 2, x + BORDER // 2] - expected).max() < 40, (i, j)
    assert colours == {GREEN, RED}


def test_failures_only_records_the_failed_queries(trained, synthetic, tmp_path):
    run_eval([trained[0]], tmp_path, ["pitts30k_test"], synthetic, "--visualize", -1, "--failures_only", "true")
    folder = results_dir(tmp_path) / "retrievals" / "last" / "pitts30k_test"
    rows = list(csv.DictReader((folder / "retrievals.csv").open()))
    r1 = json.loads((results_dir(tmp_path) / "recalls.json").read_text())["models"]["last"]["benchmarks"]["pitts30k_test"]["recall"]["1"]
    num_queries = build_eval_set("pitts30k_test", {"pitts_root": synthetic["pitts"]}).num_queries
    assert len(rows) == round((1 - r1) * num_queries) and all(r["correct_at_1"] == "0" for r in rows)
    assert len(list(folder.glob("q*.jpg"))) == len(rows)


def test_checkpoint_that_does_not_fit_lists_keys_and_suggests_the_configuration(bare, synthetic, tmp_path):
    weights, _ = bare
    wrong = ["--model.backbone_arch", "resnet18", "--model.layers_to_crop", "[4]", "--model.agg_arch", "MixVPR",
             "--model.agg_config", '{"out_channels": 32, "mix_depth": 2, "out_rows": 2}', "--data.image_size", "[32, 32]"]
    with pytest.raises(CheckpointError) as err:
        run_eval([weights], tmp_path, ["pitts30k_test"], synthetic, *wrong)
    message = str(err.value)
    assert "missing keys: aggregator.mix.1.mix.0.bias" in message
    assert "aggregator.channel_proj.weight: (16, 256)" in message
    assert '"out_channels": 16, "mix_depth": 1' in message and "--data.image_size '[32, 32]'" in message
    # without settings a bare state_dict is taken for the paper's ResNet50 model: the error names what it fits
    with pytest.raises(CheckpointError, match=r"does not fit(.|\n)*--model.backbone_arch resnet18"):
        run_eval([weights], tmp_path, ["pitts30k_test"], synthetic)


def test_released_4096_weights_with_wrong_out_channels_are_told_the_right_agg_config():
    with torch.device("meta"):
        release = VPRModel(backbone_arch="resnet50", layers_to_crop=[4], agg_arch="MixVPR", agg_config={
            "in_channels": 1024, "in_h": 20, "in_w": 20, "out_channels": 1024, "mix_depth": 4, "mlp_ratio": 1,
            "out_rows": 4}).state_dict()
        wrong = build_network("resnet50", layers_to_crop=[4], agg_arch="MixVPR", image_size=[320, 320],
                              agg_config={"out_channels": 512, "mix_depth": 4, "out_rows": 4})
    with pytest.raises(CheckpointError) as err:
        load_weights(wrong, release, source="resnet50_MixVPR_4096.pth")
    message = str(err.value)
    assert "shape mismatches" in message and '"out_channels": 1024' in message
    assert "configs/mixvpr_resnet50_4096.yaml" in message


def test_missing_roots_and_bad_folder_layouts_name_the_path(gem_weights, folder_set, synthetic, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"database folder {missing}/images/test/database not found.*Expected layout"):
        run_eval([gem_weights], tmp_path, [f"folder:{missing}"], synthetic, *GEM_FLAGS)
    with pytest.raises(FileNotFoundError, match=r"Pittsburgh root .*nowhere is not a folder. Expected layout"):
        eval_cli.main(["--checkpoint", str(gem_weights), *GEM_FLAGS, "--benchmarks", "[pitts30k_test]",
                       "--data.pitts_root", str(missing), "--out_dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"msls_val_dbImages.npy.*not found in .*nowhere"):
        eval_cli.main(["--checkpoint", str(gem_weights), *GEM_FLAGS, "--benchmarks", "[msls_val]",
                       "--data.msls_root", str(missing), "--out_dir", str(tmp_path)])
    # no results folder is left by a run that could not start
    assert not list(tmp_path.glob("version_*"))
    bad = tmp_path / "bad"
    shutil.copytree(folder_set, bad)
    first = sorted((bad / "images" / "test" / "queries").iterdir())[0]
    first.rename(first.with_name("IMG_0001.jpg"))
    with pytest.raises(ValueError, match=r"'IMG_0001.jpg'.*lacks @<UTM_east>@<UTM_north>@"):
        build_eval_set(f"folder:{bad}", {})


def test_unreadable_image_stops_with_its_path_or_is_skipped_when_asked(gem_weights, folder_set, synthetic, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder_set, broken)
    victim = sorted((broken / "images" / "test" / "database").iterdir())[3]
    victim.write_bytes(b"not a jpeg")
    args = [*GEM_FLAGS, "--data.image_size", "[32, 32]", "--names", "[gem]"]
    with pytest.raises(DataError, match=rf"cannot read image {victim}"):
        run_eval([gem_weights], tmp_path / "stop", [f"folder:{broken}"], synthetic, *args)
    record = run_eval([gem_weights], tmp_path / "skip", [f"folder:{broken}"], synthetic, *args,
                      "--data.skip_unreadable", "true")["gem"]["benchmarks"]["broken"]
    full = build_eval_set(f"folder:{broken}", {})
    assert record["skipped_database"] == 1 and record["skipped_queries"] == 0
    assert record["num_references"] == full.num_references - 1
    assert (results_dir(tmp_path / "skip") / "skipped_broken.txt").read_text() == f"{victim}\n"


def test_dropping_images_renumbers_the_ground_truth():
    ds = EvalDataset("toy", ["d0", "d1", "d2", "d3"], ["q0", "q1", "q2"],
                     [np.array([0, 1]), np.array([1]), np.array([2, 3])])
    # database image d1 and query q0 are unreadable (dataset indices 1 and 4)
    kept = drop_images(ds, np.array([1, 4]))
    assert kept.database_paths == ["d0", "d2", "d3"] and kept.query_paths == ["q1", "q2"]
    assert [g.tolist() for g in kept.ground_truth] == [[], [1, 2]]
