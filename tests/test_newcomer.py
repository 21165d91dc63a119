"""The newcomer's path (issue 18): every command does what the README says, says where its results went, and
nothing half-starts. Each test follows a step a new user takes, on the tiny synthetic data."""
import contextlib
import importlib.util
import io
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import eval as eval_cli
import retrieve
from main import main
from models.export import parse_args as export_args
from tiny_cli import tiny_cli_args
from utils.errors import ConfigError, DataError, NotFoundError
from utils.plot_metrics import epochs_trained, read_history
from utils.plot_metrics import main as plot_metrics_main
from utils.visualize import _fit, image_name, labelled_ticks, recall_curves_figure, retrieval_figure

REPO = Path(__file__).resolve().parents[1]


def synthetic_dir(synthetic: dict) -> Path:
    """The folder the tiny synthetic data sets were generated in (``--data.synthetic_dir``)."""
    return Path(synthetic["pitts"]).parents[1]


def demo_flags(synthetic: dict, logs: Path, *extra: str) -> list[str]:
    """Flags a newcomer adds to ``python main.py`` (no --config): the tiny synthetic data, shortened."""
    return ["--data.synthetic_dir", str(synthetic_dir(synthetic)), "--data.synthetic_scale", "tiny",
            "--data.batch_size", "8", "--data.num_workers", "0", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--logs_dir", str(logs), *extra]


def run(args: list[str], function=main):
    """``function(args)`` with its printed output: (result, stdout, stderr and Lightning's log messages)."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)  # Lightning's handler holds the stderr of its import time
    lightning = logging.getLogger("lightning")
    lightning.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            result = function(args)
    finally:
        lightning.removeHandler(handler)
    return result, out.getvalue(), err.getvalue()


def versions(folder: Path) -> list[str]:
    """Every version folder under ``folder``, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("version_*")) if Path(folder).exists() else []


def summary_paths(printed: str) -> list[Path]:
    """The files a command's closing summary names (``Run folder: ...`` and the lines under it)."""
    lines = printed[printed.index("Run folder: "):].splitlines()
    paths = [Path(lines[0].split(": ", 1)[1])]
    for line in lines[1:]:
        if not line.startswith("  "):
            break
        paths += [Path(p) for p in re.findall(r"(\S+\.(?:ckpt|csv|md|yaml|txt))", line)]
    return paths


@pytest.fixture(scope="module")
def demo(synthetic, tmp_path_factory):
    """``python main.py <flags>`` without --config, one epoch of two steps: (cli, stdout, logs folder)."""
    logs = tmp_path_factory.mktemp("demo")
    cli, printed, err = run(demo_flags(synthetic, logs))
    return cli, printed, logs, err


@pytest.fixture(scope="module")
def evaluated(demo, synthetic, tmp_path_factory):
    """``validate`` and ``test`` of the demo's last.ckpt: {command: (cli, stdout, stderr)}."""
    logs = tmp_path_factory.mktemp("evaluated")
    ckpt = str(demo[2] / "synthetic_demo" / "version_0" / "checkpoints" / "last.ckpt")
    return {command: run([command, *demo_flags(synthetic, logs), "--ckpt_path", ckpt,
                          "--data.test_sets", "[pitts30k_test, msls_val]"]) for command in ("validate", "test")}


# ---------------------------------------------------------------- 1. flags without --config change the demo
def test_flags_without_a_config_change_the_demo_recipe(demo):
    cli, _, logs, _ = demo
    assert cli.model.hparams.backbone_arch == "resnet18" and cli.model.hparams.optimizer == "adamw"  # the demo's
    assert cli.trainer.max_epochs == 1 and cli.datamodule.hparams.batch_size == 8  # the flags'
    assert type(cli.trainer.accelerator).__name__ == "CPUAccelerator"
    assert versions(logs) == ["synthetic_demo/version_0"]


def test_recipe_asking_for_a_gpu_on_a_machine_without_one_is_one_line_naming_accelerator_cpu(synthetic, tmp_path,
                                                                                            monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["--config", str(REPO / "configs" / "mixvpr_resnet50_4096.yaml"), "--data.synthetic", "true",
            *demo_flags(synthetic, tmp_path)]
    with pytest.raises(ConfigError, match=r"ask for a GPU .* add --trainer.accelerator cpu --trainer.precision 32-true"):
        main(args)
    assert versions(tmp_path) == []


# ---------------------------------------------------------------- 2. --help shows the settings
def test_help_lists_the_settings_and_only_the_commands_that_work(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    printed = capsys.readouterr().out
    assert stop.value.code == 0
    assert all(flag in printed for flag in ("--data.batch_size", "--model.lr", "--trainer.max_epochs", "--ckpt_path"))
    assert "Without --config the settings are the demo's" in " ".join(printed.split())
    assert not re.search(r"^\s+predict\s", printed, re.MULTILINE) and "{fit,validate,test,predict}" not in printed
    with pytest.raises(ConfigError, match=r"unknown command 'predict': main.py runs fit .* validate or test"):
        main(["predict"])


# ---------------------------------------------------------------- 3. a flag takes effect or is refused
def test_faiss_gpu_without_a_gpu_faiss_is_one_line_before_anything_is_written(demo, synthetic, tmp_path, monkeypatch):
    import faiss
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)  # as on a machine without a GPU
    ckpt = str(demo[2] / "synthetic_demo" / "version_0" / "checkpoints" / "last.ckpt")
    images = str(synthetic["pitts"] / "queries_real")
    for flag in ("--faiss_gpu", "--model.faiss_gpu"):  # training's flag name means the same here
        with pytest.raises(ConfigError, match=rf"{flag} true: this faiss .* drop the flag"):
            eval_cli.main(["--checkpoint", ckpt, "--benchmarks", "[pitts30k_val]", "--data.pitts_root",
                           str(synthetic["pitts"]), "--out_dir", str(tmp_path / "eval"), flag, "true"])
        with pytest.raises(ConfigError, match=rf"{flag} true: this faiss"):
            retrieve.main(["--checkpoint", ckpt, "--database", images, "--queries", images,
                           "--out_dir", str(tmp_path / "retrieve"), flag, "true"])
    with pytest.raises(ConfigError, match=r"--model.faiss_gpu true: this faiss"):
        main(demo_flags(synthetic, tmp_path / "logs", "--model.faiss_gpu", "true"))
    assert versions(tmp_path) == []


def test_training_flags_that_the_evaluation_commands_do_not_use_are_refused_by_name():
    base = ["--checkpoint", "x.ckpt", "--benchmarks", "[pitts30k_test]"]
    with pytest.raises(ConfigError, match=r"eval.py does not use --model.lr: it is a setting of training"):
        eval_cli.parse_args([*base, "--model.lr", "0.1"])
    with pytest.raises(ConfigError, match=r"--data.batch_size \(use --batch_size\), --trainer.max_epochs"):
        eval_cli.parse_args([*base, "--data.batch_size", "8", "--trainer.max_epochs", "3"])
    with pytest.raises(ConfigError, match=r"retrieve.py does not use --data.pitts_root"):
        retrieve.parse_args(["--checkpoint", "x.ckpt", "--database", "db", "--queries", "q", "--data.pitts_root", "/p"])
    with pytest.raises(ConfigError, match=r"models.export does not use --data.skip_unreadable"):
        export_args(["--checkpoint", "x.ckpt", "--format", "onnx", "--output", "m.onnx",
                     "--data.skip_unreadable", "true"])
    # a recipe's training settings are accepted (any recipe can be given); the architecture flags take effect
    cfg = eval_cli.parse_args([*base, "--config", str(REPO / "configs" / "mixvpr_resnet50_4096.yaml"),
                               "--model.agg_arch", "GeM", "--data.pitts_root", "/p"])
    assert cfg.model.agg_arch == "GeM" and cfg.trainer["max_epochs"] == 80


# ---------------------------------------------------------------- 4. failed starts leave no folder
def test_failed_starts_of_every_command_leave_no_folder(synthetic, tmp_path):
    with pytest.raises(NotFoundError, match="missing.ckpt"):
        eval_cli.main(["--checkpoint", str(tmp_path / "missing.ckpt"), "--benchmarks", "[pitts30k_val]",
                       "--data.pitts_root", str(synthetic["pitts"]), "--out_dir", str(tmp_path / "eval")])
    # a validation over part of its sets is refused with the settings, before the sanity validation
    with pytest.raises(ConfigError, match=r"--trainer.limit_val_batches 2: recall@K needs every database image .*"
                                          r"--trainer.check_val_every_n_epoch N"):
        main(tiny_cli_args(synthetic, tmp_path) + ["--trainer.limit_val_batches", "2"])
    with pytest.raises(ConfigError, match=r"--trainer.limit_test_batches 0.5"):
        main(["test", *tiny_cli_args(synthetic, tmp_path), "--trainer.limit_test_batches", "0.5"])
    # any setting the Trainer itself refuses, once the run folder was reserved for it
    with pytest.raises(ConfigError, match=r"trainer settings: You selected an invalid strategy name: `strategy='nons"):
        main(tiny_cli_args(synthetic, tmp_path) + ["--trainer.strategy", "nonsense"])
    assert versions(tmp_path) == []


# ---------------------------------------------------------------- 5. fewer places than a batch
def test_default_batch_larger_than_the_tiny_synthetic_places_is_refused_up_front(synthetic, tmp_path):
    flags = ["--data.synthetic_dir", str(synthetic_dir(synthetic)), "--data.synthetic_scale", "tiny",
             "--trainer.max_epochs", "1", "--logs_dir", str(tmp_path)]
    with pytest.raises(ConfigError, match=r"data.batch_size=32 places per step, but the training set has 24 places "
                                          r".*--data.batch_size 24 or less"):
        main(flags)
    assert versions(tmp_path) == []


# ---------------------------------------------------------------- 6. say where things went
def test_fit_ends_by_printing_its_run_folder_and_the_files_it_wrote(demo):
    _, printed, logs, _ = demo
    paths = summary_paths(printed)
    assert paths[0].resolve() == (logs / "synthetic_demo" / "version_0").resolve()
    names = {p.name for p in paths[1:]}
    assert {"last.ckpt", "metrics.csv", "config.yaml"} <= names and any(n.startswith("epoch01-") for n in names)
    assert all(p.exists() for p in paths)
    assert "best checkpoint: " in printed and "python -m utils.plot_metrics" in printed


def test_validate_and_test_runs_go_to_their_own_folders_and_say_where(evaluated):
    for command, (cli, printed, _) in evaluated.items():
        folder = Path(cli.trainer.log_dir)
        assert (folder.parent.parent.name, folder.parent.name, folder.name) == ("synthetic_demo", command, "version_0")
        assert summary_paths(printed)[0].resolve() == folder.resolve()
        assert all(p.exists() for p in summary_paths(printed))
    test_folder = Path(evaluated["test"][0].trainer.log_dir)
    assert f"recall table: {test_folder / 'recalls.md'}" in evaluated["test"][1]


# ---------------------------------------------------------------- 7. one numbering, one unit
def test_checkpoint_names_count_epochs_from_one_and_give_recall_in_percent(demo):
    cli, printed, logs, _ = demo
    names = sorted(p.name for p in (logs / "synthetic_demo" / "version_0" / "checkpoints").glob("*.ckpt"))
    r1 = 100 * float(cli.trainer.callback_metrics["pitts30k_val/R1"])
    assert names == [f"epoch01-pitts30k_val_R1={r1:.2f}.ckpt", "last.ckpt"]
    assert "Recall@K (%) on pitts30k_val after epoch 1" in printed  # the number the tables use


# ---------------------------------------------------------------- 8. no noise
def test_commands_print_no_spurious_note_framework_deprecation_or_tip(evaluated, demo):
    assert "GPU available: False" in demo[3]  # Lightning's messages are seen here
    for printed, err in [(demo[1], demo[3])] + [(out, err) for _, out, err in evaluated.values()]:
        assert "note:" not in err and "miner_config" not in err
        assert "deprecated" not in err + printed and "Tip:" not in err + printed


def test_recalls_md_names_the_checkpoint_it_tested(evaluated, demo, synthetic, tmp_path):
    cli = evaluated["test"][0]
    table = (Path(cli.trainer.log_dir) / "recalls.md").read_text()
    ckpt = str(demo[2] / "synthetic_demo" / "version_0" / "checkpoints" / "last.ckpt")
    assert table.splitlines()[2].startswith(f"| {ckpt} | {cli.model.descriptor_dim} |")
    assert "this model" not in table
    # eval.py's short row label ("last") is tied to its file under the table
    run(["--checkpoint", ckpt, "--benchmarks", "[pitts30k_val]", "--data.pitts_root", str(synthetic["pitts"]),
         "--out_dir", str(tmp_path), "--progress", "false"], eval_cli.main)
    table = (tmp_path / "version_0" / "recalls.md").read_text()
    assert table.splitlines()[2].startswith("| last |") and f"Models: last = {ckpt}." in table


def test_resumed_run_is_not_before_training_and_its_curves_keep_the_earlier_learning_rates(demo, synthetic,
                                                                                          tmp_path):
    first = demo[2] / "synthetic_demo" / "version_0"
    cli, printed, _ = run(demo_flags(synthetic, tmp_path, "--trainer.max_epochs", "2",
                                     "--ckpt_path", str(first / "checkpoints" / "last.ckpt")))
    assert "before training" not in printed
    assert f"Recall@K (%) on pitts30k_val when resuming from {first / 'checkpoints' / 'last.ckpt'} (step 2)" in printed
    history = read_history(Path(cli.trainer.log_dir))
    assert history.dropna(subset=["lr/pg1"])["step"].tolist() == [0, 1, 2, 3]  # both runs' learning rates
    assert history.dropna(subset=["loss"])["step"].tolist() == [0, 1, 2, 3]
    recalls = history.dropna(subset=["pitts30k_val/R1"])
    assert epochs_trained(recalls).tolist() == [0, 1, 2]  # the baseline once, then after epochs 1 and 2


# ---------------------------------------------------------------- 9. pictures and curves
def test_untrained_baseline_is_in_metrics_csv_and_the_curves(demo):
    _, printed, logs, _ = demo
    run_folder = logs / "synthetic_demo" / "version_0"
    metrics = pd.read_csv(run_folder / "metrics.csv")
    baseline = metrics[metrics["epochs_trained"] == 0]
    table = printed[printed.index("Recall@K (%) on pitts30k_val before training"):].splitlines()
    assert len(baseline) == 1 and f"{100 * baseline['pitts30k_val/R1'].item():.2f}" == table[4].split("|")[1].strip()
    assert baseline["msls_val/R1"].notna().all() and baseline["step"].tolist() == [0]
    history = read_history(run_folder)
    assert epochs_trained(history.dropna(subset=["msls_val/R1"])).tolist() == [0, 1]
    assert plot_metrics_main([str(run_folder)]).stat().st_size > 10_000


def test_plot_metrics_says_a_test_folder_has_nothing_to_plot(evaluated):
    folder = Path(evaluated["test"][0].trainer.log_dir)
    with pytest.raises(DataError, match=r"nothing to plot in .*test/version_0: it holds no training step, only one "
                                        r"evaluation .* recalls.md"):
        plot_metrics_main([str(folder)])
    assert not (folder / "curves.png").exists()


def test_folder_set_captions_show_coordinates_not_the_empty_name_fields(tmp_path):
    folder_name = "@585012.34@4477270.10@17@T@@@@00001@@@@@@@.jpg"
    assert image_name(folder_name, (585012.34, 4477270.10)) == "E 585012 N 4477270 17T"
    assert image_name("000/000123_pitch1_yaw1.jpg", (585012.34, 4477270.10)) == "000123_pitch1_yaw1.jpg"
    from PIL import Image, ImageDraw, ImageFont
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    assert _fit("E 585012 N 4477270 17T", draw, ImageFont.load_default(), 170) == "E 585012 N 4477270 17T"  # not cut
    photo = tmp_path / folder_name
    Image.new("RGB", (40, 30), (90, 90, 90)).save(photo)
    picture = retrieval_figure(photo, [photo], [True], ["#1 sim 0.900 3 m"], names=["E 1 N 2", "E 3 N 4"])
    assert picture.width > 2 * 160


def test_recall_curve_legend_is_clear_of_the_panels_and_k_labels_do_not_touch():
    ks = (1, 5, 10, 15, 20, 50, 100)
    curves = {b: {m: {k: min(1.0, 0.3 + 0.1 * i + 0.005 * k) for k in ks} for i, m in enumerate(("a", "bb", "ccc"))}
              for b in ("pitts30k_test", "msls_val")}
    assert labelled_ticks(ks) == [1, 5, 10, 20, 50, 100]
    figure = recall_curves_figure(curves)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legend = figure.legends[0].get_window_extent(renderer)
    for ax in figure.axes:
        assert not legend.overlaps(ax.get_tightbbox(renderer))  # under the panels, tick labels included
        labels = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) == 6 and all(a.x1 < b.x0 for a, b in zip(labels, labels[1:]))


# ---------------------------------------------------------------- 10. bench/model_costs.py
def test_model_costs_takes_the_flags_of_every_command_and_short_names(capsys):
    spec = importlib.util.spec_from_file_location("model_costs", REPO / "bench" / "model_costs.py")
    costs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(costs)
    costs.main(["--models", "resnet18-512", "--image_size", "[32, 32]", "--reps", "1", "--batch", "2",
                "--threads", "1", "--skip_onnx", "true", "--skip_distillation", "true"])
    rows = [line.strip("|").split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert [c.strip() for c in rows[0][:2]] == ["model", "description"]
    assert [c.strip() for c in rows[2][:2]] == ["resnet18-512", "Lightweight-MixVPR student"]
    assert all(" " not in name and "(" not in name for name in costs.MODELS)
    import argparse
    with pytest.raises(argparse.ArgumentError):
        costs.parse_args(["--skip-onnx"])


# ---------------------------------------------------------------- 11. cached descriptors are said to be
def test_eval_says_when_descriptors_came_from_the_cache_and_from_which_file(demo, synthetic, tmp_path):
    ckpt = str(demo[2] / "synthetic_demo" / "version_0" / "checkpoints" / "last.ckpt")
    args = ["--checkpoint", ckpt, "--benchmarks", "[pitts30k_val]", "--data.pitts_root", str(synthetic["pitts"]),
            "--out_dir", str(tmp_path), "--progress", "false"]
    _, first, _ = run(args, eval_cli.main)
    _, second, _ = run(args, eval_cli.main)
    assert "from the cache" not in first
    (line,) = [line for line in second.splitlines() if "from the cache" in line]
    cached = Path(re.search(r"from the cache (\S+\.npy)", line).group(1))
    assert cached.is_file() and cached.parent == tmp_path / "descriptors"
    assert np.load(cached).shape[0] == int(re.search(r"descriptors of (\d+) image", line).group(1))
