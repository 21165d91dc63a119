"""SVOX (Berton et al., Adaptive-Attentive Geolocalization From Few Queries: A Hybrid Approach, WACV 2021).

Oxford: a Google Street View database and RobotCar queries under five conditions, as
VPR-datasets-downloader's ``download_svox.py`` unpacks it: ``images/test/gallery/`` (the database) and
``images/test/queries_<condition>/`` (night, overcast, rain, snow, sun), ``@UTM@...@.jpg`` names.
Positives: database images within 25 m. Each condition is its own benchmark, ``svox_<condition>``, as the
BoQ, EigenPlaces and MegaLoc tables have a column per condition. Root: ``--data.svox_root`` / ``SVOX_ROOT``;
under ``--data.benchmarks_root``: ``svox``.
"""
from .folder import folder_format
from .registry import Benchmark, register_benchmark

DATABASE = 17_166
CONDITIONS = {"night": 823, "overcast": 872, "rain": 937, "snow": 870, "sun": 854}  # queries per condition

for _condition, _queries in CONDITIONS.items():
    register_benchmark(Benchmark(
        name=f"svox_{_condition}", title=f"SVOX-{_condition}",
        citation="Berton et al., Adaptive-Attentive Geolocalization From Few Queries: A Hybrid Approach, WACV 2021",
        protocol=f"{_queries:,} RobotCar {_condition} queries against the {DATABASE:,}-image Street View gallery, "
                 f"positives within 25 m",
        root="svox_root", env="SVOX_ROOT", subfolders=("svox",),
        formats=(folder_format(f"svox_{_condition}", ("images/test/gallery", f"images/test/queries_{_condition}")),),
        counts=(DATABASE, _queries), counts_verified=False, counts_source="the SVOX test split (Berton et al., WACV 2021)",
        variants=tuple(((DATABASE, n), f"the {other} queries (--benchmarks svox_{other})")
                       for other, n in CONDITIONS.items() if other != _condition)))
