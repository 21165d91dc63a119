"""Command line: ``python -m dataloaders.synthetic <root> [--scale tiny] [--seed 0] [--workers N]``."""
import time
from typing import Iterable, Literal, Optional

from jsonargparse import ArgumentParser

from utils.cli import run_command

from . import SCALES, generate_synthetic


def main(argv: Iterable[str] | None = None) -> dict:
    """Generate the data sets of one scale and seed under ``root`` (nothing if already there); print where."""
    parser = ArgumentParser(
        prog="python -m dataloaders.synthetic",
        description="Deterministic synthetic VPR data in the real on-disk formats (GSV-Cities, Pittsburgh, MSLS, the other benchmarks).",
        exit_on_error=False)
    parser.add_argument("root", type=str, help="folder to write <scale>-seed<seed>-v<version>/{gsv_cities,pitts,msls,benchmarks} into")
    parser.add_argument("--scale", type=Literal[tuple(sorted(SCALES))], default="default", help="size of the sets")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything drawn")
    parser.add_argument("--workers", type=Optional[int], default=None, help="rendering processes (default: CPUs, max 4)")
    args = parser.parse_args(None if argv is None else list(argv))
    start = time.perf_counter()
    paths = generate_synthetic(args.root, args.scale, args.seed, args.workers)
    print(f"synthetic data ({args.scale}, seed {args.seed}) ready in {time.perf_counter() - start:.1f} s:")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return paths


if __name__ == "__main__":
    run_command(main)
