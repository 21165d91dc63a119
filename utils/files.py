"""Writing files so that a reader never sees a half-written one and an interrupted write leaves no debris;
the SHA-256 of a file."""
import hashlib
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    The temporary file lives in the same folder (``os.replace`` is atomic within a file system) under a
    unique hidden name ``.<name>.<pid>.<random>.tmp`` (the pid tells whether its writer still runs), with
    ``path``'s suffix appended when ``keep_suffix`` (writers that look at the suffix, like ``np.save``,
    then behave the same). On error it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f"{TMP_SUFFIX}{path.suffix}" if keep_suffix else TMP_SUFFIX
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes the file private (0600): give the result the permissions a new file gets
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of the file at ``path`` (hex), read in chunks of ``chunk`` bytes (about 0.5 s for 350 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode())


def next_version(root: Path) -> int:
    """One more than the highest ``version_<n>`` under ``root`` (0 when there is none)."""
    found = [int(m.group(1)) for p in Path(root).glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(found, default=-1) + 1


def reserve_version(root: Path, start: int = 0) -> int:
    """Create ``root/version_<n>`` for the first free n >= ``start`` (exclusive mkdir: two processes never
    get the same folder); returns n."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = max(start, next_version(root))
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1
