"""The reliability catalogue (README, "Reliability"): nothing a user made is lost, every bad input is one
clear line before the work starts, and a resumed run repeats the uninterrupted one. Each test meets a
fault as a user would (a kill, a corrupt file, an odd setting) and checks what they get."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import eval as eval_cli
from dataloaders.eval import build_eval_set
from dataloaders.gsv_cities import GSVCitiesDataset, collate_places
from dataloaders.synthetic import SYNTHETIC_CITIES
from dataloaders.unreadable import SKIPPED_FILE, find_unreadable
from main import main
from models import read_checkpoint
from tiny_cli import tiny_cli_args
from utils.divergence import TrainingDiverged
from utils.errors import CheckpointError, ConfigError, DataError, NotFoundError
from utils.files import host_id

REPO = Path(__file__).resolve().parents[1]
LOSSES = '[{"class_path": "tiny_cli.Losses"}]'
QUICK = ["--trainer.num_sanity_val_steps", "0", "--data.val_sets", "[pitts30k_val]"]


def recorded(cli, name: str):
    """The callback of class ``name`` of a finished run."""
    return next(c for c in cli.trainer.callbacks if type(c).__name__ == name)


def run_folders(logs: Path, name: str = "synthetic_demo") -> list[str]:
    """The version folders a run name has under ``logs``."""
    return sorted(p.name for p in (logs / name).glob("version_*"))


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def truncate(path: Path) -> Path:
    """Cut an image file to its first half (a download or copy that stopped)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="module")
def tiny_run(synthetic, tmp_path_factory) -> Path:
    """last.ckpt of a one-epoch tiny run."""
    logs = tmp_path_factory.mktemp("tiny_run")
    cli = main(tiny_cli_args(synthetic, logs) + QUICK)
    return Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"


# ---------------------------------------------------------------- 19. a resumed run repeats the uninterrupted one
@pytest.mark.parametrize("workers", [0, 1])
def test_resumed_run_repeats_the_losses_of_the_uninterrupted_run(synthetic, tmp_path, workers):
    # augmented images and the miner: every random draw of training is in play
    args = lambda epochs, name: tiny_cli_args(synthetic, tmp_path, epochs, name) + QUICK + [
        "--data.rand_augment_ops", "2", "--data.num_workers", str(workers), "--trainer.callbacks", LOSSES]
    straight = recorded(main(args(2, "straight")), "Losses").seen
    first = main(args(1, "interrupted"))
    last = Path(first.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    resumed = recorded(main(args(2, "interrupted") + ["--ckpt_path", str(last)]), "Losses").seen
    assert [s[:2] for s in straight] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert recorded(first, "Losses").seen == straight[:2]
    assert resumed == straight[2:]


# ---------------------------------------------------------------- 5. debris of a kill during a checkpoint save
WRITER = """
import sys, time
from utils.files import atomic_path
with atomic_path(sys.argv[1], keep_suffix=False) as tmp:
    tmp.write_bytes(b"half a checkpoint")
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_killed_checkpoint_writer_leaves_debris_that_a_resume_removes(synthetic, tmp_path, tiny_run):
    run = tmp_path / "synthetic_demo" / "version_0"
    shutil.copytree(tiny_run.parent.parent, run)
    checkpoints = run / "checkpoints"
    before = (checkpoints / "last.ckpt").read_bytes()
    files = files_of(run)
    # a real writer killed (SIGKILL) in the middle of saving last.ckpt, and the temporary of a live one
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(checkpoints / "last.ckpt")], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    debris = Path(writer.stdout.readline().strip())
    writer.kill()
    writer.wait()
    live = checkpoints / f".epoch00.ckpt.{host_id()}.{os.getpid()}.abcd1234.tmp"
    live.write_bytes(b"being written")
    assert debris.is_file() and debris.name.startswith(f".last.ckpt.{host_id()}.{writer.pid}.")
    assert (checkpoints / "last.ckpt").read_bytes() == before  # the kill left the good file alone

    resumed = main(tiny_cli_args(synthetic, tmp_path, epochs=2) + QUICK + ["--ckpt_path", str(checkpoints / "last.ckpt")])
    assert resumed.trainer.current_epoch == 2
    assert not debris.exists() and live.is_file()
    live.unlink()
    assert files_of(run) == files  # the earlier run's logs, config and checkpoints are untouched
    assert run_folders(tmp_path) == ["version_0", "version_1"]


# ---------------------------------------------------------------- 7. coordinates that cannot be metres
def folder_set(root: Path, image: Path, db: list[str], queries: list[str]) -> Path:
    """A set in the generic folder format: one copy of ``image`` per file name given."""
    for part, names in (("database", db), ("queries", queries)):
        folder = root / "images" / "test" / part
        folder.mkdir(parents=True)
        for name in names:
            shutil.copy(image, folder / name)
    return root


def named(coordinates, zone: str = "") -> list[str]:
    """File names @east@north@zone@letter@... for (east, north) pairs; ``zone`` like '17@T'."""
    zone = zone or "@"
    return [f"@{e}@{n}@{zone}@@@{i:03d}@@@@@@@@.jpg" for i, (e, n) in enumerate(coordinates)]


@pytest.fixture(scope="module")
def photo(synthetic) -> Path:
    """One image file of the synthetic data."""
    return next((synthetic["pitts"] / "queries_real").rglob("*.jpg"))


def test_latitude_longitude_instead_of_metres_is_an_error_not_a_perfect_recall(photo, tmp_path, synthetic):
    # a street of Pittsburgh in degrees: every image lies within 25 "metres" of every other
    degrees = [(40.44 + 0.0005 * i, -79.99 + 0.0003 * i) for i in range(12)]
    root = folder_set(tmp_path / "degrees", photo, named(degrees[:10]), named(degrees[10:]))
    with pytest.raises(DataError, match=r"2 of 2 queries have more than half of the 10 database images within 25 m"
                                        r".*not UTM metres \(latitude/longitude degrees\?\)"):
        build_eval_set(f"folder:{root}", {})
    # eval.py stops before embedding anything (no R@1 = 100 % table, no results folder)
    with pytest.raises(DataError, match="not UTM metres"):
        eval_cli.main(["--checkpoint", str(tmp_path / "unused.ckpt"), "--benchmarks", f"[folder:{root}]",
                       "--out_dir", str(tmp_path / "eval")])
    assert not (tmp_path / "eval").exists()
    # with the zone fields given, the degrees are caught by their range, naming the file
    zoned = folder_set(tmp_path / "zoned", photo, named(degrees[:10], "17@T"), named(degrees[10:], "17@T"))
    with pytest.raises(DataError, match=r"'@40.44\d*@-79.9\d*@17@T@@@\d+@@@@@@@@.jpg' .* gives UTM zone 17T but .*"
                                        r"look like latitude/longitude degrees"):
        build_eval_set(f"folder:{zoned}", {})


@pytest.mark.parametrize("name,match", [
    ("@nan@4476000.0@17@T@@@@@@@@@@@.jpg", r"gives the coordinates \(nan, 4476000.0\), not finite numbers"),
    ("@584000.0@inf@@@@@@@@@@@@.jpg", r"gives the coordinates \(584000.0, inf\), not finite numbers"),
    ("@584000.0@4476000.0@61@T@@@@@@@@@@@.jpg", r"gives the UTM zone '61' 'T'; a zone is a number 1..60"),
    ("@584000.0@4476000.0@@@@@@@@@@@@.jpg", r"some file names give a UTM zone .* and others none"),
])
def test_bad_coordinates_in_a_file_name_name_the_file(photo, tmp_path, name, match):
    good = named([(584000.0 + 100 * i, 4476000.0) for i in range(3)], "17@T")
    root = folder_set(tmp_path / "set", photo, good, [name])
    with pytest.raises(DataError, match=match) as err:
        build_eval_set(f"folder:{root}", {})
    assert str(root / "images" / "test" / "queries" / name) in str(err.value) or "others none" in match


def test_images_of_other_utm_zones_are_never_positives(photo, tmp_path):
    # the same easting/northing in zones 17T and 18T are 500 km apart
    db = named([(584000.0, 4476000.0)], "17@T") + named([(584000.0 + d, 4476000.0) for d in (0, 10, 500, 900)], "18@T")
    root = folder_set(tmp_path / "zones", photo, db, named([(584005.0, 4476000.0)], "18@T"))
    dataset = build_eval_set(f"folder:{root}", {})
    assert dataset.num_references == 5
    positives = sorted(Path(dataset.database_paths[i]).name for i in dataset.ground_truth[0])
    assert positives == sorted(db[1:3])


# ---------------------------------------------------------------- 9. degenerate training is refused before it starts
@pytest.fixture(scope="module")
def gsv_copy(synthetic, tmp_path_factory) -> Path:
    """A copy of the tiny GSV-Cities whose Synthville.csv is header-only and Pixelburg.csv 0 bytes."""
    root = tmp_path_factory.mktemp("gsv") / "gsv"
    shutil.copytree(synthetic["gsv_cities"], root)
    csv = root / "Dataframes" / "Synthville.csv"
    pd.read_csv(csv).iloc[:0].to_csv(csv, index=False)
    (root / "Dataframes" / "Pixelburg.csv").write_bytes(b"")
    return root


@pytest.mark.parametrize("flags,error,match", [
    (["--data.batch_size", "1"], ConfigError, r"batch_size=1: a batch needs at least 2 places"),
    (["--data.img_per_place", "1", "--data.min_img_per_place", "1"], ConfigError,
     r"img_per_place=1: a place needs at least 2 images"),
    (["--data.cities", "[Synthville]", "--data.min_img_per_place", "8"], DataError,
     r"only 1 place of Synthville has min_img_per_place=8 readable images.*--data.min_img_per_place"),
    (["--data.cities", "[Synthville]", "--data.min_img_per_place", "9"], DataError,
     r"no place of Synthville .* has min_img_per_place=9 images \(the most is 8\)"),
    (["--data.cities", "[Synthville]", "--data.gsv_root", "HEADER_ONLY"], DataError,
     r"Synthville.csv has a header but no images; remove Synthville from --data.cities"),
    (["--model.agg_config", '{"out_channels": 0, "mix_depth": 1, "out_rows": 2}'], ConfigError,
     r"MixVPR agg_config: out_channels=0: .* must be positive"),
    (["--model.agg_arch", "GeM", "--model.agg_config", '{"p": 0}'], ConfigError, r"GeM agg_config: p=0"),
    (["--data.image_size", "[-32, 32]"], ConfigError, r"image_size=\[-32, 32\]: \(height, width\) with positive sizes"),
])
def test_degenerate_training_is_refused_before_a_run_folder_exists(synthetic, gsv_copy, tmp_path, flags, error, match):
    flags = [str(gsv_copy) if f == "HEADER_ONLY" else f for f in flags]
    with pytest.raises(error, match=match):
        main(tiny_cli_args(synthetic, tmp_path) + flags)
    assert run_folders(tmp_path) == []


def test_diverging_run_stops_at_the_step_and_keeps_the_last_good_checkpoint(synthetic, tmp_path):
    # the weights turn NaN before step 3 (epoch 1, batch 1): as a too high learning rate makes them
    args = tiny_cli_args(synthetic, tmp_path, epochs=3) + QUICK + [
        "--trainer.callbacks", '[{"class_path": "tiny_cli.PoisonWeights", "init_args": {"step": 3}}]']
    with pytest.raises(TrainingDiverged, match=r"the loss is nan at optimizer step 4 \(epoch 1, batch 1\); nothing was saved "
                                               r"from that step on \(.*last.ckpt holds the end of epoch 0"):
        main(args)
    checkpoints = tmp_path / "synthetic_demo" / "version_0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.ckpt"))[-1] == "last.ckpt"
    assert len(list(checkpoints.glob("*.ckpt"))) == 2  # epoch 0's best and last, nothing after
    saved = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0 and all(torch.isfinite(v).all() for v in saved["state_dict"].values())


# ---------------------------------------------------------------- 10. corrupt images
@pytest.fixture(scope="module")
def corrupt(synthetic, tmp_path_factory) -> dict:
    """Copies of the tiny GSV-Cities and Pittsburgh with truncated JPEGs: one image of every Synthville and
    Pixelburg place that has 5 or more (so each keeps 4 readable ones), one database image and one query of
    pitts30k_val. {'gsv', 'pitts', 'train': [paths], 'val': [paths]}."""
    root = tmp_path_factory.mktemp("corrupt")
    gsv, pitts = root / "gsv", root / "pitts"
    shutil.copytree(synthetic["gsv_cities"], gsv)
    shutil.copytree(synthetic["pitts"], pitts)
    train = []
    dataset = GSVCitiesDataset(gsv, SYNTHETIC_CITIES[:2])
    for place in range(dataset.num_places):
        start, stop = dataset.offsets[place], dataset.offsets[place + 1]
        if stop - start >= 5:
            train.append(truncate(gsv / "Images" / dataset.files[start]))
    val = build_eval_set("pitts30k_val", {"pitts_root": pitts})
    bad = [truncate(Path(val.images[3])), truncate(Path(val.images[val.num_references + 2]))]
    return {"gsv": gsv, "pitts": pitts, "train": sorted(map(str, train)), "val": sorted(map(str, bad))}


def corrupt_args(synthetic, corrupt, logs: Path, *flags) -> list[str]:
    return tiny_cli_args(synthetic, logs) + QUICK + ["--data.gsv_root", str(corrupt["gsv"]),
                                                    "--data.pitts_root", str(corrupt["pitts"]), *flags]


def test_unreadable_training_image_is_replaced_by_another_of_its_place(corrupt):
    dataset = GSVCitiesDataset(corrupt["gsv"], SYNTHETIC_CITIES[:2], skip_unreadable=True)
    strict = GSVCitiesDataset(corrupt["gsv"], SYNTHETIC_CITIES[:2])
    bad = {i for i, p in enumerate(dataset.paths) if str(p) in corrupt["train"]}
    met = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for place in range(dataset.num_places):
            images, labels, skipped = dataset[place]
            assert images is not None and images.shape[0] == 4 and labels.tolist() == [place] * 4
            assert set(skipped.tolist()) <= bad
            met |= set(skipped.tolist())
            if skipped.numel():
                with pytest.raises(DataError, match=r"cannot read image .*--data.skip_unreadable true"):
                    strict.set_epoch(epoch), strict[place]
    assert met  # some draws did meet a truncated file
    # a place left with fewer than K readable images sits the step out
    place = next(p for p in range(dataset.num_places) if dataset.offsets[p + 1] - dataset.offsets[p] == 4)
    victim = dataset.paths[dataset.offsets[place]]
    original = victim.read_bytes()
    try:
        truncate(victim)
        batch = collate_places([dataset[place], dataset[0 if place else 1]])
    finally:
        victim.write_bytes(original)
    assert batch[0].shape[:2] == (1, 4) and batch[1][0, 0] == (0 if place else 1)
    assert dataset.offsets[place] in batch[2].tolist()


def test_find_unreadable_decodes_every_file(corrupt, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    paths = [*corrupt["val"], *build_eval_set("pitts30k_test", {"pitts_root": corrupt["pitts"]}).images[:5],
             str(empty), str(garbage), str(tmp_path / "missing.jpg")]
    assert find_unreadable(paths, num_workers=0, progress=False).tolist() == [0, 1, 7, 8, 9]


def test_corrupt_images_stop_before_training_with_check_images(synthetic, corrupt, tmp_path):
    with pytest.raises(DataError, match=rf"GSV-Cities: {len(corrupt['train'])} of \d+ images cannot be read.*"
                                        r"--data.skip_unreadable true"):
        main(corrupt_args(synthetic, corrupt, tmp_path, "--data.check_images", "true"))
    assert run_folders(tmp_path) == []


def test_corrupt_training_image_without_skipping_names_the_file(synthetic, corrupt, tmp_path):
    with pytest.raises(DataError, match=r"cannot read image .*/gsv/Images/.*\.jpg.*--data.skip_unreadable true"):
        main(corrupt_args(synthetic, corrupt, tmp_path, "--data.val_sets", "[msls_val]"))


def skipped_of(cli) -> tuple[list[str], pd.Series]:
    """(skipped_images.txt lines, the logged skipped_images values) of a finished run."""
    folder = Path(cli.trainer.log_dir)
    metrics = pd.read_csv(folder / "metrics.csv")
    return (folder / SKIPPED_FILE).read_text().splitlines(), metrics["skipped_images"].dropna()


def test_check_images_with_skipping_leaves_unreadable_images_out_from_the_start(synthetic, corrupt, tmp_path):
    cli = main(corrupt_args(synthetic, corrupt, tmp_path, "--data.check_images", "true",
                            "--data.skip_unreadable", "true"))
    listed, logged = skipped_of(cli)
    assert listed == sorted(corrupt["train"] + corrupt["val"])
    assert logged.iloc[-1] == len(listed)
    dataset = cli.datamodule.train_dataset
    assert dataset.num_places == 12 and not set(map(str, dataset.paths)) & set(corrupt["train"])
    assert cli.datamodule.val_datasets[0].num_references == 59


def test_skipped_validation_images_give_the_recall_of_eval_py(synthetic, corrupt, tmp_path, tiny_run):
    # training meets truncated files (replaced), validation leaves its two out: each listed once
    cli = main(corrupt_args(synthetic, corrupt, tmp_path, "--data.skip_unreadable", "true"))
    listed, logged = skipped_of(cli)
    assert set(corrupt["val"]) <= set(listed) <= set(corrupt["train"] + corrupt["val"])
    assert len(listed) == len(set(listed)) and logged.iloc[-1] == len(listed)
    # validating a checkpoint on the corrupt set gives what eval.py gives with --data.skip_unreadable
    validated = main(["validate", *corrupt_args(synthetic, corrupt, tmp_path, "--data.skip_unreadable", "true"),
                      "--ckpt_path", str(tiny_run)])
    recall = validated.model.eval_recalls["pitts30k_val"]
    record = eval_cli.main(["--checkpoint", str(tiny_run), "--benchmarks", "[pitts30k_val]", "--data.pitts_root",
                            str(corrupt["pitts"]), "--data.skip_unreadable", "true", "--out_dir",
                            str(tmp_path / "eval"), "--device", "cpu", "--progress", "false"])["last"]
    assert record["benchmarks"]["pitts30k_val"]["skipped_database"] == 1
    assert {int(k): v for k, v in record["benchmarks"]["pitts30k_val"]["recall"].items()} == pytest.approx(recall)
    # without skipping, the unreadable image stops the validation with its path
    with pytest.raises(DataError, match=rf"cannot read image {re.escape(corrupt['val'][0])}"):
        main(["validate", *corrupt_args(synthetic, corrupt, tmp_path), "--ckpt_path", str(tiny_run)])


# ---------------------------------------------------------------- 11. no pickled code runs, whatever the entry point
class Evil:
    """Unpickling this creates the file ``marker``: what a malicious checkpoint could do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def malicious(tmp_path) -> tuple[Path, Path]:
    """(a Lightning-looking checkpoint that runs code when unpickled, the file that code would create)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"aggregator.p": torch.ones(1)}, "hyper_parameters": {"lr": Evil(marker)}}, path)
    return path, marker


def test_malicious_checkpoint_runs_nothing_through_any_entry_point(synthetic, malicious, tmp_path, monkeypatch):
    from main import load_model, load_weights
    from models import VPRModel
    from models.distillation import Teacher
    from models.export import main as export_main
    import retrieve
    path, marker = malicious
    model = VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32))
    entry_points = {
        "read_checkpoint": lambda: read_checkpoint(path),
        "load_weights": lambda: load_weights(model, path),
        "load_model": lambda: load_model(path),
        "teacher": lambda: Teacher.from_checkpoint(path),
        "eval.py": lambda: eval_cli.main(["--checkpoint", str(path), "--benchmarks", "[pitts30k_test]",
                                          "--data.pitts_root", str(synthetic["pitts"]), "--out_dir", str(tmp_path)]),
        "retrieve.py": lambda: retrieve.main(["--checkpoint", str(path), "--database", str(synthetic["pitts"] / "000"),
                                              "--queries", str(synthetic["pitts"] / "000"), "--out_dir", str(tmp_path)]),
        "export": lambda: export_main(["--checkpoint", str(path), "--format", "torchscript",
                                       "--output", str(tmp_path / "m.pt")]),
        "main.py --ckpt_path": lambda: main(tiny_cli_args(synthetic, tmp_path) + ["--ckpt_path", str(path)]),
        "main.py validate --ckpt_path": lambda: main(["validate", *tiny_cli_args(synthetic, tmp_path),
                                                      "--ckpt_path", str(path)]),
        "main.py --model.init_from": lambda: main(tiny_cli_args(synthetic, tmp_path) + QUICK + [
            "--model.init_from", str(path)]),
    }
    for name, load in entry_points.items():
        with pytest.raises(CheckpointError, match=r"evil.ckpt needs code to run to be loaded"):
            load()
        assert not marker.exists(), name
    # a poisoned file in torch.hub's cache, where pretrained ImageNet weights are read from
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    shutil.copy(path, cached)
    with pytest.raises(CheckpointError, match=r"resnet18-f37072fd.pth is not the published ImageNet weights: its "
                                              r"SHA-256 is .*, the published one starts f37072fd.*delete it"):
        model.net.load_pretrained()
    # a cached file whose name carries no digest (DINOv2's) is read without running its code
    from models.backbones.imagenet_weights import load_pretrained_weights
    shutil.copy(path, cached.with_name("dinov2_vits14_pretrain.pth"))
    with pytest.raises(CheckpointError, match=r"dinov2_vits14_pretrain.pth needs code to run.*delete it"):
        load_pretrained_weights(model.net, "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
                                "dinov2_vits14", "DINOv2 weights")
    assert not marker.exists()


def test_msls_ground_truth_runs_no_pickled_code(synthetic, tmp_path):
    root = tmp_path / "msls"
    shutil.copytree(synthetic["msls"], root)
    marker = tmp_path / "pwned"
    with open(root / "msls_val_pIdx.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        import pickle
        pickle.dump(Evil(marker), f)
    with pytest.raises(DataError, match=r"msls_val_pIdx.npy holds pickled objects other than numpy arrays \(io.open is not a numpy array\)"):
        build_eval_set("msls_val", {"msls_root": root})
    assert not marker.exists()
    # the real object array of index arrays reads as numpy's own loader reads it
    ours = build_eval_set("msls_val", {"msls_root": synthetic["msls"]}).ground_truth
    theirs = np.load(synthetic["msls"] / "msls_val_pIdx.npy", allow_pickle=True)
    assert [g.tolist() for g in ours] == [np.asarray(t).tolist() for t in theirs]


# ---------------------------------------------------------------- 12. one line, exit status 2, traceback on request
def test_command_line_user_error_is_one_line_and_exit_status_2(synthetic, tmp_path, monkeypatch):
    from utils.cli import run_command
    args = [*tiny_cli_args(synthetic, tmp_path), "--data.batch_size", "1"]
    result = subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: data settings: batch_size=1: a batch needs at least 2 places")
    assert len([line for line in lines if line.startswith("error")]) == 1
    assert run_folders(tmp_path) == []
    # VPR_DEBUG=1: the exception itself, with its traceback
    monkeypatch.setenv("VPR_DEBUG", "1")
    with pytest.raises(ConfigError, match="batch_size=1"):
        run_command(main, args)


# ---------------------------------------------------------------- 13. every crash names the file or the setting
def _truncated_ckpt(tmp: Path, synthetic) -> Path:
    path = tmp / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    return truncate(path)


def _text_ckpt(tmp: Path, synthetic) -> Path:
    path = tmp / "notes.ckpt"
    path.write_text("these are my notes, not a checkpoint")
    return path


def _list_ckpt(tmp: Path, synthetic) -> Path:
    path = tmp / "list.ckpt"
    torch.save([1, 2, 3], path)
    return path


def _pitts(tmp: Path, synthetic) -> Path:
    root = tmp / "pitts"
    shutil.copytree(synthetic["pitts"], root)
    (root / "datasets" / "pitts30k_val.mat").write_bytes(b"")
    return root


def _gsv(tmp: Path, synthetic) -> Path:
    root = tmp / "gsv"
    shutil.copytree(synthetic["gsv_cities"], root, ignore=shutil.ignore_patterns("*.jpg"))
    (root / "Dataframes" / "Synthville.csv").write_bytes(b"")
    return root


def _msls(tmp: Path, synthetic, file: str = "", change=None) -> Path:
    root = tmp / "msls"
    shutil.copytree(synthetic["msls"], root)
    if change is None:
        truncate(root / file)
    else:
        array = np.load(root / file, allow_pickle=True)
        change(array)
        np.save(root / file, array, allow_pickle=True)
    return root


def _bare_state_dict(tmp: Path, synthetic) -> Path:
    path = tmp / "weights.pth"
    torch.save({"aggregator.p": torch.ones(1)}, path)
    return path


def _set(array, index, value):
    array[index] = value


MSLS_FILES = ["msls_val_dbImages.npy", "msls_val_qImages.npy", "msls_val_qIdx.npy", "msls_val_pIdx.npy"]
CRASHES = {
    "truncated .ckpt": (lambda t, s: read_checkpoint(_truncated_ckpt(t, s)), CheckpointError,
                        r"cut.ckpt \(\d+ bytes\) is not a readable PyTorch checkpoint: truncated"),
    "text file as .ckpt": (lambda t, s: read_checkpoint(_text_ckpt(t, s)), CheckpointError,
                           r"notes.ckpt \(\d+ bytes\) is not a readable PyTorch checkpoint"),
    "foreign pickle as .ckpt": (lambda t, s: read_checkpoint(_list_ckpt(t, s)), CheckpointError,
                                r"list.ckpt is neither a Lightning checkpoint .* nor a state_dict"),
    "0-byte .mat": (lambda t, s: build_eval_set("pitts30k_val", {"pitts_root": _pitts(t, s)}), DataError,
                    r"pitts30k_val.mat \(0 bytes\) is not a NetVLAD dbStruct .mat file .*Restore pitts30k_val.mat"),
    "0-byte city CSV": (lambda t, s: GSVCitiesDataset(_gsv(t, s), ["Synthville"]), DataError,
                        r"Synthville.csv is empty \(0 bytes, not even the header line\); restore it or remove "
                        r"Synthville from --data.cities"),
    **{f"truncated {f}": (lambda t, s, f=f: build_eval_set("msls_val", {"msls_root": _msls(t, s, f)}), DataError,
                          rf"msls/{f} \(\d+ bytes\) is not a readable .npy file.*Restore {f}") for f in MSLS_FILES},
    "qIdx out of range": (lambda t, s: build_eval_set("msls_val", {"msls_root": _msls(
        t, s, "msls_val_qIdx.npy", lambda a: _set(a, 0, 10**6))}), DataError,
        r"msls_val_qIdx.npy holds 1 index\(es\) outside 0..\d+ .* e.g. 1000000"),
    "pIdx out of range": (lambda t, s: build_eval_set("msls_val", {"msls_root": _msls(
        t, s, "msls_val_pIdx.npy", lambda a: _set(a, 0, np.array([10**6])))}), DataError,
        r"msls_val_pIdx.npy entry 0 holds \[1000000\], not indices into the \d+ database images"),
    "--model.recall_k 0": (lambda t, s: main(tiny_cli_args(s, t) + ["--model.recall_k", "[0, 1]"]), ConfigError,
                           r"recall_k: the K of recall@K must be positive integers, got \[0, 1\]"),
    "loss_config typo": (lambda t, s: main(tiny_cli_args(s, t) + ["--model.loss_config", '{"alpah": 2}']),
                         ConfigError, r"MultiSimilarityLoss does not take \['alpah'\]; its settings are \['alpha'"),
    "validate a bare state_dict": (lambda t, s: main(["validate", *tiny_cli_args(s, t), "--ckpt_path",
                                                      str(_bare_state_dict(t, s))]), CheckpointError,
                                   r"weights.pth is a bare state_dict.*--model.init_from .*weights.pth"),
}


@pytest.mark.parametrize("case", list(CRASHES))
def test_bad_input_names_the_file_or_setting_and_the_fix(case, synthetic, tmp_path):
    make, error, match = CRASHES[case]
    with pytest.raises(error, match=match):
        make(tmp_path, synthetic)


@pytest.mark.parametrize("command,args,flag", [
    (eval_cli.main, ["--checkpoint", "x.ckpt", "--k", "[0]"], "--k"),
    (eval_cli.main, ["--checkpoint", "x.ckpt", "--top_k", "0"], "--top_k"),
    (main, ["--data.batch_size", "x"], "--data.batch_size"),
])
def test_setting_that_does_not_parse_is_one_line_naming_the_flag(command, args, flag, capsys):
    from utils.cli import run_command
    with pytest.raises(SystemExit) as done:
        run_command(command, args)
    assert done.value.code == 2
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith(f"error: {flag}: ") and "--help lists every setting" in printed[0]


# ---------------------------------------------------------------- 14. one spelling of every flag
def test_every_command_takes_the_training_flags_its_messages_name(synthetic, tmp_path):
    import retrieve
    from models.export import main as export_main
    # eval.py's hint names the flag of main.py, and eval.py, retrieve.py and export parse it
    with pytest.raises(ConfigError, match=r"pitts30k_test needs pitts_root: set --data.pitts_root"):
        eval_cli.main(["--checkpoint", "x.ckpt", "--benchmarks", "[pitts30k_test]", "--out_dir", str(tmp_path)])
    # the same spelling wherever a flag means something (one a command does not use is refused by name:
    # tests/test_newcomer.py::test_training_flags_that_the_evaluation_commands_do_not_use_are_refused_by_name)
    shared = ["--data.image_size", "[32, 32]", "--model.agg_arch", "GeM", "--model.agg_config", "{}", "--config",
              str(REPO / "configs" / "synthetic_demo.yaml")]
    reading = ["--data.skip_unreadable", "true", *shared]
    cfg = eval_cli.parse_args(["--checkpoint", "x.ckpt", "--data.pitts_root", str(synthetic["pitts"]), *reading])
    assert cfg.data.skip_unreadable and cfg.model.agg_arch == "GeM" and cfg.data.pitts_root == str(synthetic["pitts"])
    cfg = retrieve.parse_args(["--checkpoint", "x.ckpt", "--database", "a", "--queries", "b", *reading])
    assert cfg.data.skip_unreadable and cfg.model.agg_arch == "GeM"
    with pytest.raises(NotFoundError, match=r"checkpoint not found: x.ckpt"):
        export_main(["--checkpoint", "x.ckpt", "--format", "torchscript", "--output", str(tmp_path / "m.pt"), *shared])


# ---------------------------------------------------------------- 16. loading a checkpoint has no side effects
def test_checkpoint_of_a_pretrained_distilled_model_loads_offline_without_its_teacher(tmp_path, monkeypatch):
    from models import VPRModel

    def offline(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not download")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    settings = dict(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), pretrained=True,
                    distillation={"teacher_checkpoint": str(tmp_path / "teacher_not_here.ckpt")})
    model = VPRModel(**settings)
    path = tmp_path / "student.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": "2.6.0"}, path)
    loaded = VPRModel.load_from_checkpoint(path, weights_only=False)
    assert loaded.teacher is None and loaded.hparams.pretrained
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())


# ---------------------------------------------------------------- 17. images as people see them
def _exif_rotated(path: Path) -> np.ndarray:
    """Write a 40 x 20 (w x h) photo stored as is with EXIF orientation 6 (rotate 90 degrees clockwise to
    view); returns the upright pixels (20 x 40 -> 40 x 20 after the turn)."""
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = (255, 0, 0)  # the left quarter red
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, quality=95, exif=exif)
    return np.asarray(Image.fromarray(pixels).transpose(Image.ROTATE_270))


def test_exif_orientation_and_16_bit_images_read_as_people_see_them(tmp_path):
    from dataloaders.image_io import decode_rgb, read_bytes
    from utils.images import load_image
    upright = _exif_rotated(tmp_path / "phone.jpg")
    for pixels in (decode_rgb(read_bytes(tmp_path / "phone.jpg"), "phone.jpg").permute(1, 2, 0).numpy(),
                   np.asarray(load_image(tmp_path / "phone.jpg"))):
        assert pixels.shape == upright.shape == (40, 20, 3)
        assert np.abs(pixels.astype(int) - upright).mean() < 8  # red on top after the turn, as viewed
    # a 16-bit grey ramp keeps its range (0..65535 -> 0..255), not clipped to white
    ramp = (np.linspace(0, 65535, 64, dtype=np.uint16)[None].repeat(8, axis=0))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    for pixels in (decode_rgb(read_bytes(tmp_path / "deep.png"), "deep.png")[0].numpy(),
                   np.asarray(load_image(tmp_path / "deep.png"))[..., 0]):
        np.testing.assert_array_equal(pixels[0], (ramp[0] >> 8).astype(np.uint8))


# ---------------------------------------------------------------- the catalogue in the README
def test_readme_reliability_table_covers_every_case_with_tests_that_exist():
    import ast
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Reliability\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(line.split("|")[1]) for line in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        named, file = [], None
        for match in re.finditer(r"`(?:(test_\w+\.py))?::(test_\w+)`", row):
            file = match.group(1) or file
            named.append((file, match.group(2)))
        assert named, row
        for file, test in named:
            tree = ast.parse((REPO / "tests" / file).read_text())
            assert test in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, (file, test)
