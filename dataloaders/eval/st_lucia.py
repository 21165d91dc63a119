"""St Lucia (Milford and Wyeth, T-RO 2008), as formatted by VPR-datasets-downloader (Berton et al., CVPR 2022).

The downloader's former ``download_st_lucia.py``: the first of the recorded drives is the database and the
last one the queries, a frame kept every 5 m or more, named by the GPS of ``fGPS.txt`` in UTM
(``images/test/{database,queries}/@UTM@...@.jpg``). Positives: database images within 25 m.
Root: ``--data.st_lucia_root`` / ``ST_LUCIA_ROOT``; under ``--data.benchmarks_root``: ``st_lucia``.
"""
from .folder import folder_format
from .registry import Benchmark, register_benchmark

register_benchmark(Benchmark(
    name="st_lucia", title="St Lucia",
    citation="Milford and Wyeth, Mapping a Suburb With a Single Camera Using a Biologically Inspired SLAM System, "
             "T-RO 2008; sampled and formatted by Berton et al., Deep Visual Geo-Localization Benchmark, CVPR 2022",
    protocol="1,464 query frames of the last drive against 1,549 frames of the first, positives within 25 m",
    root="st_lucia_root", env="ST_LUCIA_ROOT", subfolders=("st_lucia",),
    formats=(folder_format("st_lucia"),),
    counts=(1_549, 1_464), counts_verified=False, counts_source="Deep Visual Geo-Localization Benchmark (Berton et al., CVPR 2022)"))
