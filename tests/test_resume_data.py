"""A resumed run continues the checkpoint's own training: the same data and training stream, or a one-line
error that leaves no run folder; odd training data (duplicate rows, a city twice) are not counted twice;
checkpoints of the original MixVPR code (Lightning 1.x) validate, and are refused for training."""
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.utilities.migration.migration import _get_fit_loop_initial_state_1_6_0

from dataloaders.datamodule import VPRDataModule
from dataloaders.gsv_cities import GSVCitiesDataset
from main import VPRModel, main
from models import read_checkpoint
from tiny_cli import tiny_cli_args
from utils.errors import CheckpointError, ConfigError, DataError
from utils.losses import get_loss, get_miner

REPO = Path(__file__).resolve().parents[1]
FOUR = ["Synthville", "Pixelburg", "Rendertown", "Voxelton"]
FOUR_FLAG = "[" + ", ".join(FOUR) + "]"


def without(args: list[str], *flags: str) -> list[str]:
    """``args`` less the given flags and their values."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        else:
            out.append(a)
    return out


def versions(logs: Path) -> list[str]:
    """The run folders under ``logs`` (any run name)."""
    return sorted(str(p.relative_to(logs)) for p in logs.glob("*/version_*"))


def copy_gsv(synthetic, dest: Path) -> Path:
    """A copy of the tiny GSV-Cities root at ``dest``: the same data at another path."""
    shutil.copytree(synthetic["gsv_cities"], dest)
    return dest


@pytest.fixture(scope="module")
def four_cities(synthetic, tmp_path_factory) -> Path:
    """last.ckpt of a tiny one-epoch run (2 steps) on the four synthetic cities."""
    logs = tmp_path_factory.mktemp("four_cities")
    cli = main(tiny_cli_args(synthetic, logs) + ["--data.cities", FOUR_FLAG])
    return Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"


# ---------------------------------------------------------------- 4. resuming on other data
def test_checkpoint_stores_the_data_settings_and_the_training_data_fingerprint(four_cities):
    checkpoint = torch.load(four_cities, weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"]["cities"] == FOUR
    stream = checkpoint["VPRDataModule"]["training_data"]
    assert stream["cities"] == FOUR and len(stream["places"]) == len(stream["images"]) == 4
    assert sum(stream["images"]) == len(GSVCitiesDataset(Path(checkpoint["datamodule_hyper_parameters"]["gsv_root"]),
                                                         FOUR).files)


def test_resume_refuses_training_stream_settings_given_otherwise(synthetic, tmp_path, four_cities):
    args = tiny_cli_args(synthetic, tmp_path, epochs=2) + ["--data.cities", FOUR_FLAG, "--ckpt_path", str(four_cities)]
    with pytest.raises(ConfigError, match=r"batch_size=6 given, the checkpoint has 4(.|\n)*--model.init_from"):
        main(args + ["--data.batch_size", "6"])
    with pytest.raises(ConfigError, match=r"img_per_place=3 given, the checkpoint has 4; seed=1 given, the checkpoint "
                                          r"has 0\."):
        main(args + ["--data.seed", "1", "--data.img_per_place", "3", "--data.min_img_per_place", "4"])
    assert versions(tmp_path) == []


def test_resume_refuses_other_cities_in_the_cli_and_the_trainer(synthetic, tmp_path, four_cities):
    # the command line: the tiny run's two cities, not the checkpoint's four
    with pytest.raises(ConfigError, match=r"cities \[Synthville, Pixelburg, Rendertown, Voxelton\] in the checkpoint, "
                                          r"\[Synthville, Pixelburg\] given(.|\n)*--model.init_from"):
        main(tiny_cli_args(synthetic, tmp_path, epochs=2) + ["--ckpt_path", str(four_cities)])
    assert versions(tmp_path) == []
    # Lightning's own Trainer, without the command line's checks
    model = VPRModel(**read_checkpoint(four_cities)[1])
    data = VPRDataModule(gsv_root=str(synthetic["gsv_cities"]), cities=FOUR[:3], batch_size=4, image_size=(32, 32),
                         rand_augment_ops=0, num_workers=0, val_sets=[])
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ConfigError, match=r"Voxelton\] in the checkpoint, \[Synthville, Pixelburg, Rendertown\] given"):
        trainer.fit(model, data, ckpt_path=four_cities)
    assert trainer.global_step == 0


def image_name(row) -> str:
    """The image file a GSV-Cities CSV row names."""
    return (f"{row.city_id}_{int(row.place_id):07d}_{int(row.year):04d}_{int(row.month):02d}_{int(row.northdeg):03d}_"
            f"{row.lat}_{row.lon}_{row.panoid}.jpg")


def test_resume_refuses_the_same_cities_with_other_places_or_images(synthetic, tmp_path, four_cities):
    root = copy_gsv(synthetic, tmp_path / "gsv")
    args = tiny_cli_args(synthetic, tmp_path / "logs", epochs=2) + [
        "--data.cities", FOUR_FLAG, "--data.gsv_root", str(root), "--ckpt_path", str(four_cities)]
    csv = root / "Dataframes" / "Voxelton.csv"
    rows = pd.read_csv(csv, dtype=str, keep_default_na=False)
    before = GSVCitiesDataset(root, ["Voxelton"])
    # one place fewer
    rows[rows.place_id != rows.place_id.iloc[0]].to_csv(csv, index=False)
    after = GSVCitiesDataset(root, ["Voxelton"])
    assert after.num_places == before.num_places - 1
    with pytest.raises(ConfigError, match=rf"Voxelton: {before.num_places} places of {before.num_images} images in the "
                                          rf"checkpoint, {after.num_places} of {after.num_images} given"):
        main(args)
    # the same counts, another image: a row's panoid changed and its file renamed to match
    old = image_name(rows.iloc[0])
    rows.loc[0, "panoid"] = "renamed"
    rows.to_csv(csv, index=False)
    (root / "Images" / "Voxelton" / old).rename(root / "Images" / "Voxelton" / image_name(rows.iloc[0]))
    with pytest.raises(ConfigError, match=r"Voxelton: the same counts but other image files"):
        main(args)
    assert versions(tmp_path / "logs") == []


def test_resume_from_a_moved_copy_of_the_data_continues_and_notes_only_real_differences(synthetic, tmp_path,
                                                                                        four_cities, capsys):
    root = copy_gsv(synthetic, tmp_path / "moved")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  batch_size: 6\n")  # a config file that says otherwise: the checkpoint's is taken
    args = without(tiny_cli_args(synthetic, tmp_path / "logs", epochs=2), "--data.batch_size")
    capsys.readouterr()
    cli = main(args + ["--config", str(recipe), "--data.cities", FOUR_FLAG, "--data.gsv_root", str(root),
                       "--data.eval_batch_size", "7", "--ckpt_path", str(four_cities)])
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 4
    assert cli.datamodule.hparams.batch_size == 4 and cli.datamodule.hparams.eval_batch_size == 7
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "batch_size=4 (settings said 6)" in notes[0]
    assert "miner_config" not in notes[0] and "gsv_root" not in notes[0]


def test_a_resume_that_fails_before_its_first_step_leaves_no_run_folder(synthetic, tmp_path, four_cities):
    # an unreadable validation image stops the validation before training, after the step count was restored
    msls = tmp_path / "msls"
    shutil.copytree(synthetic["msls"], msls)
    image = sorted((msls / "train_val").rglob("*.jpg"))[0]  # an MSLS-val image (test/ holds MSLS-test)
    image.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=image.name):
        main(tiny_cli_args(synthetic, tmp_path / "logs", epochs=2) + [
            "--data.cities", FOUR_FLAG, "--data.msls_root", str(msls), "--ckpt_path", str(four_cities)])
    assert versions(tmp_path / "logs") == []


def test_resume_on_other_data_stops_every_process_of_a_ddp_run(synthetic, tmp_path, four_cities):
    # two CPU processes (gloo) started by Lightning from the command line: both check, neither waits for the other
    logs = tmp_path / "logs"
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), *tiny_cli_args(synthetic, logs, epochs=2),
                           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--ckpt_path", str(four_cities)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    # each process says it once and exits (their lines may come in any order, each written whole)
    assert proc.stderr.count("in the checkpoint, [Synthville, Pixelburg] given") == 2, proc.stderr[-3000:]
    assert versions(logs) == []


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
    from pytorch_metric_learning.reducers import SumReducer
    assert type(get_loss("MultiSimilarityLoss", distance="CosineSimilarity").distance) is CosineSimilarity
    assert type(get_loss("MultiSimilarityLoss", reducer="SumReducer").reducer) is SumReducer
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


# ---------------------------------------------------------------- 14. checkpoints of the original MixVPR code
ORIGINAL_AGG = {"in_channels": 256, "in_h": 4, "in_w": 4, "out_channels": 16, "mix_depth": 1, "mlp_ratio": 1,
                "out_rows": 2}


def original_checkpoint(path: Path, weights_only: bool) -> dict:
    """A checkpoint shaped as the original MixVPR main.py writes it (pytorch-lightning 1.8.3): its VPRModel's
    constructor arguments as hyper_parameters (no image_size: the original derives nothing, its MixVPR is built for
    in_h x in_w maps), its datamodule's, the 1.x loop state; ModelCheckpoint(save_weights_only=True) as there, or a
    full checkpoint (one SGD parameter group over all parameters, a MultiStepLR, the 16-bit scaler). Here
    ResNet18 cropped at layer4 (stride 16) with 4 x 4 maps: 64 x 64 images. Returns its state_dict."""
    hparams = dict(backbone_arch="resnet18", pretrained=True, layers_to_freeze=2, layers_to_crop=[4], agg_arch="MixVPR",
                   agg_config=ORIGINAL_AGG, lr=0.05, optimizer="sgd", weight_decay=0.001, momentum=0.9,
                   warmpup_steps=650, milestones=[5, 10, 15, 25, 45], lr_mult=0.3, loss_name="MultiSimilarityLoss",
                   miner_name="MultiSimilarityMiner", miner_margin=0.1, faiss_gpu=False)
    torch.manual_seed(0)
    model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="MixVPR", agg_config=ORIGINAL_AGG)
    fit_loop = _get_fit_loop_initial_state_1_6_0()  # Lightning's record of the 1.6 - 1.9 loop state
    fit_loop["epoch_progress"]["current"].update(completed=3, processed=3, ready=3, started=3)
    # the validate, test and predict loops of 1.x: the state of the fit loop's validation loop
    evaluation = {k.removeprefix("epoch_loop.val_loop."): v for k, v in fit_loop.items()
                  if k.startswith("epoch_loop.val_loop.")}
    loops = {"fit_loop": fit_loop, **{f"{name}_loop": dict(evaluation) for name in ("validate", "test", "predict")}}
    checkpoint = {
        "epoch": 2, "global_step": 1200, "pytorch-lightning_version": "1.8.3", "state_dict": model.state_dict(),
        "loops": loops, "hparams_name": "kwargs", "hyper_parameters": hparams,
        "datamodule_hparams_name": "kwargs",
        "datamodule_hyper_parameters": dict(
            batch_size=120, img_per_place=4, min_img_per_place=4, shuffle_all=False, image_size=(320, 320),
            num_workers=28, show_data_stats=True, cities=FOUR, mean_std={"mean": [0.485, 0.456, 0.406],
                                                                         "std": [0.229, 0.224, 0.225]},
            batch_sampler=None, random_sample_from_each_place=True, val_set_names=["pitts30k_val", "msls_val"])}
    if not weights_only:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.001, momentum=0.9)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=hparams["milestones"], gamma=0.3)
        scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                  "_growth_tracker": 0}  # precision=16 there
        checkpoint.update(callbacks={}, optimizer_states=[optimizer.state_dict()],
                          lr_schedulers=[schedule.state_dict()], NativeMixedPrecisionPlugin=scaler)
    torch.save(checkpoint, path)
    return model.state_dict()


def original_args(synthetic, logs: Path) -> list[str]:
    """The tiny run's arguments without an aggregator or image size: the demo recipe's (48 x 64) apply."""
    return without(tiny_cli_args(synthetic, logs), "--model.agg_config", "--data.image_size")


def test_original_checkpoint_validates_at_the_image_size_of_its_maps(synthetic, tmp_path, capsys):
    path = tmp_path / "original.ckpt"
    state = original_checkpoint(path, weights_only=True)
    cli = main(["validate", *original_args(synthetic, tmp_path / "logs"), "--ckpt_path", str(path)])
    assert cli.model.image_size == (64, 64) and cli.datamodule.eval_image_size == (64, 64)
    torch.testing.assert_close(cli.model.state_dict(), state)
    printed = capsys.readouterr()
    assert "Recall@K (%) on pitts30k_val" in printed.out
    assert "image_size=[64, 64] (settings said [48, 64])" in printed.err
    cli = main(["test", *original_args(synthetic, tmp_path / "logs"), "--ckpt_path", str(path),
                "--data.test_sets", "[pitts30k_test]"])
    assert cli.model.image_size == (64, 64) and "Recall@K (%) on pitts30k_test" in capsys.readouterr().out


@pytest.mark.parametrize("weights_only", [True, False])
def test_fit_from_an_original_checkpoint_is_refused_before_anything_is_written(synthetic, tmp_path, weights_only):
    path = tmp_path / "original.ckpt"
    original_checkpoint(path, weights_only)
    logs = tmp_path / "logs"
    for extra in ([], ["--data.image_size", "[64, 64]"]):
        with pytest.raises(CheckpointError, match=rf"{path} was written by Lightning 1.8.3(.|\n)*"
                                                  rf"--model.init_from {path}"):
            main([*original_args(synthetic, logs), "--ckpt_path", str(path), *extra])
    assert not logs.exists() or not list(logs.rglob("*"))


def test_fit_from_a_weights_only_checkpoint_is_refused(synthetic, tmp_path, four_cities):
    checkpoint = torch.load(four_cities, weights_only=True)
    for key in ("optimizer_states", "lr_schedulers", "callbacks"):
        del checkpoint[key]
    path = tmp_path / "weights_only.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=rf"{path} holds weights only(.|\n)*--model.init_from {path}"):
        main(tiny_cli_args(synthetic, tmp_path / "logs", epochs=2) + ["--data.cities", FOUR_FLAG,
                                                                      "--ckpt_path", str(path)])
    assert versions(tmp_path / "logs") == []


def test_resume_with_another_seed_everything_is_refused(synthetic, tmp_path):
    # the per-step random draws (dropout, the device's augmentation) are a function of seed_everything's seed
    from main import main
    from tiny_cli import tiny_cli_args
    from utils.errors import ConfigError

    first = main(tiny_cli_args(synthetic, tmp_path, epochs=1, name="seeded") + ["--trainer.num_sanity_val_steps", "0"])
    last = Path(first.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    args = tiny_cli_args(synthetic, tmp_path, epochs=2, name="seeded") + [
        "--trainer.num_sanity_val_steps", "0", "--ckpt_path", str(last)]
    with pytest.raises(ConfigError, match=r"seed_everything=1 given, the checkpoint's run has 0(.|\n)*--model.init_from"):
        main(args + ["--seed_everything", "1"])
    assert sorted(p.name for p in (tmp_path / "seeded").glob("version_*")) == ["version_0"]
    assert main(args).trainer.global_step == 4
