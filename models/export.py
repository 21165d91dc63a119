"""Export a trained network (images -> descriptors) for deployment, and check the export.

    python -m models.export --checkpoint LOGS/run/version_0/checkpoints/last.ckpt --format onnx --output model.onnx
    python -m models.export --checkpoint "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt" \\
        --config configs/mixvpr_resnet50_4096.yaml --format torch_export --output model.pt2

Formats: ``onnx`` (the torch.export-based "dynamo" exporter, opset 18; run by ONNX Runtime),
``torch_export`` (a ``.pt2`` ExportedProgram: ``torch.export.load``; the successor of TorchScript) and
``torchscript`` (``torch.jit.trace``; deprecated by PyTorch, kept for older runtimes). The exported graph
takes (B, 3, H, W) float32 images normalised with the model's mean/std and returns (B, D) L2-normalised
descriptors; H x W is fixed (MixVPR's layers depend on it), B too unless ``dynamic_batch``; by default
the evaluation size the checkpoint records (its validation size). Each file carries its preprocessing
(input size, resize policy, mean, std, descriptor size): ONNX metadata properties, or a
``preprocessing.json`` extra file in .pt2/TorchScript archives.

The export is written to a temporary file beside ``--output``, run next to the PyTorch model on random
images, and moved to ``--output`` only when the descriptors agree within the tolerance: a failed
export never replaces a file that was there.
"""
import json
import sys
import warnings
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from utils.cli import run_command
from utils.errors import ConfigError
from utils.files import atomic_path, remove_orphan_temporaries

from .commands import BENCHMARK_DATA, TRAINING_DATA, architecture_settings, checkpoints_of, recipe_parser
from .commands import refuse_unused_flags
from .evaluation import load_for_evaluation
from .inference import evaluation_preprocessing

FORMATS = ("onnx", "torch_export", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2", "torchscript": ".pt"}
OPSET = 18
TOLERANCE = 1e-4
PREPROCESSING_FILE = "preprocessing.json"
# the preprocessing entries stored as plain text in ONNX metadata (the others as JSON)
TEXT_FIELDS = ("input", "output")


class ExportMismatchError(RuntimeError):
    """The exported model's descriptors differ from the PyTorch model's by more than the tolerance."""


def preprocessing(net: nn.Module, image_size: Sequence[int]) -> dict:
    """What a deployed model needs to be fed: input layout and size, resize policy, value range,
    normalisation (the network's evaluation preprocessing record at ``image_size``), descriptor size."""
    record = evaluation_preprocessing(net, image_size).as_dict()
    return {"input": "float32 (B, 3, H, W), RGB, values in [0, 1] then normalised (x - mean) / std", **record,
            "descriptor_dim": int(net.descriptor_dim),
            "output": "float32 (B, descriptor_dim), L2-normalised; cosine similarity = dot product"}


def _example(model: nn.Module, image_size: Sequence[int], batch: int, seed: int = 0) -> Tensor:
    param = next(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *image_size, generator=generator).to(param.device, param.dtype)


def export_onnx(net: nn.Module, path: str | Path, image_size: Sequence[int], dynamic_batch: bool = False,
                opset: int = OPSET) -> Path:
    """Write ``net`` (eval mode, (B, 3, H, W) images -> (B, D) descriptors) to ``path`` as one ONNX file
    (weights inside) with input ``images``, output ``descriptors`` and the preprocessing as metadata
    properties; the batch axis is named ``batch`` and free when ``dynamic_batch``."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    # batch 2, not 1: torch.export specialises dimensions of size 1
    example = _example(net, image_size, batch=2)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        program = torch.onnx.export(net, (example,), None, dynamo=True, opset_version=opset,
                                    input_names=["images"], output_names=["descriptors"],
                                    dynamic_shapes=dynamic_shapes, verbose=False)
    finally:
        net.train(was_training)
    proto = program.model_proto
    for key, value in preprocessing(net, image_size).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if key in TEXT_FIELDS else json.dumps(value)
    onnx.save_model(proto, str(path))
    return path


def export_program(net: nn.Module, path: str | Path, image_size: Sequence[int], dynamic_batch: bool = False) -> Path:
    """Write ``net`` as a ``torch.export`` ExportedProgram (``.pt2``) with ``preprocessing.json`` inside."""
    path = Path(path)
    was_training = net.training
    net.eval()
    example = _example(net, image_size, batch=2)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        program = torch.export.export(net, (example,), dynamic_shapes=dynamic_shapes)
    finally:
        net.train(was_training)
    torch.export.save(program, str(path),
                      extra_files={PREPROCESSING_FILE: json.dumps(preprocessing(net, image_size))})
    return path


def export_torchscript(net: nn.Module, path: str | Path, image_size: Sequence[int]) -> Path:
    """Write ``net`` (eval mode) traced with a (2, 3, H, W) input to ``path``, with ``preprocessing.json``
    inside. The traced graph takes any batch size (backbones and aggregators read it from the input)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    example = _example(net, image_size, batch=2)
    try:
        with warnings.catch_warnings():
            # MixVPR's input-size check is a constant for the fixed image size; TorchScript's deprecation notice
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            traced = torch.jit.trace(net, example)
    finally:
        net.train(was_training)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.jit.save(traced, str(path), _extra_files={PREPROCESSING_FILE: json.dumps(preprocessing(net, image_size))})
    return path


def read_preprocessing(path: str | Path, format: Optional[str] = None) -> dict:
    """The preprocessing stored in an exported file (see ``preprocessing``)."""
    path = Path(path)
    format = format or {v: k for k, v in SUFFIXES.items()}.get(path.suffix, "torchscript")
    if format == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return {k: (v if k in TEXT_FIELDS else json.loads(v)) for k, v in props.items()}
    files = {PREPROCESSING_FILE: ""}
    if format == "torch_export":
        torch.export.load(str(path), extra_files=files)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            torch.jit.load(str(path), _extra_files=files, map_location="cpu")
    return json.loads(files[PREPROCESSING_FILE])


def run_export(path: str | Path, images: Tensor, format: Optional[str] = None) -> np.ndarray:
    """Descriptors of ``images`` computed by the exported model at ``path`` (ONNX: onnxruntime on the CPU;
    .pt2: torch.export.load; otherwise TorchScript). ``format`` defaults to the one the suffix names."""
    path = Path(path)
    format = format or {v: k for k, v in SUFFIXES.items()}.get(path.suffix, "torchscript")
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return session.run(None, {name: images.detach().float().cpu().numpy()})[0]
    with torch.no_grad():
        if format == "torch_export":
            return torch.export.load(str(path)).module()(images).float().cpu().numpy()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            scripted = torch.jit.load(str(path), map_location=images.device)
        return scripted(images).float().cpu().numpy()


def verify_export(net: nn.Module, path: str | Path, image_size: Sequence[int], batch_sizes: Sequence[int] = (2,),
                  tolerance: Optional[float] = TOLERANCE, format: Optional[str] = None) -> float:
    """Largest absolute difference between the descriptors of the exported model at ``path`` and of
    ``net`` (eval mode) on the same random images, over ``batch_sizes``. Raises
    ``ExportMismatchError`` above ``tolerance`` (None: no check)."""
    was_training = net.training
    net.eval()
    worst = 0.0
    try:
        for i, batch in enumerate(batch_sizes):
            images = _example(net, image_size, batch, seed=1 + i)
            with torch.no_grad():
                expected = net(images).float().cpu().numpy()
            got = run_export(path, images, format)
            if got.shape != expected.shape:
                raise ExportMismatchError(f"{path} returned shape {got.shape} for a batch of {batch} images, "
                                          f"the model {expected.shape}; export with dynamic_batch for other "
                                          f"batch sizes")
            worst = max(worst, float(np.abs(got - expected).max()))
    finally:
        net.train(was_training)
    if tolerance is not None and worst > tolerance:
        raise ExportMismatchError(f"{path}: descriptors differ from the PyTorch model's by up to {worst:.3g} "
                                  f"(tolerance {tolerance:g}) on batches of {list(batch_sizes)} images; the "
                                  f"export is not faithful, do not deploy it")
    return worst


def export(net: nn.Module, output: str | Path, format: str, image_size: Sequence[int], dynamic_batch: bool = False,
           tolerance: float = TOLERANCE) -> float:
    """Export ``net`` to ``output`` in ``format`` through a temporary file that replaces ``output`` only
    once verified; returns the largest descriptor difference."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {FORMATS}")
    output = Path(output)
    if output.suffix != SUFFIXES[format]:
        raise ConfigError(f"--output {output}: a {format} file must end in {SUFFIXES[format]}")
    with torch.no_grad():
        try:
            net.eval()(_example(net, image_size, batch=2))
        except ValueError as err:  # e.g. MixVPR built for another feature-map size
            raise ConfigError(str(err)) from None
    batch_sizes = (2, 5) if dynamic_batch or format == "torchscript" else (2,)
    remove_orphan_temporaries(output.parent)  # what killed exports of this host left there
    with atomic_path(output) as tmp:
        if format == "onnx":
            export_onnx(net, tmp, image_size, dynamic_batch)
        elif format == "torch_export":
            export_program(net, tmp, image_size, dynamic_batch)
        else:
            export_torchscript(net, tmp, image_size)
        return verify_export(net, tmp, image_size, batch_sizes, tolerance, format)


def parse_args(argv: Optional[Sequence[str]] = None):
    """The settings of ``python -m models.export``."""
    parser = recipe_parser("python -m models.export", __doc__.split("\n")[0])
    parser.add_argument("--format", type=Literal[FORMATS], required=True, help="onnx, torch_export (.pt2) or torchscript")
    parser.add_argument("--output", type=str, required=True, help="file to write (.onnx, .pt2 or .pt)")
    parser.add_argument("--image_size", type=Optional[tuple[int, int]], default=None,
                        help="input size (H, W); default: the evaluation size the checkpoint records, else the model's")
    parser.add_argument("--dynamic_batch", type=bool, default=False, help="free batch axis (verified at 2 and 5)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest accepted descriptor difference")
    cfg = parser.parse_args(argv)
    # a flag this command accepts takes effect: training, benchmark and image-reading flags are refused
    refuse_unused_flags(parser, argv, "python -m models.export", TRAINING_DATA + BENCHMARK_DATA + ("skip_unreadable",))
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: export a checkpoint, verify the export, print the difference. Returns the exit status
    (1: the export is not faithful; nothing was written)."""
    cfg = parse_args(argv)
    checkpoints = checkpoints_of(cfg)
    if len(checkpoints) != 1:
        raise ConfigError(f"--checkpoint: export takes one checkpoint, got {len(checkpoints)}")
    net, _, _ = load_for_evaluation(checkpoints[0], architecture_settings(cfg), cfg.data.eval_image_size)
    image_size = tuple(cfg.image_size or net.preprocessing.image_size)
    try:
        diff = export(net, cfg.output, cfg.format, image_size, cfg.dynamic_batch, cfg.tolerance)
    except ExportMismatchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {cfg.output} ({cfg.format}, {image_size[0]} x {image_size[1]} images -> {net.descriptor_dim}-d "
          f"descriptors{', any batch size' if cfg.dynamic_batch else ''}); max abs descriptor difference "
          f"{diff:.2e} (tolerance {cfg.tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
