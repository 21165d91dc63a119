"""Exported models (ONNX, TorchScript) compute the same descriptors as the PyTorch model."""
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch

from main import load_model
from models import VPRModel
from models.export import (ExportMismatchError, export_onnx, export_program, export_torchscript, main,
                           read_preprocessing, verify_export)
from utils.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(backbone_arch="resnet18", pretrained=False, layers_to_crop=[4], agg_arch="MixVPR",
            agg_config={"out_channels": 16, "out_rows": 4}, image_size=(64, 64))
ARCH_FLAGS = ["--model.backbone_arch", "resnet18", "--model.layers_to_crop", "[4]", "--model.agg_arch", "MixVPR",
              "--model.agg_config", '{"out_channels": 16, "out_rows": 4}', "--data.image_size", "[64, 64]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model with non-trivial weights, saved as a Lightning-style checkpoint and as a bare state_dict."""
    torch.manual_seed(0)
    model = VPRModel(**TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.train()
    model(torch.randn(4, 3, 64, 64))  # move batch-norm running statistics off their defaults
    model.eval()
    folder = tmp_path_factory.mktemp("export")
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, folder / "model.ckpt")
    torch.save(model.state_dict(), folder / "weights.pth")
    return model.net, folder


def test_onnx_dynamic_batch_round_trip(trained, tmp_path):
    model, _ = trained
    path = export_onnx(model, tmp_path / "model.onnx", (64, 64), dynamic_batch=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "images"
    assert session.get_inputs()[0].shape == ["batch", 3, 64, 64]
    assert session.get_outputs()[0].shape == ["batch", model.descriptor_dim]
    assert verify_export(model, path, (64, 64), batch_sizes=(1, 2, 5)) < 1e-4
    # the file says how to feed it
    meta = read_preprocessing(path)
    assert meta["image_size"] == [64, 64] and meta["mean"] == list(model.mean) and meta["std"] == list(model.std)
    assert meta["descriptor_dim"] == model.descriptor_dim


def test_torch_export_program_round_trip_with_its_preprocessing(trained, tmp_path):
    model, _ = trained
    path = export_program(model, tmp_path / "model.pt2", (64, 64), dynamic_batch=True)
    assert verify_export(model, path, (64, 64), batch_sizes=(2, 5)) < 1e-4
    assert read_preprocessing(path)["image_size"] == [64, 64]


def test_onnx_static_batch_has_fixed_input_shape(trained, tmp_path):
    model, _ = trained
    path = export_onnx(model, tmp_path / "model.onnx", (64, 64), dynamic_batch=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 64, 64]
    assert verify_export(model, path, (64, 64)) < 1e-4


@pytest.fixture(scope="module")
def torchscript_file(trained):
    model, folder = trained
    return export_torchscript(model, folder / "model.pt", (64, 64))


def test_torchscript_round_trip_any_batch(trained, torchscript_file):
    model, _ = trained
    assert verify_export(model, torchscript_file, (64, 64), batch_sizes=(2, 5)) < 1e-4
    assert not model.training
    assert read_preprocessing(torchscript_file)["descriptor_dim"] == model.descriptor_dim


def test_verify_export_fails_when_weights_differ(trained, torchscript_file):
    _, folder = trained
    path = torchscript_file
    changed = load_model(folder / "model.ckpt")
    with torch.no_grad():
        changed.aggregator.channel_proj.weight.add_(0.1)
    with pytest.raises(ExportMismatchError, match="not faithful"):
        verify_export(changed, path, (64, 64))


def test_cli_exports_lightning_checkpoint_to_onnx(trained, tmp_path, capsys):
    _, folder = trained
    output = tmp_path / "model.onnx"
    assert main(["--checkpoint", str(folder / "model.ckpt"), "--format", "onnx", "--output", str(output),
                 "--dynamic_batch", "true"]) == 0
    assert output.is_file()
    assert "max abs descriptor difference" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_cli_failed_verification_leaves_the_existing_file_alone(trained, tmp_path, capsys):
    _, folder = trained
    output = tmp_path / "model.pt"
    output.write_bytes(b"the deployed model")
    assert main(["--checkpoint", str(folder / "model.ckpt"), "--format", "torchscript", "--output", str(output),
                 "--tolerance", "-1"]) == 1
    assert "not faithful" in capsys.readouterr().err
    assert output.read_bytes() == b"the deployed model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_cli_bare_state_dict_takes_the_architecture_from_the_settings(trained, tmp_path):
    _, folder = trained
    args = ["--checkpoint", str(folder / "weights.pth"), "--format", "torchscript", "--output", str(tmp_path / "m.pt")]
    # without settings: the paper's ResNet50 model, which these weights do not fit; the error says what they fit
    with pytest.raises(CheckpointError, match=r"does not fit(.|\n)*--model.backbone_arch resnet18"):
        main(args)
    assert main(args + ARCH_FLAGS) == 0


def test_cli_wrong_image_size_for_mixvpr_is_reported(trained, tmp_path):
    _, folder = trained
    with pytest.raises(ConfigError, match="MixVPR was built for a 4 x 4 feature map"):
        main(["--checkpoint", str(folder / "model.ckpt"), "--format", "torchscript",
              "--output", str(tmp_path / "m.pt"), "--image_size", "[96, 96]"])
    with pytest.raises(ConfigError, match=r"must end in \.onnx"):
        main(["--checkpoint", str(folder / "model.ckpt"), "--format", "onnx", "--output", str(tmp_path / "m.pt")])


def test_module_runs_from_command_line(trained, tmp_path):
    _, folder = trained
    result = subprocess.run([sys.executable, "-m", "models.export", "--checkpoint", str(folder / "model.ckpt"),
                             "--format", "torchscript", "--output", str(tmp_path / "m.pt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "max abs descriptor difference" in result.stdout
    # a user error is one line on stderr and exit status 2, no traceback
    result = subprocess.run([sys.executable, "-m", "models.export", "--checkpoint", str(tmp_path / "missing.ckpt"),
                             "--format", "torchscript", "--output", str(tmp_path / "m.pt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'missing.ckpt'}"
