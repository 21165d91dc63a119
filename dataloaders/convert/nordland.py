"""Nordland from its season folders to the layout benchmark ``nordland_10frames`` reads.

Raw (what VPR-datasets-downloader's former ``download_nordland.py`` unpacks: the Patch-NetVLAD split of the
Nordland release): ``<raw>/summer/*.png``, ``<raw>/winter/*.png`` and ``<raw>/cleanImageNames.txt``, the
file names kept (one per line). Out, as that script writes it: each season's kept images in sorted name
order, frame n (counted over the kept images) named ``@0@<north>@@@@@<n>@@@@@@@@<ext>`` with north =
n x 25 / 10.5 m written with one decimal and 5 integer digits (``util.format_coord(north, 5, 1)``), summer
into ``images/test/database/`` and winter into ``images/test/queries/``. The images are linked, so they keep
their PNG encoding and extension (the script re-encodes them to JPEG; the decoder reads both).

VPR-Bench's Nordland (benchmark ``nordland``) is not converted here: its frame lists are published only as
the SALAD authors' .npy files, which that benchmark reads directly.
"""
from pathlib import Path

from utils.errors import DataError, NotFoundError

from ..eval.nordland import FRAMES_PER_25_M
from .links import link_files, prepare_output


def frame_name(frame: int, extension: str) -> str:
    """The downloader's file name of Nordland frame ``frame``: fake north frame x 25 / 10.5 m."""
    return f"@0@{frame * 25.0 / FRAMES_PER_25_M:07.1f}@@@@@{frame}@@@@@@@@{extension}"


def convert(raw: Path, out: Path, link: str = "hard") -> dict:
    """Convert ``raw`` (summer/, winter/, cleanImageNames.txt) into ``out``; returns the counts."""
    raw = Path(raw)
    listing = raw / "cleanImageNames.txt"
    if not listing.is_file():
        raise NotFoundError(f"nordland: {listing} not found: expected summer/, winter/ and cleanImageNames.txt "
                            f"(the Patch-NetVLAD split's list of kept frames)")
    kept = {line.strip() for line in listing.read_text().splitlines() if line.strip()}
    frames = {}
    for season in ("summer", "winter"):
        folder = raw / season
        if not folder.is_dir():
            raise NotFoundError(f"nordland: {folder} not found: expected the {season} images as {folder}/*.png")
        frames[season] = [p for p in sorted(folder.glob("*.png")) if p.name in kept]
    if len(frames["summer"]) != len(frames["winter"]) or not frames["summer"]:
        raise DataError(f"nordland: {len(frames['summer'])} summer and {len(frames['winter'])} winter images are in "
                        f"{listing.name}: the seasons should have the same frames")
    out = prepare_output(out)
    pairs = [(path, out / "images" / "test" / part / frame_name(n, path.suffix))
             for season, part in (("summer", "database"), ("winter", "queries"))
             for n, path in enumerate(frames[season])]
    link_files(pairs, link)
    return {"database": len(frames["summer"]), "queries": len(frames["winter"])}
