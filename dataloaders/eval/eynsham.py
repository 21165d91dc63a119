"""Eynsham (Cummins and Newman, FAB-MAP 2.0, RSS 2009), as formatted by VPR-datasets-downloader (Berton et al.,
CVPR 2022; its former ``download_eynsham.py``).

Two laps of a 35 km route, panoramas of 5 tiles each, named by the route's KML coordinates in UTM
(``images/test/{database,queries}/@UTM@...@<pano>@<tile>@...@.jpg``): the first 4,787 panoramas (23,935
images) are the database, the second lap the queries. Positives: database images within 25 m.
Root: ``--data.eynsham_root`` / ``EYNSHAM_ROOT``; under ``--data.benchmarks_root``: ``eynsham``.
"""
from .folder import folder_format
from .registry import Benchmark, register_benchmark

register_benchmark(Benchmark(
    name="eynsham", title="Eynsham",
    citation="Cummins and Newman, Highly scalable appearance-only SLAM - FAB-MAP 2.0, RSS 2009; sampled and "
             "formatted by Berton et al., Deep Visual Geo-Localization Benchmark, CVPR 2022",
    protocol="the second lap's 23,935 images against the first lap's 23,935 (4,787 panoramas x 5 tiles), "
             "positives within 25 m",
    root="eynsham_root", env="EYNSHAM_ROOT", subfolders=("eynsham",),
    formats=(folder_format("eynsham"),),
    counts=(23_935, 23_935), counts_verified=False, counts_source="download_eynsham.py (4,787 database panoramas x 5 tiles) and the "
                                            "Deep Visual Geo-Localization Benchmark"))
