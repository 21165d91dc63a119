"""Suites: the benchmark columns of a paper's table, so that ``--benchmarks '[suite:boq]'`` evaluates what the
table reports and recalls.md lays the results out as that table does (its columns, its titles, its K).

Each suite names the table it copies; a column whose set has no public labels (the MSLS challenge) gives
the challenge file instead of numbers. Columns of the tables that no registered benchmark reproduces are
left out and named in ``omitted``.
"""
from dataclasses import dataclass

from utils.errors import ConfigError

from .registry import BENCHMARKS

SUITE_PREFIX = "suite:"


@dataclass(frozen=True)
class Suite:
    """A paper's table: ``columns`` ((benchmark, column title as the table prints it), ...) in its order, the
    recall@K it prints (``ks``), where the table is (``citation``) and its columns this project cannot
    reproduce (``omitted``)."""

    name: str
    citation: str
    columns: tuple[tuple[str, str], ...]
    ks: tuple[int, ...] = (1, 5, 10)
    omitted: str = ""

    @property
    def benchmarks(self) -> list[str]:
        """The benchmark names of the columns, in order."""
        return [name for name, _ in self.columns]

    @property
    def titles(self) -> dict[str, str]:
        """Benchmark name -> the column title the table prints."""
        return dict(self.columns)


SUITES = {s.name: s for s in (
    Suite("mixvpr", "MixVPR (Ali-bey et al., WACV 2023), the table of trained models in its README "
                    "(github.com/amaralibey/MixVPR)",
          (("pitts250k_test", "Pitts250k-test"), ("pitts30k_test", "Pitts30k-test"), ("msls_val", "MSLS-val"))),
    Suite("boq", "BoQ (Ali-bey et al., CVPR 2024), the 'BoQ with ResNet50 backbone' table of its README "
                 "(github.com/amaralibey/Bag-of-Queries)",
          (("msls_val", "MSLS-val"), ("pitts30k_test", "Pitts30k-test"), ("pitts250k_test", "Pitts250k-test"),
           ("nordland", "Nordland*"), ("nordland_10frames", "Nordland**"), ("sped", "SPED"), ("eynsham", "Eynsham"),
           ("amstertime", "AmsterTime"), ("st_lucia", "St-Lucia"), ("svox_night", "Svox-night"),
           ("svox_sun", "Svox-sun"), ("svox_rain", "Svox-rain"), ("svox_snow", "Svox-snow"),
           ("svox_overcast", "Svox-overcast")),
          ks=(1, 5, 10, 20), omitted="Svox-all (the query set of the column is not published with its counts)"),
    Suite("salad", "SALAD (Izquierdo and Civera, CVPR 2024), the sets of its eval.py (VAL_DATASETS, "
                   "github.com/serizba/salad) and its README's table (MSLS Challenge, MSLS Val, NordLand)",
          (("msls_test", "MSLS Challenge"), ("msls_val", "MSLS Val"), ("nordland", "NordLand"),
           ("pitts30k_test", "Pitts30k-test"), ("pitts250k_test", "Pitts250k-test"), ("sped", "SPED"))),
    Suite("cosplace", "CosPlace (Berton et al., CVPR 2022), the columns of its comparison with the state of the art",
          (("pitts250k_test", "Pitts250k"), ("pitts30k_test", "Pitts30k"), ("tokyo247", "Tokyo 24/7"),
           ("msls_val_all", "MSLS"), ("sf_xl_test_v1", "SF-XL v1"), ("sf_xl_test_v2", "SF-XL v2"))),
)}


def get_suite(spec: str) -> Suite:
    """The suite of ``suite:<name>``; ConfigError listing the suites otherwise."""
    try:
        return SUITES[spec[len(SUITE_PREFIX):]]
    except KeyError:
        raise ConfigError(f"unknown suite {spec!r}; choose one of "
                          f"{[SUITE_PREFIX + name for name in SUITES]}") from None


def expand_benchmarks(specs) -> tuple[list[str], "Suite | None"]:
    """(benchmark names with every ``suite:<name>`` replaced by its columns, each name once, in order; the
    suite when ``specs`` is exactly one suite, whose table layout recalls.md then takes)."""
    names, suites = [], []
    for spec in specs:
        if spec.startswith(SUITE_PREFIX):
            suites.append(get_suite(spec))
            names += suites[-1].benchmarks
        else:
            names.append(spec)
    unknown = [n for s in suites for n in s.benchmarks if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"suites name unregistered benchmarks {unknown}")
    return list(dict.fromkeys(names)), suites[0] if len(specs) == 1 and suites else None
