"""int8 export: calibrated on training images, verified by descriptor agreement and recall, refused when it
loses too much or when the network is not one that quantises."""
import re

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from models import VPRModel
from models.export import main, read_preprocessing, run_export
from models.quantization import descriptor_agreement
from utils.errors import ConfigError

TINY = dict(backbone_arch="resnet18", pretrained=False, layers_to_crop=[4], agg_arch="MixVPR",
            agg_config={"out_channels": 16, "mix_depth": 1, "out_rows": 2}, image_size=(32, 32))


def tiny_checkpoint(folder, **settings):
    """A Lightning-style checkpoint of a randomly initialised tiny model with batch-norm statistics of images."""
    torch.manual_seed(0)
    model = VPRModel(**{**TINY, **settings})
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, *model.image_size))
    path = folder / "model.ckpt"
    torch.save({"state_dict": model.eval().state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return model.net, path


def data_flags(synthetic) -> list[str]:
    return ["--data.synthetic", "false", "--data.gsv_root", str(synthetic["gsv_cities"]),
            "--data.pitts_root", str(synthetic["pitts"]), "--data.msls_root", str(synthetic["msls"]),
            "--data.cities", "[Synthville, Pixelburg, Rendertown, Voxelton]",
            "--calibration_images", "24", "--held_out_images", "8"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("int8"))


@pytest.fixture(scope="module")
def exported(tiny, synthetic, tmp_path_factory):
    """The tiny model exported to int8 with the default calibration (the synthetic GSV-Cities images)."""
    net, ckpt = tiny
    output = tmp_path_factory.mktemp("int8_out") / "model.int8.onnx"
    status = main(["--checkpoint", str(ckpt), "--format", "onnx", "--quantize", "int8", "--output", str(output),
                   *data_flags(synthetic), "--max_recall_drop", "100"])
    return net, output, status


def test_int8_export_is_quantised_and_takes_the_float_models_descriptors(exported, synthetic):
    net, output, status = exported
    assert status == 0 and output.is_file()
    graph = onnx.load(str(output)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert int8_weights  # the convolutions' weights are stored as int8
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = net(images).numpy()
    got = run_export(output, images)  # any batch size
    assert got.shape == (5, net.descriptor_dim) and np.isfinite(got).all()
    assert descriptor_agreement(expected, got)["mean_cosine"] > 0.9


def test_int8_file_keeps_the_float_preprocessing_and_records_calibration_and_recall(exported, synthetic):
    net, output, _ = exported
    meta = read_preprocessing(output)
    assert meta["precision"] == "int8"
    assert meta["image_size"] == [32, 32] and meta["mean"] == list(net.mean) and meta["std"] == list(net.std)
    assert meta["descriptor_dim"] == net.descriptor_dim and meta["resize"] == "exact"
    calibration = meta["quantization"]["calibration"]
    assert calibration["count"] == 24 and calibration["held_out_count"] == 8
    assert "GSV-Cities training images" in calibration["source"] and str(synthetic["gsv_cities"]) in calibration["source"]
    verification = meta["quantization"]["verification"]
    assert set(verification["recall"]) == {"pitts30k_val", "msls_val"}  # the recipe's validation sets
    for recalls in verification["recall"].values():
        assert set(recalls) == {"float32", "int8"} and set(recalls["int8"]) == {"1", "5", "10"}
    assert 0 < verification["held_out"]["mean_cosine"] <= 1 + 1e-6
    assert verification["held_out"]["worst_cosine"] <= verification["held_out"]["mean_cosine"]


@pytest.fixture(scope="module")
def grey_images(tmp_path_factory):
    """A deliberately broken calibration: one grey image, every activation range is that image's."""
    folder = tmp_path_factory.mktemp("grey")
    for i in range(32):
        Image.new("RGB", (64, 48), (128, 128, 128)).save(folder / f"{i:02d}.jpg")
    return folder


@pytest.mark.parametrize("guard, flags, message", [
    ("recall", ["--min_cosine", "0", "--max_recall_drop", "5"], r"loses [\d.]+ points of R@1 on msls_val"),
    ("cosine", ["--max_recall_drop", "100"], r"descriptors drift from the float model's: held-out cosine"),
])
def test_broken_calibration_is_refused_and_leaves_the_existing_file(guard, flags, message, tiny, synthetic,
                                                                      grey_images, tmp_path, capsys):
    _, ckpt = tiny
    output = tmp_path / "model.onnx"
    output.write_bytes(b"the deployed model")
    status = main(["--checkpoint", str(ckpt), "--format", "onnx", "--quantize", "int8", "--output", str(output),
                   *data_flags(synthetic), "--calibration", str(grey_images), *flags])
    err = capsys.readouterr().err
    assert status == 1
    assert re.search(message, err) and "Not written" in err
    assert output.read_bytes() == b"the deployed model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary left


def test_calibration_on_evaluation_images_is_refused(tiny, synthetic, tmp_path):
    _, ckpt = tiny
    queries = synthetic["pitts"] / "queries_real"
    with pytest.raises(ConfigError, match=r"are evaluation images.*never on the benchmark"):
        main(["--checkpoint", str(ckpt), "--format", "onnx", "--quantize", "int8", "--output",
              str(tmp_path / "m.onnx"), *data_flags(synthetic), "--calibration", str(queries)])
    assert not (tmp_path / "m.onnx").exists()


def test_int8_needs_the_onnx_format(tiny, tmp_path):
    _, ckpt = tiny
    with pytest.raises(ConfigError, match="--quantize int8 writes an ONNX model.*use --format onnx"):
        main(["--checkpoint", str(ckpt), "--format", "torchscript", "--quantize", "int8",
              "--output", str(tmp_path / "m.pt")])


@pytest.mark.parametrize("agg", ["BoQ", "SALAD"])
def test_dinov2_families_are_quantised_dynamically_without_calibration(agg, tiny_dinov2, synthetic, tmp_path):
    from tiny_cli import tiny_vit

    net, ckpt = tiny_checkpoint(tmp_path, **tiny_vit(agg))
    output = tmp_path / "m.onnx"
    assert main(["--checkpoint", str(ckpt), "--format", "onnx", "--quantize", "int8", "--output", str(output),
                 *data_flags(synthetic), "--benchmarks", "[msls_val]", "--max_recall_drop", "100"]) == 0
    quantization = read_preprocessing(output)["quantization"]
    assert quantization["scheme"] == "dynamic" and quantization["calibration"]["count"] == 0
    assert quantization["calibration"]["held_out_count"] == 8
    ops = {node.op_type for node in onnx.load(str(output)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    images = torch.randn(3, 3, *net.image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert descriptor_agreement(net(images).numpy(), run_export(output, images))["mean_cosine"] > 0.95


def test_swin_v2_is_refused_with_the_reason_and_nothing_is_written(tmp_path):
    from models.export import export_verified
    from models.network import build_network

    net = build_network("swinv2_base_window12to16_192to256_22kft1k", agg_arch="GeM", image_size=(256, 256))
    output = tmp_path / "m.onnx"
    with pytest.raises(ConfigError, match=r"SwinV2 \+ GeMPool is not quantised: .*ran out of memory.*export it in float"):
        export_verified(net, output, "onnx_int8", (256, 256))
    assert list(tmp_path.iterdir()) == []
