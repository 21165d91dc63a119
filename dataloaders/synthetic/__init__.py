"""Deterministic synthetic VPR data written in the real on-disk formats (GSV-Cities, Pittsburgh, MSLS-val).

Modules: ``world`` (seeded random streams, building styles, facades, imaging conditions, street layouts),
``render`` (camera, renderer, occluders, parallel rendering of views), ``formats`` (byte-stable, atomic
JPEG/CSV/MAT/NPY files), one writer per data set (``gsv_cities``, ``pittsburgh``, ``msls``) and
``generate`` (all three once per scale and seed, in folders safe to share). ``python -m
dataloaders.synthetic <root>`` generates from the command line.

Everything is drawn from numpy Generators seeded by (seed, names of the thing drawn): the same seed
writes the same bytes, whatever the order or process in which images are rendered.
"""
from .generate import GENERATOR_VERSION, SCALES, generate_synthetic, set_folder, synthetic_roots
from .gsv_cities import SYNTHETIC_CITIES, make_gsv_cities
from .msls import MSLS_CITIES, make_msls
from .pittsburgh import PITTSBURGH_SPLITS, make_pittsburgh
from .render import IMAGE_SIZE

__all__ = ["GENERATOR_VERSION", "IMAGE_SIZE", "MSLS_CITIES", "PITTSBURGH_SPLITS", "SCALES", "SYNTHETIC_CITIES",
           "generate_synthetic", "make_gsv_cities", "make_msls", "make_pittsburgh", "set_folder", "synthetic_roots"]
