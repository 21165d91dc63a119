"""Tokyo 24/7 (Torii et al., 24/7 Place Recognition by View Synthesis, CVPR 2015 / TPAMI 2018).

VPR-datasets-downloader's ``format_tokyo247.py`` writes it in the folder format: the 75,984 database
crops of NetVLAD's ``tokyo247.mat`` (UTM zone 54S) and the 315 queries of ``247query_subset_v2`` (105
places at day, sunset and night, resized to 480 px), ``images/test/{database,queries}/@UTM@...@.jpg``.
Positives: database images within 25 m of the query (VPR-methods-evaluation's ``positive_dist_threshold``).
Root: ``--data.tokyo247_root`` / ``TOKYO247_ROOT``; under ``--data.benchmarks_root``: ``tokyo247``.
"""
from .folder import folder_format
from .registry import Benchmark, register_benchmark

register_benchmark(Benchmark(
    name="tokyo247", title="Tokyo 24/7",
    citation="Torii et al., 24/7 Place Recognition by View Synthesis, CVPR 2015; formatted by VPR-datasets-downloader",
    protocol="315 day, sunset and night queries against 75,984 database images, positives within 25 m",
    root="tokyo247_root", env="TOKYO247_ROOT", subfolders=("tokyo247",),
    formats=(folder_format("tokyo247"),),
    counts=(75_984, 315), counts_verified=False, counts_source="tokyo247.mat and 247query_subset_v2 (format_tokyo247.py)",
    variants=(((75_984, 1_125), "the full 1,125-image query set instead of the 315 of 247query_subset_v2"),)))
