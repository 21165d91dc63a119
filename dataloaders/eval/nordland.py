"""Nordland (Sünderhauf et al., ICRA 2013 workshop): a 728 km train ride filmed in four seasons, frame by frame.

It is published in versions that give different numbers; two are registered here.

``nordland``: VPR-Bench's (Zaffar et al., IJCV 2021), as BoQ ("Nordland*, 1-frame threshold") and SALAD
report it. 27,592 database images (``ref/``, the winter sequence) and 2,760 queries (``query/``, the
summer sequence every 10th frame); the SALAD authors publish ``Nordland_dbImages.npy``
(``ref/0000000.jpg``...), ``Nordland_qImages.npy`` (``query/0000000.jpg``...) and ``Nordland_gt.npy``
(object array: query i's positives are database frames 10 i - 1, 10 i and 10 i + 1, i.e. +-1 frame of its
own, inside the sequence), github.com/serizba/salad ``datasets/Nordland/``. The images come from the
VPR-Bench share the SALAD loader names. Root: ``--data.nordland_root`` / ``NORDLAND_ROOT``; under
``--data.benchmarks_root``: ``nordland_vprbench``.

``nordland_10frames``: VPR-datasets-downloader's (Berton et al.; its former ``download_nordland.py``, the
Patch-NetVLAD split's 27,592 ``cleanImageNames.txt`` frames), as BoQ's "Nordland**, 10-frames threshold":
27,592 summer images as the database and the 27,592 winter images as queries (database and queries the
other way round from VPR-Bench's), in the folder format with fake coordinates: east 0, north = frame x
25 / 10.5 m (``@0@<north>@@@@@<frame>@@@@@@@@.jpg``), so the 25 m radius makes positives the frames within
+-10 of the query's. Root: ``--data.nordland_10frames_root`` / ``NORDLAND_10FRAMES_ROOT``; under
``--data.benchmarks_root``: ``nordland`` (the downloader's folder name).

SelaVPR's "Nordland-test" (3,450 images, +-2 frames, the downsampled pr-nordland release) is not
registered: its files and frame lists are not published in a form this project can pin.
"""
from .folder import folder_format
from .registry import Benchmark, register_benchmark
from .vpr_bench import vpr_bench_format

FRAMES_PER_25_M = 10.5  # the downloader's spacing: 25 m / 10.5 per frame, so +-10 frames lie within 25 m
CITATION = ("Sünderhauf et al., Are we there yet? Challenging SeqSLAM on a 3000 km journey across all four "
            "seasons, ICRA 2013 workshop")

register_benchmark(Benchmark(
    name="nordland", title="Nordland (VPR-Bench)",
    citation=CITATION + "; VPR-Bench (Zaffar et al., IJCV 2021); ground truth files of SALAD (Izquierdo and "
             "Civera, CVPR 2024, github.com/serizba/salad datasets/Nordland)",
    protocol="2,760 summer queries (every 10th frame) against the whole 27,592-image winter sequence, a positive "
             "within +-1 frame (VPR-Bench's; BoQ's Nordland*, SALAD's NordLand)",
    root="nordland_root", env="NORDLAND_ROOT", subfolders=("nordland_vprbench",),
    formats=(vpr_bench_format("Nordland", "nordland", "VPR-Bench's +-1 frame", "nordland_root"),),
    counts=(27_592, 2_760), counts_source="Nordland_dbImages.npy and Nordland_qImages.npy of the SALAD repository",
    variants=(((27_592, 27_592), "the 27,592-query version: VPR-datasets-downloader's Nordland, +-10 frames "
                                 "(--benchmarks nordland_10frames)"),
              ((3_450, 3_450), "SelaVPR's 3,450-image Nordland-test (+-2 frames), which is not registered"))))

register_benchmark(Benchmark(
    name="nordland_10frames", title="Nordland (10 frames)",
    citation=CITATION + "; the version of VPR-datasets-downloader (Berton et al., CVPR 2022; Patch-NetVLAD's split)",
    protocol="27,592 winter queries against the 27,592 summer frames, a positive within +-10 frames (25 m on the "
             "fake coordinates of the file names, 25 / 10.5 m per frame; BoQ's Nordland**)",
    root="nordland_10frames_root", env="NORDLAND_10FRAMES_ROOT", subfolders=("nordland",),
    formats=(folder_format("nordland_10frames", radius=25.0,
                           radius_from="25 m on the downloader's fake coordinates, 25 / 10.5 m per frame: +-10 frames"),),
    counts=(27_592, 27_592), counts_source="VPR-datasets-downloader's download_nordland.py (cleanImageNames.txt)",
    variants=(((27_592, 2_760), "VPR-Bench's Nordland with 2,760 queries and +-1 frame (--benchmarks nordland)"),
              ((2_760, 27_592), "VPR-Bench's Nordland with database and queries swapped (--benchmarks nordland)"))))
