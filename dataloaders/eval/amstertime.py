"""AmsterTime (Yildiz et al., AmsterTime: A Visual Place Recognition Benchmark Dataset for Severe Domain Shift,
ICPR 2022), as VPR-datasets-downloader's ``download_amstertime.py`` formats it.

1,231 pairs: an archival photo of Amsterdam (query, ``old/``) and a modern street-level photo of the same
place (database, ``new/``). Positions are not published, so the downloader gives pair n the fake position
east 0, north 1000 n (``@0@<1000 n>@@@@@<n>@@@@@@@@.jpg``): the 25 m radius makes each pair's database image
the query's only positive. Root: ``--data.amstertime_root`` / ``AMSTERTIME_ROOT``; under
``--data.benchmarks_root``: ``amstertime``.
"""
from .folder import folder_format
from .registry import Benchmark, register_benchmark

register_benchmark(Benchmark(
    name="amstertime", title="AmsterTime",
    citation="Yildiz et al., AmsterTime: A Visual Place Recognition Benchmark Dataset for Severe Domain Shift, "
             "ICPR 2022; formatted by VPR-datasets-downloader",
    protocol="1,231 archival queries against 1,231 modern images, the query's pair as the only positive (25 m on "
             "fake coordinates 1 km apart)",
    root="amstertime_root", env="AMSTERTIME_ROOT", subfolders=("amstertime",),
    formats=(folder_format("amstertime", radius_from="25 m on the downloader's fake coordinates, 1 km apart: "
                                                     "the pair"),),
    counts=(1_231, 1_231), counts_verified=False, counts_source="the 1,231 pairs of AmsterTime v1.0 (download_amstertime.py)"))
