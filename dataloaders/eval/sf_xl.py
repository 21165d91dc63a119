"""SF-XL test (Berton et al., Rethinking Visual Geo-localization for Large-Scale Applications, CVPR 2022: CosPlace).

The SF-XL release's ``processed/test/`` folder: ``database/`` (the 2.8M-image San Francisco database) and two
query sets, ``queries_v1/`` (1,000 Flickr photos) and ``queries_v2/`` (598 photos of the San Francisco
Landmark Dataset), ``@UTM@...@.jpg`` names, as CosPlace's eval.py reads them
(``TestDataset(<sf_xl>/processed/test, queries_folder="queries_v1")``). Positives: database images within
25 m. Root: ``--data.sf_xl_root`` / ``SF_XL_ROOT`` (the folder holding ``processed/``); under
``--data.benchmarks_root``: ``sf_xl``.
"""
from .folder import folder_format
from .registry import Benchmark, register_benchmark

for _version, _queries, _what in (("v1", 1_000, "Flickr photos"), ("v2", 598, "San Francisco Landmark photos")):
    register_benchmark(Benchmark(
        name=f"sf_xl_test_{_version}", title=f"SF-XL test {_version}",
        citation="Berton et al., Rethinking Visual Geo-localization for Large-Scale Applications, CVPR 2022",
        protocol=f"{_queries:,} {_what} against the SF-XL test database (2.8M images), positives within 25 m",
        root="sf_xl_root", env="SF_XL_ROOT", subfolders=("sf_xl",),
        formats=(folder_format(f"sf_xl_test_{_version}", ("processed/test/database", f"processed/test/queries_{_version}")),),
        counts=(None, _queries), counts_verified=False, counts_source="the CosPlace paper (SF-XL test queries v1 and v2)",
        variants=()))
