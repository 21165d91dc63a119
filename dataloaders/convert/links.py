"""How a converter lays images out: links to the raw release's files, never copies (a benchmark is tens of GB)."""
import errno
import os
from pathlib import Path
from typing import Iterable

from utils.errors import ConfigError, NotFoundError

LINKS = ("hard", "symlink")


def prepare_output(out: Path) -> Path:
    """``out`` as a new or empty folder: a converter never writes into (or over) an existing data set."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder: a converter writes a new data set; give another "
                          f"output folder (nothing was changed)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def link_files(pairs: Iterable[tuple[Path, Path]], link: str = "hard") -> int:
    """Make each ``target`` of ``pairs`` ((source, target), ...) a link to its ``source``: a hard link (the
    default; where source and target lie on different file systems, a symbolic link instead) or, with
    ``link='symlink'``, a symbolic link to the source's absolute path. Returns the number of links made."""
    if link not in LINKS:
        raise ConfigError(f"--link {link!r}: choose one of {LINKS}")
    made = 0
    for source, target in pairs:
        if not source.is_file():
            raise NotFoundError(f"{source} not found: the raw release is incomplete")
        target.parent.mkdir(parents=True, exist_ok=True)
        if link == "hard":
            try:
                os.link(source, target)
                made += 1
                continue
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        os.symlink(Path(source).resolve(), target)
        made += 1
    return made
