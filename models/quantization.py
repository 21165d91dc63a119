"""int8 networks: ONNX Runtime's static quantisation, calibrated on training images, verified by recall.

The float ONNX export (``models.export``) is quantised with ``onnxruntime.quantization.quantize_static``:
QDQ format, int8 weights per output channel (symmetric), uint8 activations per tensor with ranges from a
calibration pass (min/max over the calibration images). ONNX Runtime's CPU provider fuses each
DequantizeLinear -> Conv/MatMul -> QuantizeLinear into an integer kernel (VNNI where the CPU has it). Why
this toolchain and not torch's PT2E x86 quantisation: README, "int8" (measured by ``bench/deployment.py``).

An int8 model cannot match the float one at 1e-4, so it is verified by what matters: the cosine similarity
of its descriptors to the float model's on held-out training images (mean and worst), and recall@1/5/10 of
both on benchmarks, computed with the evaluation code of eval.py (``models.evaluation.evaluation_recalls``).
A model that loses more than ``max_recall_drop`` points of R@1 on any benchmark is refused.

Which networks (``check_quantisable``): the CNNs (ResNets, MobileNetV2, EfficientNet, the Lightweight-MixVPR
trunks) statically, with any aggregator (BoQ's attention included); DINOv2 backbones (BoQ, SALAD) by dynamic
quantisation of their matrix products; Swin-V2 is refused. The reasons are measurements, stated at
``DYNAMIC_BACKBONES`` and ``BACKBONE_REFUSALS``.
"""
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from dataloaders.eval import EvalDataset
from dataloaders.image_list import ImageList
from dataloaders.preprocessing import Preprocessing
from dataloaders.transforms import normalize_batch
from utils.errors import ConfigError, DataError

from .evaluation import evaluation_recalls
from .inference import embed_paths, image_paths

DEFAULT_CALIBRATION_IMAGES = 300
DEFAULT_HELD_OUT_IMAGES = 100
DEFAULT_MAX_RECALL_DROP = 2.0  # points of R@1
# mean held-out cosine to the float model below which the int8 model is refused whatever the benchmarks say
# (a few hundred queries can hide a broken model); trained demo CNNs give 0.997 and more (README, "int8")
DEFAULT_MIN_COSINE = 0.98
CALIBRATION_SOURCES = ("gsv_cities",)
# calibration batches; ONNX Runtime's MinMax calibrator keeps only each batch's per-tensor minima and maxima
# (ReduceMin/ReduceMax outputs it adds to the graph), so memory stays small whatever the image count. Not its
# CalibMaxIntermediateOutputs: in onnxruntime 1.32 that option drops the batches collected before it fires.
BATCH = 16

# How each backbone is quantised (README, "int8", measured with bench/deployment.py and bench/int8_schemes.py):
# CNNs statically (every convolution and matrix product on int8 activations with calibrated ranges); ViTs
# dynamically: int8 weights of the matrix products, activation ranges computed per batch at run time. On
# DINOv2 ViT-S/14 + BoQ / SALAD at 224 x 224 dynamic quantisation was as fast as static (3.6x / 2.1x
# float32 at batch 1) and kept the descriptors closer (mean cosine 0.9997 / 0.9999 against 0.994 / 0.998),
# and it needs no calibrated ranges, which trained ViTs' outlier activations would stretch.
DYNAMIC_BACKBONES = ("DINOv2",)
BACKBONE_REFUSALS = {
    "SwinV2": "the int8 pipeline on the Swin-V2-B network (88M parameters, 256 x 256) ran out of memory on this "
              "project's 24 GB machine (killed at 23.8 GB resident) before a figure could be taken, so it has no "
              "measured int8 scheme; export it in float (--format onnx without --quantize)",
}


class RecallDropError(RuntimeError):
    """The int8 model loses more recall than allowed, or its descriptors are not finite: not written."""


def check_quantisable(net: nn.Module) -> str:
    """The quantisation scheme of ``net`` (a VPRNet): ``static`` or ``dynamic``; ConfigError naming the
    reason when it is not quantised."""
    backbone = type(net.backbone).__name__
    if backbone in BACKBONE_REFUSALS:
        raise ConfigError(f"--quantize int8: {backbone} + {type(net.aggregator).__name__} is not quantised: "
                          f"{BACKBONE_REFUSALS[backbone]}")
    return "dynamic" if backbone in DYNAMIC_BACKBONES else "static"


SCHEMES = {
    "static": {"format": "QDQ", "weights": "int8, symmetric, per output channel",
               "activations": "uint8, per tensor, ranges calibrated (min/max over the calibration images)"},
    "dynamic": {"format": "QOperator (DynamicQuantizeLinear, MatMulInteger)",
                "weights": "int8 of the matrix products (MatMul, Gemm), per tensor; convolutions in float",
                "activations": "uint8, ranges computed per batch at run time (no calibration)"},
}


@dataclass(frozen=True)
class Calibration:
    """Images for calibration (from ``source``) and held-out images for the descriptor agreement (from
    ``held_out_source``: the training set when there is one, so that a calibration folder that is not
    representative is judged on images that are; never the same images); the sources are descriptions
    written into the file's metadata."""

    images: list[str]
    held_out: list[str]
    source: str
    held_out_source: str

    def record(self, scheme: str = "static") -> dict:
        """What the int8 file's metadata says of its calibration (``scheme`` dynamic: none was needed)."""
        held = {"held_out_source": self.held_out_source, "held_out_count": len(self.held_out)}
        if scheme == "dynamic":
            return {"source": "none: dynamic quantisation computes activation ranges at run time", "count": 0, **held}
        return {"source": self.source, "count": len(self.images), **held,
                "method": "MinMax (ranges over all calibration images)"}


def source_images(source: str | Path | Sequence[str], gsv_root: Optional[str | Path] = None,
                  cities: Optional[Sequence[str]] = None) -> tuple[list[str], str]:
    """(image paths, description) of ``source``: ``gsv_cities`` (the training set at ``gsv_root``, images of
    ``cities``), a folder of images, a .txt list or a list of paths."""
    if isinstance(source, (str, Path)) and str(source) in CALIBRATION_SOURCES:
        from dataloaders.gsv_cities import TRAIN_CITIES, GSVCitiesDataset

        if gsv_root is None:
            raise ConfigError("--calibration gsv_cities: GSV-Cities root not set: pass --data.gsv_root, set "
                              "GSV_CITIES_ROOT, or use --data.synthetic true for the synthetic training set")
        dataset = GSVCitiesDataset(gsv_root, cities or TRAIN_CITIES, img_per_place=1, min_img_per_place=1)
        return [str(p) for p in dataset.paths], f"GSV-Cities training images at {gsv_root} ({len(dataset.cities)} cities)"
    paths = image_paths(source)
    return paths, (f"images of {source}" if isinstance(source, (str, Path)) else "a list of images")


def draw_calibration(source: str | Path | Sequence[str], count: int = DEFAULT_CALIBRATION_IMAGES,
                     held_out: int = DEFAULT_HELD_OUT_IMAGES, seed: int = 0,
                     gsv_root: Optional[str | Path] = None, cities: Optional[Sequence[str]] = None,
                     evaluation_images: Sequence[str] = ()) -> Calibration:
    """``count`` calibration images of ``source`` (see ``source_images``) and ``held_out`` other images,
    drawn at random (``seed``): from the GSV-Cities training set when ``gsv_root`` is given, else from
    ``source``. A source with fewer images than asked gives all it has (split in proportion when it serves
    both). Calibration images that are evaluation images (``evaluation_images``, e.g. a benchmark's
    queries) are refused: the recall check would measure what the model was calibrated on."""
    if count < 1 or held_out < 1:
        raise ConfigError(f"calibration needs at least 1 image and 1 held-out image; got {count} and {held_out}")
    paths, where = source_images(source, gsv_root, cities)
    rng = np.random.default_rng(seed)
    training = gsv_root is not None and str(source) not in CALIBRATION_SOURCES
    if training:  # held out from the training set, calibration from the folder given
        held_paths, held_where = source_images("gsv_cities", gsv_root, cities)
        chosen = [paths[i] for i in rng.permutation(len(paths))[:count]]
        taken = set(map(_resolved, chosen))
        # enough candidates that held_out remain once any calibration image among them is left out
        candidates = [held_paths[i] for i in rng.permutation(len(held_paths))[:held_out + len(chosen)]]
        held = [p for p in candidates if _resolved(p) not in taken][:held_out]
    else:
        if len(paths) < 2:
            raise DataError(f"--calibration {source}: {len(paths)} image(s); need at least 2 (calibration and held out)")
        order = rng.permutation(len(paths))
        n_cal = count if len(paths) >= count + held_out else max(1, round(len(paths) * count / (count + held_out)))
        chosen = [paths[i] for i in order[:n_cal]]
        held = [paths[i] for i in order[n_cal: n_cal + held_out]]
        held_where = where
    overlap = set(map(_resolved, chosen)) & set(map(_resolved, evaluation_images))
    if overlap:
        raise ConfigError(f"--calibration {source}: {len(overlap)} of the {len(chosen)} images drawn are evaluation "
                          f"images (e.g. {sorted(overlap)[0]}): calibrate on training images (gsv_cities, or a folder "
                          f"of training-distribution images), never on the benchmark the recall is checked on")
    if not held:
        raise DataError(f"no held-out images left in {held_where} for the agreement check")
    return Calibration(chosen, held, f"{where}, {len(paths)} images, {len(chosen)} drawn with seed {seed}",
                       f"{held_where}, {len(held)} drawn with seed {seed}, none of them calibration images")


def _resolved(path: str) -> str:
    return str(Path(path).resolve())


def image_batches(paths: Sequence[str], preprocessing: Preprocessing, batch_size: int = BATCH):
    """Float32 (B, 3, H, W) numpy batches of ``paths``, resized and normalised as in evaluation."""
    loader = DataLoader(ImageList(paths, preprocessing.transform()), batch_size=batch_size, shuffle=False)
    for images, _, _ in loader:
        yield normalize_batch(images, preprocessing.mean, preprocessing.std).numpy()


def quantize_onnx(float_path: Path, output: Path, calibration: Sequence[str], preprocessing: Preprocessing,
                  scheme: str = "static") -> Path:
    """Write the int8 model of the float ONNX file ``float_path`` to ``output``: ``static`` (QDQ, calibrated
    on the images ``calibration`` fed with ``preprocessing``) or ``dynamic`` (``SCHEMES``). The float file's
    metadata is copied."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = image_batches(calibration, preprocessing)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    with tempfile.TemporaryDirectory(prefix="vpr-int8-") as folder:
        # shape inference and graph optimisation first, as ONNX Runtime's quantisation guide asks
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        if scheme == "dynamic":
            quantize_dynamic(str(prepared), str(output), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        else:
            quantize_static(str(prepared), str(output), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    model = onnx.load(str(output))
    for prop in onnx.load(str(float_path), load_external_data=False).metadata_props:
        entry = model.metadata_props.add()
        entry.key, entry.value = prop.key, prop.value
    onnx.save_model(model, str(output))
    return output


class OnnxNet(nn.Module):
    """An ONNX file run by ONNX Runtime on the CPU, usable where a VPRNet is embedded
    (``inference.embed_paths``, hence the evaluation): (B, 3, H, W) normalised images -> (B, D) descriptors."""

    def __init__(self, path: str | Path, preprocessing: Preprocessing, descriptor_dim: int, threads: int = 0):
        import onnxruntime

        super().__init__()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = str(path)
        self.preprocessing = preprocessing
        self.descriptor_dim = int(descriptor_dim)
        # a float16 export takes float16 images
        self.input_dtype = np.float16 if self.session.get_inputs()[0].type == "tensor(float16)" else np.float32

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) normalised float images -> (B, D) float32 descriptors."""
        images = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=self.input_dtype)
        return torch.from_numpy(self.session.run(None, {"images": images})[0].astype(np.float32))

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, H, W) images -> normalised float images (the file's mean/std)."""
        return normalize_batch(images, self.preprocessing.mean, self.preprocessing.std)


def embed_with(net: nn.Module, paths: Sequence[str], batch_size: int = 32, name: Optional[str] = None) -> np.ndarray:
    """(N, D) descriptors of ``paths`` by ``net`` (a VPRNet or an ``OnnxNet``) on the CPU, as evaluation embeds."""
    return embed_paths(net, paths, batch_size=batch_size, device="cpu", progress=False, channels_last=False,
                       name=name)[0]


def descriptor_agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """Mean and worst cosine similarity of the rows of ``other`` to those of ``reference`` (L2-normalised)."""
    if not np.isfinite(other).all():
        return {"mean_cosine": float("nan"), "worst_cosine": float("nan"), "images": len(other)}
    cos = np.sum(reference * other, axis=1) / np.maximum(
        np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1), 1e-12)
    return {"mean_cosine": float(cos.mean()), "worst_cosine": float(cos.min()), "images": len(other)}


def benchmark_recalls(nets: dict[str, nn.Module], datasets: dict[str, EvalDataset], k_values: Sequence[int] = (1, 5, 10),
                      batch_size: int = 32) -> dict[str, dict[str, dict[str, float]]]:
    """{benchmark: {net label: {"1": R@1 in %, ...}}} of each net on each benchmark, embedded as eval.py
    embeds and scored by ``evaluation_recalls`` (database first, then queries; exact search)."""
    out = {}
    for name, dataset in datasets.items():
        out[name] = {}
        for label, net in nets.items():
            descriptors = embed_with(net, dataset.images, batch_size, name=f"the {label} model")
            recalls, _, _ = evaluation_recalls(descriptors, dataset, k_values)
            out[name][label] = {str(k): 100 * v for k, v in recalls.items()}
    return out


def verify_int8(float_net: nn.Module, int8_net: nn.Module, calibration: Calibration,
                datasets: dict[str, EvalDataset], max_recall_drop: float = DEFAULT_MAX_RECALL_DROP,
                min_cosine: float = DEFAULT_MIN_COSINE) -> dict:
    """The verification record of an int8 model: descriptor agreement with ``float_net`` on the held-out
    images, recall@1/5/10 of both on ``datasets`` and the R@1 drop per benchmark. Raises
    ``RecallDropError`` when the drop exceeds ``max_recall_drop`` points on a benchmark or the mean held-out
    cosine is below ``min_cosine``."""
    try:
        int8_held_out = embed_with(int8_net, calibration.held_out, name="the int8 model")
    except Exception as err:  # non-finite descriptors (check_descriptors): a broken calibration
        if "non-finite" not in str(err):
            raise
        raise RecallDropError(f"the int8 model gives non-finite descriptors on held-out images; not written "
                              f"({err})") from None
    agreement = descriptor_agreement(embed_with(float_net, calibration.held_out), int8_held_out)
    recalls = benchmark_recalls({"float32": float_net, "int8": int8_net}, datasets)
    drops = {name: r["float32"]["1"] - r["int8"]["1"] for name, r in recalls.items()}
    record = {"held_out": agreement, "recall": recalls, "r1_drop": drops, "max_recall_drop": max_recall_drop,
              "min_cosine": min_cosine}
    cosine = (f"held-out cosine to the float model: mean {agreement['mean_cosine']:.4f}, worst "
              f"{agreement['worst_cosine']:.4f}")
    fix = ("Not written: calibrate on more or more typical training images (--calibration), or deploy the float "
           "export")
    worst = max(drops, key=drops.get) if drops else None
    if worst is not None and drops[worst] > max_recall_drop:
        raise RecallDropError(
            f"the int8 model loses {drops[worst]:.2f} points of R@1 on {worst} ({recalls[worst]['float32']['1']:.2f} -> "
            f"{recalls[worst]['int8']['1']:.2f}; --max_recall_drop {max_recall_drop:g}); {cosine}. {fix}")
    if not agreement["mean_cosine"] >= min_cosine:  # NaN too
        raise RecallDropError(f"the int8 model's descriptors drift from the float model's: {cosine} on "
                              f"{agreement['images']} images (--min_cosine {min_cosine:g}). {fix}")
    return record
