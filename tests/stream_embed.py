"""Embed a list of images into a descriptor cache, chunk by chunk; say how many images this process embedded.

Run by tests/test_search.py as
``python tests/stream_embed.py <weights> <images.txt> <cache_dir> <out.json> [--delay s] [--rank r --world w --port p]``:
``--delay`` sleeps before each batch (so that a kill lands mid-way), ``--rank/--world/--port`` join a gloo
process group of ``world`` CPU processes on 127.0.0.1:``port``.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models import load_weights  # noqa: E402
from models.inference import cached_embed_paths  # noqa: E402
from models.network import build_network  # noqa: E402

CHUNK, BATCH = 4, 2


def tiny_net(weights: str):
    """ResNet18 + GeM at 32 x 32 with the weights of ``weights`` (the tests' gem_weights)."""
    net = build_network("resnet18", agg_arch="GeM", image_size=(32, 32))
    load_weights(net, weights)
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("weights", "images", "cache", "out"):
        parser.add_argument(name)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank,
                                             world_size=args.world)
    net = tiny_net(args.weights)
    embedded = []

    def count(module, inputs):
        embedded.append(len(inputs[0]))
        time.sleep(args.delay)

    net.register_forward_pre_hook(count)
    paths = Path(args.images).read_text().splitlines()
    descriptors, _, reused = cached_embed_paths(net, paths, args.cache, "set", chunk_size=CHUNK, batch_size=BATCH,
                                                progress=False)
    Path(args.out).write_text(json.dumps({"embedded": sum(embedded), "rows": len(descriptors), "reused": reused}))
    if args.world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
