"""Command line: ``python -m dataloaders.convert <set> <raw> <out> [--link hard|symlink] [--cities ...]``."""
import time
from typing import Iterable, Literal, Optional

from jsonargparse import ArgumentParser

from utils.cli import run_command
from utils.errors import ConfigError

from . import CONVERTERS
from .links import LINKS


def main(argv: Optional[Iterable[str]] = None) -> dict:
    """Convert one raw release; print what was written and where."""
    parser = ArgumentParser(prog="python -m dataloaders.convert", exit_on_error=False,
                            description="Convert a benchmark's raw release to the layout its reader takes (links, no copies).")
    parser.add_argument("set", type=Literal[tuple(CONVERTERS)], help="the benchmark to convert")
    parser.add_argument("raw", type=str, help="the raw release's folder (see the converter's module for its layout)")
    parser.add_argument("out", type=str, help="a new (or empty) folder to write the converted set into")
    parser.add_argument("--link", type=Literal[LINKS], default="hard",
                        help="hard links (default; symbolic ones across file systems) or symbolic links")
    parser.add_argument("--cities", type=Optional[list[str]], default=None, help="msls_val: the cities (default cph, sf)")
    parser.add_argument("--subtask", type=Optional[str], default=None, help="msls_val: the subtask (default all)")
    args = parser.parse_args(None if argv is None else list(argv))
    options = {k: v for k, v in (("cities", args.cities), ("subtask", args.subtask)) if v is not None}
    if options and args.set != "msls_val":
        raise ConfigError(f"{sorted(options)} apply to msls_val only, not {args.set}")
    start = time.perf_counter()
    counts = CONVERTERS[args.set](args.raw, args.out, args.link, **options)
    print(f"{args.set}: {args.out} written in {time.perf_counter() - start:.1f} s: "
          + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in counts.items())
          + f". Evaluate it with --data.{'msls_root' if args.set == 'msls_val' else args.set + '_root'} {args.out}")
    return counts


if __name__ == "__main__":
    run_command(main)
