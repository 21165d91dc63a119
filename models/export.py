"""Export a trained network (images -> descriptors) for deployment, and check the export.

    python -m models.export --checkpoint LOGS/run/version_0/checkpoints/last.ckpt --format onnx --output model.onnx
    python -m models.export --checkpoint "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt" \\
        --config configs/mixvpr_resnet50_4096.yaml --format torch_export --output model.pt2
    python -m models.export --checkpoint last.ckpt --format onnx --quantize int8 --output model.int8.onnx

Formats (``EXPORTERS``: one ``Exporter`` record each, with its own verification): ``onnx`` (the torch.export-based "dynamo" exporter, opset 18; run by ONNX Runtime),
``torch_export`` (a ``.pt2`` ExportedProgram: ``torch.export.load``; the successor of TorchScript) and
``torchscript`` (``torch.jit.trace``; deprecated by PyTorch, kept for older runtimes) and ``onnx_int8``
(``--format onnx --quantize int8``: ONNX Runtime's static quantisation of the ONNX export, ``models.quantization``).
The exported graph
takes (B, 3, H, W) float32 images normalised with the model's mean/std and returns (B, D) L2-normalised
descriptors; H x W is fixed (MixVPR's layers depend on it), B too unless ``dynamic_batch``; by default
the evaluation size the checkpoint records (its validation size). Each file carries its preprocessing
(input size, resize policy, mean, std, descriptor size): ONNX metadata properties, or a
``preprocessing.json`` extra file in .pt2/TorchScript archives.

The export is written to a temporary file beside ``--output``, verified, and moved to ``--output`` only
when it passes: a failed export never replaces a file that was there. The float formats are run next to
the PyTorch model on random images and must agree within ``--tolerance``. An int8 model cannot: it is
calibrated on ``--calibration_images`` images of ``--calibration`` (default: the GSV-Cities training set,
``--data.gsv_root``, or the synthetic one), checked by the cosine similarity of its descriptors to the
float model's on held-out images of the same source, and by recall@1/5/10 of both on ``--benchmarks``
(default: the recipe's validation sets; the synthetic ones unless ``--data.synthetic false`` and the
roots are given); it is refused when it loses more than ``--max_recall_drop`` points of R@1 on one of
them. The calibration source and count and the verification figures are stored in its metadata. int8
files always take any batch size (calibration and the recall check run batches).
"""
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dataloaders.eval import root_settings
from utils.cli import run_command
from utils.errors import ConfigError
from utils.files import atomic_path, remove_orphan_temporaries

from .commands import BENCHMARK_DATA, TRAINING_DATA, architecture_settings, checkpoints_of, recipe_parser
from .commands import refuse_unused_flags
from .evaluation import load_for_evaluation
from .inference import evaluation_preprocessing

# the data settings an int8 export reads: the calibration images (training set) and the benchmarks it checks
INT8_DATA = ("gsv_root", "cities", "val_sets", "seed", "synthetic", "synthetic_dir", "synthetic_scale", "pos_radius",
             *root_settings())

OPSET = 18
TOLERANCE = 1e-4
PREPROCESSING_FILE = "preprocessing.json"
# the preprocessing entries stored as plain text in ONNX metadata (the others as JSON)
TEXT_FIELDS = ("input", "output", "precision")
# metadata that ONNX Runtime's tools add (plain text)
FOREIGN_FIELDS = ("onnx.",)


class ExportMismatchError(RuntimeError):
    """The exported model's descriptors differ from the PyTorch model's by more than the tolerance."""


def preprocessing(net: nn.Module, image_size: Sequence[int]) -> dict:
    """What a deployed model needs to be fed: input layout and size, resize policy, value range,
    normalisation (the network's evaluation preprocessing record at ``image_size``), descriptor size."""
    record = evaluation_preprocessing(net, image_size).as_dict()
    return {"input": "float32 (B, 3, H, W), RGB, values in [0, 1] then normalised (x - mean) / std", **record,
            "descriptor_dim": int(net.descriptor_dim),
            "output": "float32 (B, descriptor_dim), L2-normalised; cosine similarity = dot product",
            "precision": "float32"}


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


def _onnx_metadata(path: Path) -> dict:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return {k: (v if k in TEXT_FIELDS or k.startswith(FOREIGN_FIELDS) else json.loads(v)) for k, v in props.items()}


def _archive_metadata(loader: Callable[[Path, dict], object]) -> Callable[[Path], dict]:
    def read(path: Path) -> dict:
        files = {PREPROCESSING_FILE: ""}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            loader(path, files)
        return json.loads(files[PREPROCESSING_FILE])
    return read


def _run_onnx(path: Path, images: Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: images.detach().float().cpu().numpy()})[0]


def _run_program(path: Path, images: Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.export.load(str(path)).module()(images).float().cpu().numpy()


def _run_torchscript(path: Path, images: Tensor) -> np.ndarray:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        scripted = torch.jit.load(str(path), map_location=images.device)
        return scripted(images).float().cpu().numpy()


def _verified_float(write: Callable[..., Path], format: str) -> Callable[..., dict]:
    """Write, then verify at ``tolerance`` against the PyTorch model: the float formats' check."""
    def produce(net: nn.Module, path: Path, image_size: Sequence[int], dynamic_batch: bool = False,
                tolerance: Optional[float] = TOLERANCE, **_) -> dict:
        write(net, path, image_size, dynamic_batch)
        batch_sizes = (2, 5) if dynamic_batch or format == "torchscript" else (2,)
        return {"max_abs_difference": verify_export(net, path, image_size, batch_sizes, tolerance, format),
                "tolerance": tolerance}
    return produce


def _produce_int8(net: nn.Module, path: Path, image_size: Sequence[int], dynamic_batch: bool = True,
                  tolerance: Optional[float] = TOLERANCE, calibration=None, benchmarks: Optional[dict] = None,
                  max_recall_drop: Optional[float] = None, min_cosine: Optional[float] = None, **_) -> dict:
    """The float ONNX export (verified at ``tolerance``), quantised with ``calibration`` (a
    ``quantization.Calibration``), verified by agreement and recall on ``benchmarks`` ({name: EvalDataset})."""
    import tempfile

    import onnx
    import onnxruntime

    from . import quantization as q

    scheme = q.check_quantisable(net)
    if calibration is None:
        raise ValueError("int8 export needs calibration images (quantization.draw_calibration)")
    record = evaluation_preprocessing(net, image_size)
    with tempfile.TemporaryDirectory(prefix="vpr-int8-") as folder:
        float_path = Path(folder) / "float32.onnx"
        export_onnx(net, float_path, image_size, dynamic_batch=True)
        difference = verify_export(net, float_path, image_size, (2, 5), tolerance, "onnx")
        q.quantize_onnx(float_path, path, calibration.images, record, scheme)
        reference = q.OnnxNet(float_path, record, net.descriptor_dim)
        verification = q.verify_int8(reference, q.OnnxNet(path, record, net.descriptor_dim), calibration,
                                     benchmarks or {}, q.DEFAULT_MAX_RECALL_DROP if max_recall_drop is None
                                     else max_recall_drop, q.DEFAULT_MIN_COSINE if min_cosine is None else min_cosine)
    verification["float_export_max_abs_difference"] = difference
    model = onnx.load(str(path))
    stated = {"precision": "int8",
              "quantization": {"toolchain": f"onnxruntime.quantization.quantize_static {onnxruntime.__version__}",
                               "scheme": scheme, **q.SCHEMES[scheme],
                               "calibration": calibration.record(scheme), "verification": verification}}
    props = {p.key: p for p in model.metadata_props}
    for key, value in stated.items():
        entry = props[key] if key in props else model.metadata_props.add()
        entry.key, entry.value = key, value if key in TEXT_FIELDS else json.dumps(value)
    onnx.save_model(model, str(path))
    return verification


@dataclass(frozen=True)
class Exporter:
    """One export format: its file suffix, how a network is written and verified (``produce``: network,
    temporary path, image size, dynamic_batch and the format's options -> a verification record; raises when
    the file must not be deployed), how the file is run (``run``: path, images -> descriptors) and how its
    preprocessing is read back (``metadata``)."""

    name: str
    suffix: str
    summary: str
    produce: Callable[..., dict]
    run: Callable[[Path, Tensor], np.ndarray]
    metadata: Callable[[Path], dict]
    verification: str


EXPORTERS = {e.name: e for e in (
    Exporter("onnx", ".onnx", "ONNX (opset 18, torch.export-based exporter), run by ONNX Runtime",
             _verified_float(export_onnx, "onnx"), _run_onnx, _onnx_metadata, "descriptors within --tolerance"),
    Exporter("torch_export", ".pt2", "torch.export ExportedProgram (torch.export.load)",
             _verified_float(export_program, "torch_export"), _run_program,
             _archive_metadata(lambda p, files: torch.export.load(str(p), extra_files=files)),
             "descriptors within --tolerance"),
    Exporter("torchscript", ".pt", "TorchScript (torch.jit.trace; deprecated by PyTorch)",
             _verified_float(lambda net, path, size, _dynamic: export_torchscript(net, path, size), "torchscript"),
             _run_torchscript,
             _archive_metadata(lambda p, files: torch.jit.load(str(p), _extra_files=files, map_location="cpu")),
             "descriptors within --tolerance"),
    Exporter("onnx_int8", ".onnx", "int8 ONNX (ONNX Runtime static quantisation, QDQ), run by ONNX Runtime",
             _produce_int8, _run_onnx, _onnx_metadata,
             "held-out cosine to the float model; R@1 lost on --benchmarks at most --max_recall_drop"),
)}
FORMATS = ("onnx", "torch_export", "torchscript")  # --format; onnx_int8 is --format onnx --quantize int8
SUFFIXES = {name: e.suffix for name, e in EXPORTERS.items()}


def exporter(format: str) -> Exporter:
    """The ``Exporter`` named ``format``."""
    try:
        return EXPORTERS[format]
    except KeyError:
        raise ConfigError(f"unknown export format {format!r}; choose one of {sorted(EXPORTERS)}") from None


def _format_of(path: Path, format: Optional[str]) -> str:
    return format or {".onnx": "onnx", ".pt2": "torch_export"}.get(path.suffix, "torchscript")


def read_preprocessing(path: str | Path, format: Optional[str] = None) -> dict:
    """The preprocessing stored in an exported file (see ``preprocessing``; int8 files add ``quantization``)."""
    path = Path(path)
    return exporter(_format_of(path, format)).metadata(path)


def run_export(path: str | Path, images: Tensor, format: Optional[str] = None) -> np.ndarray:
    """Descriptors of ``images`` computed by the exported model at ``path`` (ONNX: onnxruntime on the CPU;
    .pt2: torch.export.load; otherwise TorchScript). ``format`` defaults to the one the suffix names."""
    path = Path(path)
    return exporter(_format_of(path, format)).run(path, images)


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


def export_verified(net: nn.Module, output: str | Path, format: str, image_size: Sequence[int],
                    dynamic_batch: bool = False, **options) -> dict:
    """Export ``net`` to ``output`` in ``format`` (an ``EXPORTERS`` name) through a temporary file that
    replaces ``output`` only once the format's verification passed; returns the verification record.
    ``options``: the format's (float: tolerance; onnx_int8: tolerance, calibration, benchmarks,
    max_recall_drop)."""
    spec = exporter(format)
    output = Path(output)
    if output.suffix != spec.suffix:
        raise ConfigError(f"--output {output}: a {format} file must end in {spec.suffix}")
    with torch.no_grad():
        try:
            net.eval()(_example(net, image_size, batch=2))
        except ValueError as err:  # e.g. MixVPR built for another feature-map size
            raise ConfigError(str(err)) from None
    remove_orphan_temporaries(output.parent)  # what killed exports of this host left there
    with atomic_path(output) as tmp:
        return spec.produce(net, tmp, image_size, dynamic_batch, **options)


def export(net: nn.Module, output: str | Path, format: str, image_size: Sequence[int], dynamic_batch: bool = False,
           tolerance: float = TOLERANCE) -> float:
    """Export ``net`` to ``output`` in a float ``format`` through a temporary file that replaces ``output``
    only once verified; returns the largest descriptor difference (``export_verified`` for every format)."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {FORMATS}")
    return export_verified(net, output, format, image_size, dynamic_batch, tolerance=tolerance)["max_abs_difference"]


def parse_args(argv: Optional[Sequence[str]] = None):
    """The settings of ``python -m models.export``."""
    from . import quantization as q

    parser = recipe_parser("python -m models.export", __doc__.split("\n")[0])
    parser.add_argument("--format", type=Literal[FORMATS], required=True, help="onnx, torch_export (.pt2) or torchscript")
    parser.add_argument("--output", type=str, required=True, help="file to write (.onnx, .pt2 or .pt)")
    parser.add_argument("--image_size", type=Optional[tuple[int, int]], default=None,
                        help="input size (H, W); default: the evaluation size the checkpoint records, else the model's")
    parser.add_argument("--dynamic_batch", type=bool, default=False, help="free batch axis (verified at 2 and 5)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest accepted descriptor difference "
                                                                            "(of the float export; int8: of its float source)")
    int8 = parser.add_argument_group("int8 (--format onnx --quantize int8)")
    int8.add_argument("--quantize", type=Optional[Literal["int8"]], default=None,
                      help="int8: static quantisation with ONNX Runtime, calibrated and verified by recall")
    int8.add_argument("--calibration", type=str, default="gsv_cities",
                      help="calibration images: gsv_cities (the training set at --data.gsv_root, or the synthetic "
                           "one), a folder of images or a .txt list; never evaluation images")
    int8.add_argument("--calibration_images", type=int, default=q.DEFAULT_CALIBRATION_IMAGES,
                      help="images drawn (seed --data.seed) for calibration")
    int8.add_argument("--held_out_images", type=int, default=q.DEFAULT_HELD_OUT_IMAGES,
                      help="other images of the same source for the cosine agreement with the float model")
    int8.add_argument("--benchmarks", type=Optional[list[str]], default=None,
                      help="sets the recall is checked on (default: data.val_sets); as eval.py's --benchmarks")
    int8.add_argument("--max_recall_drop", type=float, default=q.DEFAULT_MAX_RECALL_DROP,
                      help="most points of R@1 the int8 model may lose on a benchmark; more: nothing is written")
    int8.add_argument("--min_cosine", type=float, default=q.DEFAULT_MIN_COSINE,
                      help="least mean cosine similarity to the float model on the held-out images; less: nothing "
                           "is written")
    parser.set_defaults({"data.synthetic": True})
    cfg = parser.parse_args(argv)
    # a flag this command accepts takes effect: training, benchmark and image-reading flags are refused; an
    # int8 export reads its calibration images from the training set and checks recall on benchmarks
    unused = TRAINING_DATA + BENCHMARK_DATA + ("skip_unreadable",)
    if cfg.quantize:
        unused = tuple(f for f in unused if f not in INT8_DATA)
    refuse_unused_flags(parser, argv, "python -m models.export", unused)
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: export a checkpoint, verify the export, print the verification. Returns the exit status
    (1: the export is not faithful, or the int8 model loses too much recall; nothing was written)."""
    from . import quantization as q

    cfg = parse_args(argv)
    checkpoints = checkpoints_of(cfg)
    if len(checkpoints) != 1:
        raise ConfigError(f"--checkpoint: export takes one checkpoint, got {len(checkpoints)}")
    if cfg.quantize and cfg.format != "onnx":
        raise ConfigError(f"--quantize int8 writes an ONNX model (ONNX Runtime's quantisation): use --format onnx, "
                          f"not {cfg.format}")
    format = "onnx_int8" if cfg.quantize else cfg.format
    net, _, _ = load_for_evaluation(checkpoints[0], architecture_settings(cfg), cfg.data.eval_image_size)
    image_size = tuple(cfg.image_size or net.preprocessing.image_size)
    options = {"tolerance": cfg.tolerance}
    if cfg.quantize:
        q.check_quantisable(net)  # before any data is generated or read
        options.update(int8_options(cfg), max_recall_drop=cfg.max_recall_drop, min_cosine=cfg.min_cosine)
    try:
        report = export_verified(net, cfg.output, format, image_size, cfg.dynamic_batch or bool(cfg.quantize),
                                 **options)
    except (ExportMismatchError, q.RecallDropError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    shape = (f"{image_size[0]} x {image_size[1]} images -> {net.descriptor_dim}-d descriptors"
             f"{', any batch size' if cfg.dynamic_batch or cfg.quantize else ''}")
    if not cfg.quantize:
        print(f"wrote {cfg.output} ({cfg.format}, {shape}); max abs descriptor difference "
              f"{report['max_abs_difference']:.2e} (tolerance {cfg.tolerance:g})")
        return 0
    held = report["held_out"]
    print(f"wrote {cfg.output} (int8 ONNX, {shape}); calibrated on {len(options['calibration'].images)} images: "
          f"{options['calibration'].source}")
    print(f"cosine to the float model on {held['images']} held-out images: mean {held['mean_cosine']:.4f}, "
          f"worst {held['worst_cosine']:.4f} (at least {cfg.min_cosine:g} on average)")
    for name, recalls in report["recall"].items():
        cells = ", ".join(f"R@{k} {recalls['float32'][k]:.2f} -> {recalls['int8'][k]:.2f}" for k in ("1", "5", "10"))
        print(f"{name}: float32 -> int8 {cells} (R@1 drop {report['r1_drop'][name]:.2f} points, "
              f"at most {cfg.max_recall_drop:g})")
    return 0


def int8_options(cfg) -> dict:
    """The calibration images and the benchmarks of the int8 verification, from the parsed settings."""
    from dataloaders.datamodule import VPRDataModule
    from dataloaders.eval import build_eval_set, is_eval_set

    from . import quantization as q

    data = VPRDataModule(**{k: v for k, v in vars(cfg.data).items()})
    names = list(cfg.benchmarks or cfg.data.val_sets)
    unknown = [b for b in names if not is_eval_set(b)]
    if unknown:
        raise ConfigError(f"--benchmarks: unknown benchmark(s) {unknown}; as eval.py's --benchmarks")
    if cfg.data.synthetic:
        data.prepare_data()
    roots = data.roots()
    benchmarks = {}
    for name in names:
        dataset = build_eval_set(name, roots, None, pos_radius=cfg.data.pos_radius)
        benchmarks[dataset.name] = dataset
    calibration = q.draw_calibration(cfg.calibration, cfg.calibration_images, cfg.held_out_images, cfg.data.seed,
                                     roots["gsv_root"], data.cities(),
                                     [p for d in benchmarks.values() for p in d.images])
    return {"calibration": calibration, "benchmarks": benchmarks}


if __name__ == "__main__":
    sys.exit(run_command(main))
