"""SPED (Chen et al., ICRA 2018; the SPEDTEST split of VPR-Bench, Zaffar et al., IJCV 2021): 607 webcam
views as the database (``ref/``) and 607 views of the same cameras in another season or time of day as
queries (``query/``), file names pairing them (``ref/0000123.jpg`` is ``query/0000123.jpg``'s place).

Positives: the exact match, query i's only positive is database image i. Formats, tried in this order:
- VPR-Bench's layout with the SALAD authors' files (github.com/serizba/salad ``datasets/SPED/``):
  ``SPED_dbImages.npy`` (``ref/0000000.jpg``...), ``SPED_qImages.npy`` (``query/0000000.jpg``...) and
  ``SPED_gt.npy``, a (607, 1) int64 array holding i in row i (``vpr_bench``);
- VPR-datasets-downloader's ``download_sped.py``: the same SPEDTEST pairs moved to
  ``images/test/{database,queries}/@0@<1000 x number>@@@@@<number>@@@@@@@@.jpg``: fake coordinates 1 km
  apart, so the 25 m radius gives the same exact match.
Root: ``--data.sped_root`` / ``SPED_ROOT``; under ``--data.benchmarks_root``: ``sped_vprbench`` or ``sped``.
"""
from .folder import folder_format
from .registry import Benchmark, register_benchmark
from .vpr_bench import vpr_bench_format

register_benchmark(Benchmark(
    name="sped", title="SPED",
    citation="Chen et al., Learning context flexible attention model for long-term visual place recognition, "
             "RA-L 2018; SPEDTEST of VPR-Bench (Zaffar et al., IJCV 2021); ground truth files of SALAD "
             "(github.com/serizba/salad datasets/SPED)",
    protocol="607 queries against 607 database images of the same webcams, the exact match as the only positive",
    root="sped_root", env="SPED_ROOT", subfolders=("sped_vprbench", "sped"),
    formats=(vpr_bench_format("SPED", "sped", "the exact match, as published", "sped_root"),
             folder_format("sped", radius=25.0, radius_from="25 m on the downloader's fake coordinates, 1 km "
                                                            "apart: the exact match")),
    counts=(607, 607), counts_source="SPED_dbImages.npy and SPED_qImages.npy of the SALAD repository"))
