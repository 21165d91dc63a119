"""Writing files so that a reader never sees a half-written one, and removing what an interrupted write left.

A temporary file is named ``.<name>.<host>.<pid>.<random>.tmp`` (then the target's suffix when kept): the host
and the pid say who writes it, so that debris can be told from a write in progress. Only the host that wrote a
temporary can tell whether its writer still runs (``remove_orphan_temporaries``); on a shared file system
another node's temporaries are never touched. Also: the SHA-256 of a file.
"""
import errno as errno_names
import functools
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .errors import WriteError

TMP_SUFFIX = ".tmp"
# what atomic_path (and the synthetic generator's folders) name a temporary; the host holds no dot
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp(?:\.[^.]+)?")
# Linux's first pid namespace (PROC_PID_INIT_INO): the one of processes that run in no container
_INITIAL_PID_NAMESPACE = 0xEFFFFFFC


@functools.lru_cache(maxsize=None)
def host_id() -> str:
    """This host as temporary names give it: its name in letters, digits, '-' and '_' (at most 63), with
    ``-pidns<n>`` appended in a container's own pid namespace (a pid means something only inside its namespace:
    containers that share a host name, as Kubernetes pods on the host network do, are told apart)."""
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()).strip("-")[:63] or "host"
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return host
    return host if namespace == _INITIAL_PID_NAMESPACE else f"{host}-pidns{namespace}"


def temporary_prefix(path: str | Path) -> str:
    """``.<name>.<host>.<pid>.``: what the temporaries this process writes for ``path`` start with."""
    return f".{Path(path).name}.{host_id()}.{os.getpid()}."


def temporary_writer(name: str) -> Optional[tuple[str, int]]:
    """(host, pid) of the writer of the temporary called ``name``; None when ``name`` is no temporary's."""
    match = _TEMPORARY.fullmatch(name)
    return (match["host"], int(match["pid"])) if match else None


def is_running(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (unknown, so assumed, where signals cannot tell)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    The temporary file lives in the same folder (``os.replace`` is atomic within a file system; a file staged
    in ``$TMPDIR`` would be copied, not renamed, and a small ``/tmp`` would fill up) under a unique hidden
    name ``.<name>.<host>.<pid>.<random>.tmp`` (who writes it: ``remove_orphan_temporaries``), with
    ``path``'s suffix appended when ``keep_suffix`` (writers that look at the suffix, like ``np.save``,
    then behave the same). On error it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f"{TMP_SUFFIX}{path.suffix}" if keep_suffix else TMP_SUFFIX
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=suffix, dir=path.parent)
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


def remove_orphan_temporaries(*folders: str | Path) -> list[Path]:
    """Delete the temporary files in ``folders`` that this host's writers left when they were killed (their
    pid no longer runs); returns them. Kept: a running writer's, and those this host cannot judge: another
    host's (on a shared file system its pid means nothing here) and names without a host (an older version's);
    one note on stderr names those."""
    removed, kept, me = [], [], host_id()
    for folder in folders:
        for tmp in sorted(Path(folder).glob(f".*{TMP_SUFFIX}*")):
            writer = temporary_writer(tmp.name)
            if writer is None or not tmp.is_file():
                continue
            if writer[0] != me:
                kept.append(tmp)
            elif not is_running(writer[1]):
                try:
                    tmp.unlink()
                except FileNotFoundError:  # another run cleaned it first
                    pass
                except OSError:  # a read-only folder: it stays
                    continue
                removed.append(tmp)
    if kept:
        names = ", ".join(str(p) for p in kept[:3]) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
        print(f"note: kept {len(kept)} temporary file(s) that a writer on another host (or an older version of "
              f"this project) left or is writing: {names}; this host cannot tell whether their writer still runs: "
              f"delete them once no run writes there", file=sys.stderr)
    return removed


def write_error(path: str | Path, err: OSError, size: Optional[int] = None, what: str = "file",
                fix: str = "make room there or write to another folder") -> WriteError:
    """A one-line ``WriteError`` for an atomic write of ``path`` that failed with ``err``: the file, the failure,
    the free space of its file system and ``size`` (bytes the file needs) when known."""
    path = Path(path)
    code = errno_names.errorcode.get(err.errno or 0)
    failure = f"{err.strerror or err}" + (f" ({code})" if code else "")
    space = ""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        space = f"; {human_size(shutil.disk_usage(folder).free)} free in {folder}"
    except OSError:
        pass
    needs = f", the {what} needs about {human_size(size)}" if size else ""
    error = WriteError(f"could not write {what} {path}: {failure}{space}{needs}. The previous {path.name} (if any) "
                       f"is unchanged and no temporary file is left: {fix}")
    error.errno = err.errno  # (strerror and filename stay unset: str(error) is the message)
    return error


def human_size(n: int) -> str:
    """``n`` bytes as kB, MB, GB or TB with one decimal (powers of 1000)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


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


def holds_files(folder: Path) -> bool:
    """Whether ``folder`` (or any folder under it) holds a file."""
    return any(not p.is_dir() for p in Path(folder).rglob("*"))


@contextmanager
def reserved_version(root: Path) -> Iterator[Path]:
    """``root/version_<n>`` reserved (``reserve_version``) for the block; when the block fails, the folder
    is removed again if nothing was written into it (empty sub-folders aside), so a failed run leaves no
    empty version behind; one holding files (pictures of the benchmarks done) is kept."""
    folder = Path(root) / f"version_{reserve_version(root)}"
    try:
        yield folder
    except BaseException:
        if folder.is_dir() and not holds_files(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise
