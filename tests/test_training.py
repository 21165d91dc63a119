"""End to end on tiny synthetic data: fit + validate from the command line, resume, and DDP recall."""
import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from main import VPRModel, load_weights, main
from models import read_checkpoint
from tiny_cli import tiny_cli_args
from utils.errors import CheckpointError, ConfigError
from utils.plot_metrics import main as plot_metrics_main
from utils.plot_metrics import read_history

REPO = Path(__file__).resolve().parents[1]


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fit_validates_checkpoints_and_resumes_into_a_new_run_folder(synthetic, tmp_path, capsys):
    cli = main(tiny_cli_args(synthetic, tmp_path, epochs=2))
    printed = capsys.readouterr()
    assert "Recall@K (%) on pitts30k_val before training" in printed.out  # the untrained baseline
    assert "Recall@K (%) on pitts30k_val after epoch 2" in printed.out
    metrics = cli.trainer.callback_metrics
    assert {"pitts30k_val/R1", "pitts30k_val/R5", "pitts30k_val/R10", "msls_val/R1", "loss", "b_acc"} <= set(metrics)
    first = tmp_path / "synthetic_demo" / "version_0"
    ckpt_dir = first / "checkpoints"
    assert Path(cli.trainer.checkpoint_callback.dirpath) == ckpt_dir
    ckpts = sorted(p.name for p in ckpt_dir.glob("*.ckpt"))
    assert "last.ckpt" in ckpts and sum(n.startswith("epoch") for n in ckpts) == 2
    assert not [p for p in ckpt_dir.iterdir() if p.name.startswith(".")]
    assert (first / "metrics.csv").is_file() and list(first.glob("events.out.tfevents.*"))  # CSV and TensorBoard
    # the checkpoint rebuilds the model from its saved hyper-parameters and loads strictly
    state, hparams = read_checkpoint(ckpt_dir / "last.ckpt")
    model = load_weights(VPRModel(**hparams), state)
    assert model.descriptor_dim == 32 and tuple(hparams["image_size"]) == (32, 32)

    # resuming continues at the next epoch, from the saved step count, in a new folder that says where from
    before = files_of(first)
    resumed = main(tiny_cli_args(synthetic, tmp_path, epochs=3) + ["--ckpt_path", str(ckpt_dir / "last.ckpt")])
    assert resumed.trainer.current_epoch == 3 and resumed.trainer.global_step == 6
    second = tmp_path / "synthetic_demo" / "version_1"
    assert Path(resumed.trainer.checkpoint_callback.dirpath) == second / "checkpoints"
    assert yaml.safe_load((second / "config.yaml").read_text())["ckpt_path"] == str(ckpt_dir / "last.ckpt")
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    # the first run's logs, config and checkpoints are untouched
    assert files_of(first) == before
    # the curves of the resumed run continue the history of the first
    history = read_history(second)
    assert sorted(history["epoch"].dropna().astype(int).unique()) == [0, 1, 2]
    assert history["pitts30k_val/R1"].notna().sum() == 4  # the untrained baseline, then after epochs 1, 2 and 3
    picture = plot_metrics_main([str(second)])
    assert picture == second / "curves.png" and picture.stat().st_size > 10_000


def test_last_checkpoint_is_the_latest_epoch_when_the_monitored_recall_plateaus(synthetic, tmp_path):
    cli = main(tiny_cli_args(synthetic, tmp_path, epochs=3) + [
        "--checkpoint.monitor", "constant", "--checkpoint.save_top_k", "1", "--checkpoint.filename", "best-{epoch}",
        "--trainer.callbacks", '[{"class_path": "tiny_cli.ConstantMetric"}]'])
    folder = Path(cli.trainer.checkpoint_callback.dirpath)
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["best-1.ckpt", "last.ckpt"]  # epochs count from 1
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 2


def test_learning_rate_warms_up_per_step_then_decays_at_milestone_epochs(synthetic, tmp_path):
    cli = main(tiny_cli_args(synthetic, tmp_path, epochs=3) + [
        "--model.lr", "0.3", "--model.warmup_steps", "3", "--model.milestones", "[1]", "--model.lr_mult", "0.5",
        "--model.backbone_lr_mult", "0.1", "--trainer.callbacks", '[{"class_path": "tiny_cli.LearningRates"}]'])
    recorder = next(c for c in cli.trainer.callbacks if type(c).__name__ == "LearningRates")
    # two steps per epoch; warm-up factor (step + 1) / 3; x 0.5 from epoch 1; the backbone at 0.1 x lr
    expected = [0.1, 0.2, 0.15, 0.15, 0.15, 0.15]
    assert [round(lr, 6) for _, lr in recorder.seen] == expected
    assert [round(lr, 6) for lr, _ in recorder.seen] == [round(0.1 * e, 6) for e in expected]


def test_linear_lr_schedule_decays_per_step_to_its_end_factor_times_the_warm_up(synthetic, tmp_path):
    cli = main(tiny_cli_args(synthetic, tmp_path, epochs=3) + [
        "--model.lr", "0.5", "--model.warmup_steps", "2", "--model.milestones", "[]", "--model.lr_schedule", "linear",
        "--model.lr_end_factor", "0.2", "--model.lr_decay_steps", "4", "--model.backbone_lr_mult", "0.1",
        "--trainer.callbacks", '[{"class_path": "tiny_cli.LearningRates"}]'])
    recorder = next(c for c in cli.trainer.callbacks if type(c).__name__ == "LearningRates")
    # decay 1 - 0.8 * step / 4 down to 0.2 and no further, across epochs, x the warm-up (step + 1) / 2
    factors = [0.5 * 1.0, 0.8, 0.6, 0.4, 0.2, 0.2]
    assert [round(lr, 6) for _, lr in recorder.seen] == [round(0.5 * f, 6) for f in factors]
    assert [round(lr, 6) for lr, _ in recorder.seen] == [round(0.05 * f, 6) for f in factors]


def test_linear_lr_schedule_refuses_milestones_and_a_bad_end_factor():
    with pytest.raises(ConfigError, match=r"takes no milestones \(got \[5, 10, 15, 25, 45\]: set milestones to \[\]\)"):
        VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), lr_schedule="linear")
    with pytest.raises(ConfigError, match=r"0 <= lr_end_factor <= 1 \(got 1.5\)"):
        VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), lr_schedule="linear", milestones=[],
                 lr_end_factor=1.5)


def test_failed_starts_leave_no_run_folder(synthetic, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="GSV-Cities not found"):
        main(tiny_cli_args(synthetic, tmp_path) + ["--data.gsv_root", str(tmp_path / "missing")])
    assert not (tmp_path / "synthetic_demo").exists() or not list((tmp_path / "synthetic_demo").iterdir())

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="cannot load ImageNet weights"):
        main(tiny_cli_args(synthetic, tmp_path) + ["--model.pretrained", "true"])
    assert not list((tmp_path / "synthetic_demo").glob("version_*"))


@pytest.fixture(scope="module")
def two_epochs(synthetic, tmp_path_factory) -> Path:
    """last.ckpt of a tiny two-epoch run."""
    logs = tmp_path_factory.mktemp("two_epochs")
    cli = main(tiny_cli_args(synthetic, logs, epochs=2))
    return Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"


def test_resume_refuses_settings_that_conflict_with_the_checkpoint(synthetic, tmp_path, two_epochs):
    args = tiny_cli_args(synthetic, tmp_path, epochs=3) + ["--ckpt_path", str(two_epochs)]
    with pytest.raises(ConfigError, match=r"agg_arch='GeM' given, the checkpoint has 'MixVPR'"):
        main(args + ["--model.agg_arch", "GeM", "--model.agg_config", "{}"])
    with pytest.raises(ConfigError, match=r"lr=0.5 given, the checkpoint has 0.001(.|\n)*--model.init_from"):
        main(args + ["--model.lr", "0.5"])
    with pytest.raises(ConfigError, match=r"image_size"):
        main(args + ["--data.image_size", "[48, 48]"])
    assert not (tmp_path / "synthetic_demo").exists() or not list((tmp_path / "synthetic_demo").glob("version_*"))


def test_resume_may_change_how_the_same_computation_runs(synthetic, tmp_path, two_epochs):
    # memory layout and recomputation change no result: a resume may turn them on (e.g. to fit a smaller GPU)
    cli = main(tiny_cli_args(synthetic, tmp_path, epochs=3) + [
        "--ckpt_path", str(two_epochs), "--model.channels_last", "true", "--model.activation_checkpointing", "true"])
    assert cli.model.hparams.channels_last and cli.model.hparams.activation_checkpointing
    assert cli.trainer.current_epoch == 3


def test_validate_with_a_bare_state_dict_says_how_to_use_it(synthetic, tmp_path, two_epochs):
    bare = tmp_path / "weights.pth"
    torch.save(read_checkpoint(two_epochs)[0], bare)
    with pytest.raises(CheckpointError, match=r"bare state_dict(.|\n)*--model.init_from"):
        main(["validate", *tiny_cli_args(synthetic, tmp_path), "--ckpt_path", str(bare)])


def test_init_from_starts_a_new_run_from_weights_with_new_settings(synthetic, tmp_path, two_epochs):
    cli = main(tiny_cli_args(synthetic, tmp_path, epochs=1) + [
        "--model.init_from", str(two_epochs), "--model.lr", "0.0005", "--trainer.limit_train_batches", "0"])
    state, _ = read_checkpoint(two_epochs)
    # no step was trained: the weights are the checkpoint's, the settings the new ones
    torch.testing.assert_close(cli.model.state_dict()["aggregator.row_proj.weight"], state["aggregator.row_proj.weight"])
    assert cli.model.hparams.lr == 0.0005 and cli.trainer.global_step == 0


def test_validate_and_test_write_their_own_run_folders(synthetic, tmp_path, two_epochs, capsys):
    run = two_epochs.parent.parent
    before = files_of(run)
    main(["validate", *tiny_cli_args(synthetic, tmp_path), "--ckpt_path", str(two_epochs)])
    main(["test", *tiny_cli_args(synthetic, tmp_path), "--ckpt_path", str(two_epochs),
          "--data.test_sets", "[pitts30k_test, msls_val]"])
    printed = capsys.readouterr().out
    assert "Recall@K (%) on pitts30k_test" in printed and "Recall@K (%) on msls_val" in printed
    assert "DataLoader 1" not in printed  # each set's recall once, not once per dataloader column
    # the paper-style table, printed and written into the test run's folder
    header = "| Model | Dim | Pitts30k-test R@1 | R@5 | R@10 | MSLS-val R@1 | R@5 | R@10 |"
    assert header in printed
    assert (tmp_path / "synthetic_demo" / "test" / "version_0" / "recalls.md").read_text().splitlines()[0] == header
    assert files_of(run) == before
    # each in its own folder, apart from the training runs of the name
    folders = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("version_*"))
    assert folders == ["synthetic_demo/test/version_0", "synthetic_demo/validate/version_0"]
    for folder in folders:
        assert (tmp_path / folder / "metrics.csv").is_file()


def test_training_lowers_the_loss(synthetic):
    """A few SGD steps on one fixed batch reduce the multi-similarity loss (the gradients are wired)."""
    from dataloaders.gsv_cities import GSVCitiesDataset
    from dataloaders.synthetic import SYNTHETIC_CITIES
    from dataloaders.transforms import TrainTransform, normalize_batch
    torch.manual_seed(0)
    ds = GSVCitiesDataset(synthetic["gsv_cities"], SYNTHETIC_CITIES[:1], transform=TrainTransform((32, 32), 0))
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    model = VPRModel(backbone_arch="resnet18", agg_arch="GeM", image_size=(32, 32), miner_name="none")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        loss, _ = model.metric_loss(model(normalize_batch(batch[0].flatten(0, 1))), batch[1].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_ddp_recall_equals_single_process(synthetic, tmp_path):
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}"
        out.mkdir()
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "ddp_validate.py"), str(synthetic["pitts"]),
                               str(devices), str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = (np.load(out / "descriptors.npy"), json.loads((out / "recall.json").read_text()))
    np.testing.assert_allclose(results[2][0], results[1][0], atol=1e-5)
    assert results[2][1] == results[1][1]
    assert len(results[1][0]) % 2 == 1  # the odd count made the distributed sampler pad


def test_resume_loads_no_initial_weights_it_would_overwrite(synthetic, tmp_path, monkeypatch):
    # a cluster's compute node is often offline: resuming a pretrained (or init_from) run must not fetch
    # ImageNet weights or read the init_from file that the checkpoint's weights replace anyway
    from models.network import VPRNet

    calls = []
    monkeypatch.setattr(VPRNet, "load_pretrained", lambda net: calls.append("pretrained"))
    start = tmp_path / "start.ckpt"
    first = main(tiny_cli_args(synthetic, tmp_path, epochs=1, name="first") + ["--trainer.num_sanity_val_steps", "0"])
    torch.save(first.model.state_dict(), start)
    args = lambda epochs: tiny_cli_args(synthetic, tmp_path, epochs=epochs, name="pretrained") + [
        "--model.pretrained", "true", "--model.init_from", str(start), "--trainer.num_sanity_val_steps", "0"]
    run = main(args(1))
    # init_from wins over pretrained; the weights are loaded once the Trainer knows it is not resuming
    assert calls == [] and run.trainer.global_step == 2
    last = Path(run.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    start.unlink()
    resumed = main(args(2) + ["--ckpt_path", str(last)])
    assert calls == [] and resumed.trainer.global_step == 4
    plain = main(tiny_cli_args(synthetic, tmp_path, epochs=1, name="plain") + [
        "--model.pretrained", "true", "--trainer.num_sanity_val_steps", "0"])
    assert calls == ["pretrained"] and plain.trainer.global_step == 2
    last = Path(plain.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    main(tiny_cli_args(synthetic, tmp_path, epochs=2, name="plain") + [
        "--model.pretrained", "true", "--trainer.num_sanity_val_steps", "0", "--ckpt_path", str(last)])
    assert calls == ["pretrained"]
