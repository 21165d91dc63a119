"""int8 toolchains compared: ONNX Runtime's static quantisation against torch's PT2E x86 quantisation.

    pip install torchao            # PT2E lives in torchao now; not a dependency of this project
    python bench/int8_toolchains.py --checkpoint LOGS/deploy/runs/resnet18_1024/version_0/checkpoints/last.ckpt
    python bench/int8_toolchains.py --checkpoint ... --image-size 320 320 --variants ort_fp32 ort_int8

Variants: ``ort_fp32`` (the ONNX export), ``ort_int8`` (``models.quantization``: QDQ, per-channel int8
weights, calibrated uint8 activations), ``pt2e_int8`` (torch.export -> torchao's ``X86InductorQuantizer``
default config -> calibration -> ``convert_pt2e`` -> ``torch.compile`` with inductor freezing, one
compiled graph per batch size) and ``inductor_fp32`` (the same compilation without quantisation). Per
variant: batch-1 latency and batch-32 throughput with ``--threads``, the mean / worst cosine of its
descriptors to PyTorch's on 100 held-out synthetic GSV-Cities images, R@1 on the synthetic pitts30k_val
(only at the checkpoint's own size: at another size the aggregator is rebuilt with random weights around
the trained backbone), the seconds to prepare (quantise, compile) and the load average. One JSON line per
variant. Calibration: 300 synthetic GSV-Cities images, seed 0.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataloaders.eval import build_eval_set  # noqa: E402
from dataloaders.synthetic import SYNTHETIC_CITIES, generate_synthetic  # noqa: E402
from models import quantization as q  # noqa: E402
from models.evaluation import evaluation_recalls, load_for_evaluation  # noqa: E402
from models.export import export_onnx  # noqa: E402
from models.loading import architecture_of, open_checkpoint  # noqa: E402
from models.network import build_network  # noqa: E402
from utils.timing import best_seconds  # noqa: E402

VARIANTS = ("ort_fp32", "ort_int8", "pt2e_int8", "inductor_fp32")


def compiled_pt2e(net, size, calibration: torch.Tensor, quantize: bool):
    """A function (B, 3, H, W) -> descriptors: ``net`` exported per batch size (1 and 32), PT2E-quantised
    when ``quantize``, compiled by inductor; other batch sizes are padded to 32."""
    import torch._inductor.config as inductor

    inductor.freezing = True
    graphs = {}
    for batch in (1, 32):
        module = torch.export.export(net, (torch.randn(batch, 3, *size),)).module()
        if quantize:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
                X86InductorQuantizer, get_default_x86_inductor_quantization_config)
            quantizer = X86InductorQuantizer()
            quantizer.set_global(get_default_x86_inductor_quantization_config())
            module = prepare_pt2e(module, quantizer)
            with torch.no_grad():
                for i in range(0, len(calibration) - batch + 1, batch):
                    module(calibration[i:i + batch])
            module = convert_pt2e(module)
        graphs[batch] = torch.compile(module)

    def run(images):
        n = len(images)
        padded = images if n in (1, 32) else torch.cat([images, images.new_zeros(32 - n, *images.shape[1:])])
        with torch.no_grad():
            return graphs[1 if n == 1 else 32](padded).numpy()[:n]
    return run


def main() -> None:
    """Measure each variant and print one JSON line for it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, _, _ = load_for_evaluation(args.checkpoint, {})
    own = tuple(net.preprocessing.image_size)
    size = tuple(args.image_size or own)
    if size != own:
        arch = architecture_of(open_checkpoint(args.checkpoint).hyper_parameters)
        agg = {k: v for k, v in arch["agg_config"].items() if k not in ("in_h", "in_w")}
        other = build_network(**{**arch, "agg_config": agg, "image_size": list(size)}).eval()
        other.backbone.load_state_dict(net.backbone.state_dict())
        net = other
    pre = net.preprocessing.with_size(size)
    roots = generate_synthetic(REPO / "LOGS" / "synthetic_data", scale="default", seed=0)
    dataset = build_eval_set("pitts30k_val", {"pitts_root": roots["pitts"]})
    calibration = q.draw_calibration("gsv_cities", 300, 100, 0, roots["gsv_cities"], SYNTHETIC_CITIES, dataset.images)
    held = torch.from_numpy(np.concatenate(list(q.image_batches(calibration.held_out, pre))))
    calibration_images = torch.from_numpy(np.concatenate(list(q.image_batches(calibration.images, pre))))
    with torch.no_grad():
        reference = torch.cat([net(held[i:i + 32]) for i in range(0, len(held), 32)]).numpy()
    one, many = torch.randn(1, 3, *size), torch.randn(32, 3, *size)
    folder = Path(tempfile.mkdtemp())
    float_path = export_onnx(net, folder / "float32.onnx", size, dynamic_batch=True)
    for variant in args.variants:
        start = time.time()
        if variant.startswith("ort"):
            path = float_path if variant == "ort_fp32" else q.quantize_onnx(float_path, folder / "int8.onnx",
                                                                            calibration.images, pre)
            model = q.OnnxNet(path, pre, net.descriptor_dim, threads=args.threads)
            run = lambda x, model=model: model(x).numpy()
        else:
            run = compiled_pt2e(net, size, calibration_images, variant == "pt2e_int8")
        prepared = time.time() - start
        start = time.time()
        run(one), run(many)
        first = time.time() - start
        got = np.concatenate([run(held[i:i + 32]) for i in range(0, len(held), 32)])
        agreement = q.descriptor_agreement(reference, got)
        r1 = float("nan")
        if size == own:
            descriptors = np.concatenate([run(torch.from_numpy(b)) for b in q.image_batches(dataset.images, pre, 32)])
            r1 = 100 * evaluation_recalls(descriptors, dataset, (1,))[0][1]
        print(json.dumps({"variant": variant, "size": f"{size[0]}x{size[1]}", "threads": args.threads,
                          "b1_ms": 1e3 * best_seconds(lambda: run(one), args.reps),
                          "b32_img_s": 32 / best_seconds(lambda: run(many), max(1, args.reps // 3)),
                          "mean_cos": agreement["mean_cosine"], "worst_cos": agreement["worst_cosine"],
                          "pitts30k_val_r1": r1, "prepare_s": prepared, "first_calls_s": first,
                          "load": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
