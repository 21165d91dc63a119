"""Nothing is lost when the cluster stops a run: SIGTERM/SIGUSR1 end it at a step boundary with a checkpoint that
resumes with the steps not yet trained; checkpoints are staged beside their target and a failed write says why;
a new run removes only the temporaries this host can prove are debris."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from utils.checkpoint_io import AtomicCheckpointIO
from utils.errors import UserError, WriteError
from utils.files import host_id, remove_orphan_temporaries

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- checkpoint writes: staged beside the target
def test_checkpoint_is_staged_beside_its_target_not_in_tmpdir(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "tmpdir-is-a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("TMPDIR", str(not_a_folder))
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))  # gettempdir() is cached: point it there too
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(1000.0)}, "global_step": 7}, target)
    saved = torch.load(target, weights_only=True)
    assert saved["global_step"] == 7 and torch.equal(saved["state_dict"]["w"], torch.arange(1000.0))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


WRITE_BEYOND_LIMIT = """
import resource, signal, sys
import torch
from utils.checkpoint_io import AtomicCheckpointIO
from utils.errors import UserError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of the process dying
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(1_000_000)}}, sys.argv[1])
except UserError as err:
    print(type(err).__name__, err.errno, err, sep="\\n")
"""


def test_failed_checkpoint_write_names_the_file_and_free_space_and_keeps_the_previous(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(10)}}, target)
    previous = target.read_bytes()
    # a real write that fails: the file size limit (EFBIG), as a full disk (ENOSPC) or quota (EDQUOT) would
    out = subprocess.run([sys.executable, "-c", WRITE_BEYOND_LIMIT, str(target)], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    kind, errno, message = out.stdout.strip().split("\n")
    assert kind == "WriteError" and int(errno) == 27 and "\n" not in message
    assert str(target) in message and "File too large" in message
    assert "free" in message and "needs about 4.0 MB" in message
    assert target.read_bytes() == previous and [p.name for p in target.parent.iterdir()] == ["last.ckpt"]
    assert issubclass(WriteError, UserError) and issubclass(WriteError, OSError)


# ---------------------------------------------------------------- temporaries: only this host's dead writers' debris
WRITER = """
import sys, time
from utils.files import atomic_path
with atomic_path(sys.argv[1], keep_suffix=sys.argv[2] == "keep") as tmp:
    tmp.write_bytes(b"half written")
    print(tmp, flush=True)
    time.sleep(60)
"""


def killed_writer(target: Path, keep_suffix: bool = True) -> Path:
    """The temporary file a real writer of ``target`` left when it was killed (SIGKILL) in the middle of it."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), "keep" if keep_suffix else "no"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    debris = Path(writer.stdout.readline().strip())
    writer.kill()
    writer.wait()
    assert debris.is_file() and debris.name.startswith(f".{target.name}.{host_id()}.{writer.pid}.")
    return debris


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_this_hosts_dead_writers_temporaries_are_removed(tmp_path, capsys):
    debris = killed_writer(tmp_path / "last.ckpt", keep_suffix=False)
    pid = dead_pid()
    live = tmp_path / f".epoch00.ckpt.{host_id()}.{os.getpid()}.abcd1234.tmp"  # a writer of this host that runs
    other_host = tmp_path / f".last.ckpt.not-{host_id()}.{pid}.abcd1234.tmp"  # its pid means nothing here
    old_format = tmp_path / f".last.ckpt.{pid}.abcd1234.tmp"  # no host in the name: nothing proves it dead
    unrelated = tmp_path / ".notes.tmp"
    for path in (live, other_host, old_format, unrelated):
        path.write_bytes(b"x")
    assert remove_orphan_temporaries(tmp_path) == [debris]
    assert not debris.exists() and all(p.exists() for p in (live, other_host, old_format, unrelated))
    note = capsys.readouterr().err.strip()
    assert note.count("\n") == 0 and note.startswith("note:") and other_host.name in note and old_format.name in note
    remove_orphan_temporaries(tmp_path / "absent")  # a folder that does not exist: nothing to do


def test_descriptor_cache_and_export_remove_dead_writers_debris(synthetic, tmp_path):
    from models import VPRModel
    from models.export import export
    from models.inference import cached_embed_paths

    model = VPRModel(backbone_arch="resnet18", layers_to_crop=[4], agg_arch="GeM", image_size=(32, 32)).net.eval()
    cache = tmp_path / "cache"
    cache_debris = killed_writer(cache / "pitts-0123456789abcdef.npy")
    live = cache / f".pitts-0123456789abcdef.npy.{host_id()}.{os.getpid()}.abcd1234.tmp.npy"
    live.write_bytes(b"x")
    images = sorted(str(p) for p in (synthetic["pitts"] / "queries_real").rglob("*.jpg"))[:2]
    cached_embed_paths(model, images, cache, "set", batch_size=2, progress=False)
    assert not cache_debris.exists() and live.exists()

    out = tmp_path / "export" / "model.pt"
    export_debris = killed_writer(out)
    export(model, out, "torchscript", (32, 32))
    assert out.is_file() and not export_debris.exists()
