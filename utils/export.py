"""Export a trained VPR model (images -> descriptors) to ONNX or TorchScript, and check the export.

    python -m utils.export --checkpoint LOGS/run/last.ckpt --format onnx --output model.onnx --dynamic-batch
    python -m utils.export --checkpoint mixvpr_release.pth --format torchscript --output model.pt \\
        --backbone-arch resnet50 --layers-to-crop 4 --agg-arch MixVPR \\
        --agg-config '{"out_channels": 1024, "mix_depth": 4, "mlp_ratio": 1, "out_rows": 4}' --image-size 320 320

ONNX goes through the torch.export-based ("dynamo") exporter, torch's default and supported path
since 2.9 (the TorchScript-based one is deprecated); opset 18. TorchScript goes through
``torch.jit.trace``. Every export is run again (onnxruntime on the CPU / ``torch.jit.load``) on random
images next to the PyTorch model, and the largest descriptor difference must stay under a tolerance.
The exported graph takes (B, 3, H, W) float32 images, normalised as in training, and returns
(B, D) L2-normalised descriptors; H x W is fixed (MixVPR's layers depend on it), B too unless
``dynamic_batch``.
"""
import argparse
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from models.vpr_model import VPRModel
from utils.checkpoint import model_from_state, read_state_dict
from utils.cli_types import json_object

FORMATS = ("onnx", "torchscript")
OPSET = 18
TOLERANCE = 1e-4


class ExportMismatchError(RuntimeError):
    """The exported model's descriptors differ from the PyTorch model's by more than the tolerance."""


def _example(model: nn.Module, image_size: Sequence[int], batch: int, seed: int = 0) -> Tensor:
    param = next(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *image_size, generator=generator).to(param.device, param.dtype)


def export_onnx(model: nn.Module, path: str | Path, image_size: Sequence[int], dynamic_batch: bool = False,
                opset: int = OPSET) -> Path:
    """Write ``model`` (eval mode, (B, 3, H, W) images -> (B, D) descriptors) to ``path`` as one ONNX
    file (weights inside) with input ``images`` and output ``descriptors``; the batch axis is named
    ``batch`` and free when ``dynamic_batch``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    # batch 2, not 1: torch.export specialises dimensions of size 1
    example = _example(model, image_size, batch=2)
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=opset,
                                    input_names=["images"], output_names=["descriptors"],
                                    dynamic_shapes=dynamic_shapes, verbose=False)
    finally:
        model.train(was_training)
    program.save(str(path), external_data=False)
    return path


def export_torchscript(model: nn.Module, path: str | Path, image_size: Sequence[int]) -> Path:
    """Write ``model`` (eval mode) traced with a (2, 3, H, W) input to ``path``. The traced graph
    takes any batch size (the backbones and aggregators read the batch size from the input)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    example = _example(model, image_size, batch=2)
    try:
        with warnings.catch_warnings():
            # MixVPR's input-size check is a constant for the fixed image size: the trace is right
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # torch.jit reads every attribute, and LightningModule.trainer raises outside a Trainer
            # (Lightning's own to_torchscript is deprecated): trace the network itself. VPRModel.forward
            # is aggregator(backbone(x)); verify_export compares the trace with the model.
            network = nn.Sequential(model.backbone, model.aggregator) if isinstance(model, VPRModel) else model
            traced = torch.jit.trace(network, example)
    finally:
        model.train(was_training)
    torch.jit.save(traced, str(path))
    return path


def run_export(path: str | Path, images: Tensor) -> np.ndarray:
    """Descriptors of ``images`` computed by the exported model at ``path`` (.onnx: onnxruntime on the
    CPU; anything else: TorchScript)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return session.run(None, {name: images.detach().float().cpu().numpy()})[0]
    scripted = torch.jit.load(str(path), map_location=images.device)
    with torch.no_grad():
        return scripted(images).float().cpu().numpy()


def verify_export(model: nn.Module, path: str | Path, image_size: Sequence[int], batch_sizes: Sequence[int] = (2,),
                  tolerance: Optional[float] = TOLERANCE) -> float:
    """Largest absolute difference between the descriptors of the exported model at ``path`` and of
    ``model`` (eval mode) on the same random images, over ``batch_sizes``. Raises
    ``ExportMismatchError`` above ``tolerance`` (None: no check)."""
    was_training = model.training
    model.eval()
    worst = 0.0
    try:
        for i, batch in enumerate(batch_sizes):
            images = _example(model, image_size, batch, seed=1 + i)
            with torch.no_grad():
                expected = model(images).float().cpu().numpy()
            got = run_export(path, images)
            if got.shape != expected.shape:
                raise ExportMismatchError(f"{path} returned shape {got.shape} for a batch of {batch} images, "
                                          f"the model {expected.shape}; export with dynamic_batch for other "
                                          f"batch sizes")
            worst = max(worst, float(np.abs(got - expected).max()))
    finally:
        model.train(was_training)
    if tolerance is not None and worst > tolerance:
        raise ExportMismatchError(f"{path}: descriptors differ from the PyTorch model's by up to {worst:.3g} "
                                  f"(tolerance {tolerance:g}) on batches of {list(batch_sizes)} images; the "
                                  f"export is not faithful, do not deploy it")
    return worst


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: export a checkpoint, verify the export, print the difference."""
    parser = argparse.ArgumentParser(prog="python -m utils.export", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="our Lightning .ckpt, or a bare state_dict (.pth)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, help="file to write (.onnx for ONNX, e.g. .pt for TorchScript)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size; default: the checkpoint's image_size (required for a bare state_dict)")
    parser.add_argument("--dynamic-batch", action="store_true", help="free batch axis (verified at 2 and 5)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest accepted descriptor difference")
    arch = parser.add_argument_group("architecture of a bare state_dict (override a .ckpt's saved values)")
    arch.add_argument("--backbone-arch")
    arch.add_argument("--layers-to-crop", type=int, nargs="*")
    arch.add_argument("--agg-arch")
    arch.add_argument("--agg-config", type=json_object, help="JSON object, e.g. '{\"out_channels\": 256}'")
    args = parser.parse_args(argv)

    state_dict, hyper_parameters = read_state_dict(args.checkpoint)
    overrides = {k: getattr(args, k) for k in ("backbone_arch", "layers_to_crop", "agg_arch", "agg_config")
                 if getattr(args, k) is not None}
    # for a bare state_dict the image size is architecture (MixVPR's in_h/in_w); for a .ckpt it is saved
    if not hyper_parameters and args.image_size:
        overrides["image_size"] = tuple(args.image_size)
    if args.format == "onnx" and Path(args.output).suffix != ".onnx":
        parser.error(f"--output {args.output}: an ONNX file must end in .onnx")
    try:
        model = model_from_state(state_dict, hyper_parameters, args.checkpoint, **overrides)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    image_size = tuple(args.image_size) if args.image_size else model.image_size
    try:
        with torch.no_grad():
            model(_example(model, image_size, batch=2))
    except ValueError as err:  # e.g. MixVPR built for another feature-map size
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.format == "onnx":
        path = export_onnx(model, args.output, image_size, args.dynamic_batch)
    else:
        path = export_torchscript(model, args.output, image_size)
    batch_sizes = (2, 5) if args.dynamic_batch else (2,)
    try:
        diff = verify_export(model, path, image_size, batch_sizes, args.tolerance)
    except ExportMismatchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({args.format}, {image_size[0]} x {image_size[1]} images -> {model.descriptor_dim}-d "
          f"descriptors{', any batch size' if args.dynamic_batch else ''}); max abs descriptor difference "
          f"{diff:.2e} on batches of {list(batch_sizes)} (tolerance {args.tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
