"""AmsterTime from its release to the layout benchmark ``amstertime`` reads.

Raw (AmsterTime v1.0 unpacked, as VPR-datasets-downloader's ``download_amstertime.py`` reads it):
``<raw>/new/*.png`` (modern street-level photos: the database) and ``<raw>/old/*.jpg`` (archival photos:
the queries), a pair sharing its file name (a number). Out, as that script names them: pair n at the fake
position east 0, north 1000 n, ``images/test/{database,queries}/@0@<1000 n>@@@@@<n>@@@@@@@@<ext>``, so the
25 m radius pairs each query with its database image only. Links keep the PNG database images as PNG (the
script re-encodes them to JPEG; the decoder reads both).
"""
from pathlib import Path

from utils.errors import DataError, NotFoundError

from .links import link_files, prepare_output


def convert(raw: Path, out: Path, link: str = "hard") -> dict:
    """Convert ``raw`` (new/, old/) into ``out``; returns the counts."""
    raw = Path(raw)
    found = {}
    for part, pattern in (("new", "*.png"), ("old", "*.jpg")):
        folder = raw / part
        if not folder.is_dir():
            raise NotFoundError(f"amstertime: {folder} not found: expected AmsterTime v1.0's new/*.png and old/*.jpg")
        found[part] = {p.stem: p for p in sorted(folder.glob(pattern))}
    if sorted(found["new"]) != sorted(found["old"]) or not found["new"]:
        only = sorted(set(found["new"]) ^ set(found["old"]))[:3]
        raise DataError(f"amstertime: new/ and old/ should hold the same pairs (file names); "
                        f"{'they differ, e.g. ' + str(only) if only else 'they are empty'}")
    bad = [n for n in found["new"] if not n.isdigit()]
    if bad:
        raise DataError(f"amstertime: pair names should be numbers, got e.g. {bad[:3]}")
    out = prepare_output(out)
    pairs = [(path, out / "images" / "test" / part / f"@0@{int(pair) * 1000}@@@@@{pair}@@@@@@@@{path.suffix}")
             for source, part in (("new", "database"), ("old", "queries")) for pair, path in found[source].items()]
    link_files(pairs, link)
    return {"database": len(found["new"]), "queries": len(found["old"])}
