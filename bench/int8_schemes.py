"""Static or dynamic int8 for a network: which one ``models.quantization`` uses per backbone, measured.

    python bench/int8_schemes.py                         # every network below
    python bench/int8_schemes.py --models dinov2_vits14-boq --reps 3

Per network (random weights: no pretrained weights can be downloaded here; batch norm and LayerNorm at
their initial statistics), three ONNX files: float32, int8 static (QDQ, calibrated on 48 synthetic
GSV-Cities images, ``quantization.quantize_onnx(..., "static")``) and int8 dynamic (int8 matrix products,
activation ranges per batch, ``"dynamic"``): file size, ONNX Runtime latency at batch 1 and throughput at
batch 8 with ``--threads``, and the mean / worst cosine of the int8 descriptors to float32 on 32 held-out
synthetic GSV-Cities images. Trained ViTs have outlier activations that random ones lack: static ranges
would suffer more there, dynamic ones do not depend on calibration. Prints Markdown with the load average
per row (timings at a load above about 1.5 on 2 cores are noise). Swin-V2-B + MixVPR at 256 x 256 is not
listed: its run was killed for memory at 23.8 GB on the project's 24 GB machine (``quantization.BACKBONE_REFUSALS``).
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataloaders.synthetic import SYNTHETIC_CITIES, generate_synthetic  # noqa: E402
from models import quantization as q  # noqa: E402
from models.export import export_onnx  # noqa: E402
from models.network import build_network  # noqa: E402
from utils.timing import best_seconds  # noqa: E402

NETWORKS = {
    "dinov2_vits14-boq": dict(backbone_arch="dinov2_vits14", agg_arch="BoQ", image_size=(224, 224),
                              backbone_config=dict(num_trainable_blocks=2, return_token=False, norm_layer=False),
                              agg_config=dict(in_channels=384, proj_channels=384, num_queries=64, num_layers=2,
                                              row_dim=32)),
    "dinov2_vits14-salad": dict(backbone_arch="dinov2_vits14", agg_arch="SALAD", image_size=(224, 224),
                                backbone_config=dict(num_trainable_blocks=4, return_token=True, norm_layer=True),
                                agg_config=dict(num_channels=384, num_clusters=64, cluster_dim=128, token_dim=256)),
    "resnet18-boq": dict(backbone_arch="resnet18", agg_arch="BoQ", image_size=(224, 224),
                         agg_config=dict(proj_channels=128, num_queries=16, num_layers=2, row_dim=4)),
}


def measure(name: str, calibration: q.Calibration, threads: int, reps: int) -> list[dict]:
    """The three rows of network ``name``."""
    torch.manual_seed(0)
    net = build_network(**NETWORKS[name]).eval()
    size, pre = tuple(net.preprocessing.image_size), net.preprocessing
    held = np.concatenate(list(q.image_batches(calibration.held_out, pre)))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        files = {"float32": export_onnx(net, Path(folder) / "float32.onnx", size, dynamic_batch=True)}
        for scheme in ("static", "dynamic"):
            files[f"int8 {scheme}"] = q.quantize_onnx(files["float32"], Path(folder) / f"{scheme}.onnx",
                                                      calibration.images, pre, scheme)
        models = {k: q.OnnxNet(p, pre, net.descriptor_dim, threads=threads) for k, p in files.items()}
        reference = models["float32"](torch.from_numpy(held)).numpy()
        one, eight = torch.randn(1, 3, *size), torch.randn(8, 3, *size)
        for label, model in models.items():
            agreement = q.descriptor_agreement(reference, model(torch.from_numpy(held)).numpy())
            rows.append({"network": name, "precision": label, "file (MB)": files[label].stat().st_size / 1e6,
                         f"b1 {threads}t (ms)": 1e3 * best_seconds(lambda: model(one), reps),
                         f"b8 {threads}t (img/s)": 8 / best_seconds(lambda: model(eight), max(1, reps // 2)),
                         "mean cosine": agreement["mean_cosine"], "worst cosine": agreement["worst_cosine"],
                         "load (1 min)": os.getloadavg()[0]})
    return rows


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--synthetic-dir", default=str(REPO / "LOGS" / "synthetic_data"))
    args = parser.parse_args()
    roots = generate_synthetic(args.synthetic_dir, scale="default", seed=0)
    calibration = q.draw_calibration("gsv_cities", 48, 32, 0, roots["gsv_cities"], SYNTHETIC_CITIES)
    rows = [row for name in args.models for row in measure(name, calibration, args.threads, args.reps)]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "|".join("---" for _ in keys) + "|")
    for row in rows:
        print("| " + " | ".join(f"{v:.4f}" if "cosine" in k else f"{v:,.2f}" if isinstance(v, float) else str(v)
                                for k, v in row.items()) + " |")


if __name__ == "__main__":
    main()
