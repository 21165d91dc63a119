"""Deterministic synthetic VPR data written in the real on-disk formats (GSV-Cities, Pittsburgh, MSLS, and a
stand-in of every other registered benchmark in its own format).

Modules: ``world`` (seeded random streams, building styles, facades, imaging conditions, street layouts),
``render`` (camera, renderer, occluders, parallel rendering of views), ``formats`` (byte-stable, atomic
JPEG/CSV/MAT/NPY files), one writer per data set (``gsv_cities``, ``pittsburgh``, ``msls``, ``benchmarks``) and
``generate`` (all of them once per scale and seed, in folders safe to share). ``python -m
dataloaders.synthetic <root>`` generates from the command line.

Everything is drawn from numpy Generators seeded by (seed, names of the thing drawn): the same seed
writes the same bytes, whatever the order or process in which images are rendered.
"""
from .generate import GENERATOR_VERSION, SCALES, generate_synthetic, set_folder, synthetic_roots
from .gsv_cities import SYNTHETIC_CITIES, make_gsv_cities
from .benchmarks import make_benchmarks
from .msls import MSLS_CITIES, MSLS_TEST_CITIES, make_msls
from .pittsburgh import PITTSBURGH_SPLITS, make_pittsburgh
from .render import IMAGE_SIZE

__all__ = ["GENERATOR_VERSION", "IMAGE_SIZE", "MSLS_CITIES", "PITTSBURGH_SPLITS", "SCALES", "SYNTHETIC_CITIES",
           "MSLS_TEST_CITIES", "generate_synthetic", "make_benchmarks", "make_gsv_cities", "make_msls", "make_pittsburgh", "set_folder", "synthetic_roots"]
