"""Converters from the raw releases of the benchmarks to the layouts their readers take, with links instead of
copies: ``python -m dataloaders.convert <set> <raw> <out>``. Each converter's module states the raw layout it
takes, from the published source that pins it, and what it writes.

- ``sped``: SPEDTEST's ref/ and query/ -> VPR-Bench's layout with SPED_{dbImages,qImages,gt}.npy (``sped``);
- ``nordland_10frames``: the summer/ and winter/ seasons and cleanImageNames.txt -> VPR-datasets-downloader's
  folder layout with its fake coordinates (``nordland_10frames``);
- ``amstertime``: AmsterTime v1.0's new/ and old/ -> the folder layout with one fake position per pair;
- ``msls_val``: the MSLS release's CSVs -> the msls_val_*.npy ground truth (any cities, any subtask).
"""
from . import amstertime, msls, nordland, sped

CONVERTERS = {"sped": sped.convert, "nordland_10frames": nordland.convert, "amstertime": amstertime.convert,
              "msls_val": msls.convert}

__all__ = ["CONVERTERS"]
