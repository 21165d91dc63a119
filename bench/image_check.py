"""How long ``data.check_images`` takes: decoding every image before training, on the synthetic default set
and, extrapolated, on the real GSV-Cities (530k images of 640 x 480).

    python bench/image_check.py                       # LOGS/synthetic_data (python main.py generates it)
    python bench/image_check.py --root /data/synthetic --workers 0 1 3 --real_size 200

``find_unreadable`` (dataloaders/unreadable.py) reads and fully decodes each file with the training
decoder in DataLoader worker processes. Timed per worker count on every image of the synthetic default
set (GSV-Cities, Pittsburgh, MSLS: 128 x 96 JPEGs): wall images/s and images per CPU-second of the
process and its workers (what a busy machine does not distort; N free cores give N times it). Then the
per-image CPU cost at the real sets' 640 x 480 (``--real_size`` synthetic images upscaled and saved at
JPEG quality 90, in a temporary folder), which gives the estimate for 530k images, and for comparison the
cost of reading only the header (PIL ``Image.open``): cheaper, but blind to the truncated files
(a copy or download that stopped) that the check is for.

Measured on the 2-core development machine (AMD EPYC, shared with other jobs, load average 2.4), on the
synthetic default set (8,946 images: GSV-Cities, Pittsburgh and MSLS at 128 x 96), run from a checkout that
holds LOGS/synthetic_data:

| what | images/s (wall) | images per CPU-s |
|---|---|---|
| full decode, 0 workers, 128 x 96 | 4,474 | 4,550 |
| full decode, 1 worker, 128 x 96 | 3,284 | 3,333 |
| full decode, 640 x 480 photo-like JPEGs (89 KB), per core | | 429 (2.33 ms per image) |
| header only (PIL ``Image.open``), 640 x 480, per core | | 7,565 |

(An earlier run under load average 5 gave 1,741 and 3,069 images/s wall for 0 and 1 worker: the wall
rates follow the machine's load, the per-CPU-second rates less so.)

Estimate for the real GSV-Cities (530k images at 640 x 480): 530k x 2.33 ms = 21 CPU-minutes, so about
1.4 minutes on a 16-core machine (15 workers), 3 minutes on 8 cores, 21 minutes on 2; the validation sets
(pitts30k_val + msls_val, 37k images) take 1.5 CPU-minutes. A header check would be 18 times cheaper but
passes truncated files, the case the check exists for.
"""
import argparse
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.image_io import decode_rgb, read_bytes  # noqa: E402
from dataloaders.unreadable import find_unreadable  # noqa: E402

REAL_SIZE = (640, 480)  # (width, height) of GSV-Cities, Pittsburgh and MSLS images


def cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def check_rates(paths: list[Path], workers: list[int]) -> dict[int, tuple[float, float]]:
    """{workers: (wall images/s, images per CPU-second)} of ``find_unreadable`` over ``paths``."""
    rates = {}
    for n in workers:
        cpu, start = cpu_seconds(), time.perf_counter()
        bad = find_unreadable(paths, num_workers=n, progress=False)
        wall = time.perf_counter() - start
        assert len(bad) == 0, f"{len(bad)} unreadable images in the synthetic set"
        rates[n] = (len(paths) / wall, len(paths) / (cpu_seconds() - cpu))
    return rates


def photo_like(source: Path, rng: np.random.Generator, noise: float) -> bytes:
    """``source`` upscaled to 640 x 480 with Gaussian grain of ``noise`` grey levels (an upscaled rendering is
    smoother than a photo, and a smooth JPEG decodes faster), as a quality-90 JPEG."""
    pixels = np.asarray(Image.open(source).convert("RGB").resize(REAL_SIZE, Image.BILINEAR), dtype=np.float32)
    pixels = np.clip(pixels + rng.normal(0, noise, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def real_size_costs(sources: list[Path], count: int, noise: float) -> tuple[float, float, float]:
    """(CPU seconds per full decode, per header read, mean file KB) of ``count`` photo-like JPEGs at 640 x 480."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, source in enumerate(sources[:: max(1, len(sources) // count)][:count]):
            path = Path(folder) / f"{i}.jpg"
            path.write_bytes(photo_like(source, rng, noise))
            paths.append(path)
        kilobytes = sum(p.stat().st_size for p in paths) / len(paths) / 1e3
        for path in paths:  # warm the page cache: the cost of decoding, not of the disk
            path.read_bytes()
        start = time.process_time()
        for path in paths:
            decode_rgb(read_bytes(path), path)
        decode = (time.process_time() - start) / len(paths)
        start = time.process_time()
        for path in paths:
            with Image.open(path) as image:
                image.size
        header = (time.process_time() - start) / len(paths)
    return decode, header, kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("LOGS/synthetic_data/default-seed0-v2"),
                        help="a synthetic set folder (gsv_cities/, pitts/, msls/)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--real_size", type=int, default=200, help="images decoded at 640 x 480")
    parser.add_argument("--noise", type=float, default=8.0, help="grain of the 640 x 480 images, grey levels")
    args = parser.parse_args()
    paths = sorted(p for p in args.root.rglob("*.jpg"))
    if not paths:
        sys.exit(f"no images under {args.root}: run python main.py once (it generates the synthetic set)")
    print(f"{len(paths)} images under {args.root}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for n, (wall, per_cpu) in check_rates(paths, args.workers).items():
        print(f"full decode, {n} worker(s): {wall:,.0f} images/s wall, {per_cpu:,.0f} images per CPU-s")
    decode, header, kilobytes = real_size_costs(paths, args.real_size, args.noise)
    print(f"640 x 480 ({kilobytes:.0f} KB per file): full decode {1e3 * decode:.2f} ms ({1 / decode:,.0f} per CPU-s), header only "
          f"{1e3 * header:.3f} ms ({1 / header:,.0f} per CPU-s)")
    for images, what in ((530_000, "GSV-Cities"), (37_000, "pitts30k_val + msls_val")):
        print(f"{what} ({images:,} images): {images * decode / 60:.0f} CPU-minutes; "
              + ", ".join(f"{images * decode / max(1, c - 1) / 60:.1f} min on {c} cores" for c in (2, 8, 16)))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
