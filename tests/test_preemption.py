"""Nothing is lost when the cluster stops a run: SIGTERM/SIGUSR1 end it at a step boundary with a checkpoint that
resumes with the steps not yet trained; checkpoints are staged beside their target and a failed write says why;
a new run removes only the temporaries this host can prove are debris."""
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from main import main
from tiny_cli import read_steps, tiny_cli_args
from utils.checkpoint_io import AtomicCheckpointIO
from utils.errors import UserError, WriteError
from utils.files import host_id, remove_orphan_temporaries

REPO = Path(__file__).resolve().parents[1]
CITIES = "[Synthville, Pixelburg, Rendertown]"  # 18 places in steps of 4: 5 steps per epoch (the last of 2)
STEPS_PER_EPOCH = 5


def run_args(synthetic, logs: Path, name: str, log: Path, *callbacks: dict, epochs: int = 2, workers: int = 0,
             delay: float = 0.0) -> list[str]:
    """Tiny-CLI arguments: three cities, every batch, one validation set; a StepLog to ``log`` and ``callbacks``."""
    steps = {"class_path": "tiny_cli.StepLog", "init_args": {"path": str(log), "delay": delay}}
    return tiny_cli_args(synthetic, logs, epochs, name) + [
        "--data.cities", CITIES, "--trainer.limit_train_batches", "1.0", "--trainer.num_sanity_val_steps", "0",
        "--data.val_sets", "[pitts30k_val]", "--data.num_workers", str(workers),
        "--trainer.callbacks", json.dumps([steps, *callbacks])]


def signal_at(step: int, name: str = "SIGTERM", phase: str = "train", rank: int = 0) -> dict:
    return {"class_path": "tiny_cli.SignalAt",
            "init_args": {"step": step, "signal": name, "phase": phase, "rank": rank}}


def start(args: list[str]) -> subprocess.Popen:
    """``python main.py <args>`` in a process group of its own (one intra-op thread, as the tests run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    return subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    """The stderr of ``proc`` once it ended; a process (group) still running after ``timeout`` s is killed."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running after {timeout} s (a deadlock?): {proc.communicate()[1][-3000:]}")


def preempted_line(stderr: str) -> str:
    """The one line a preempted run prints."""
    lines = [line for line in stderr.splitlines() if line.startswith("preempted")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def resume_from(line: str) -> tuple[Path, list[str]]:
    """(checkpoint, main() arguments) of the resume command the preempted line names."""
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:2] == ["python", "main.py"]
    return Path(command[command.index("--ckpt_path") + 1]), command[2:]


@pytest.fixture(scope="module")
def straight(synthetic, tmp_path_factory) -> list[dict]:
    """The steps of an uninterrupted two-epoch run."""
    logs = tmp_path_factory.mktemp("straight")
    main(run_args(synthetic, logs, "straight", logs / "steps.jsonl"))
    steps = read_steps(logs / "steps.jsonl")
    assert [(s["epoch"], s["batch"]) for s in steps] == [(e, b) for e in (0, 1) for b in range(STEPS_PER_EPOCH)]
    return steps


def saved_step(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True, map_location="cpu")["global_step"]


# ---------------------------------------------------------------- SIGTERM / SIGUSR1: checkpoint, exit status, resume
def test_sigterm_mid_epoch_saves_last_ckpt_exits_143_and_the_resume_trains_the_rest(synthetic, tmp_path, straight):
    log = tmp_path / "steps.jsonl"
    # the signal arrives during step 3 (epoch 0, batch 2): that step finishes, nothing after it runs
    proc = start(run_args(synthetic, tmp_path, "run", log, signal_at(2)))
    stderr = finish(proc)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    line = preempted_line(stderr)
    checkpoint, resume = resume_from(line)
    assert checkpoint == tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert "SIGTERM" in line and "optimizer step 3 (epoch 0, batch 2)" in line and str(checkpoint) in line
    assert saved_step(checkpoint) == 3 and read_steps(log) == straight[:3]
    assert not [p for p in checkpoint.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    # the printed command resumes it: the rest of epoch 0 (its places not yet trained), then epoch 1
    main(resume)
    assert read_steps(log) == straight


def test_sigterm_to_the_process_group_from_outside_stops_at_a_step_with_workers(synthetic, tmp_path, straight):
    # as SLURM or systemd stop a job: every process of the group gets SIGTERM, data loader workers included
    log = tmp_path / "steps.jsonl"
    proc = start(run_args(synthetic, tmp_path, "run", log, workers=1, delay=0.3))
    deadline = time.monotonic() + 240
    while len(read_steps(log)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    stderr = finish(proc)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    checkpoint, resume = resume_from(preempted_line(stderr))
    done = read_steps(log)
    assert 2 <= len(done) < STEPS_PER_EPOCH and saved_step(checkpoint) == len(done)  # mid-epoch, the step it ended
    main(resume)
    steps = read_steps(log)
    assert [s["places"] for s in steps] == [s["places"] for s in straight]
    assert [s["loss"] for s in steps] == pytest.approx([s["loss"] for s in straight], rel=1e-6)


@pytest.mark.parametrize("name,phase,step", [("SIGUSR1", "validation", STEPS_PER_EPOCH),  # during epoch 0's validation
                                             ("SIGTERM", "train", STEPS_PER_EPOCH - 1)])  # during its last step
def test_signal_at_the_end_of_an_epoch_keeps_the_epoch(synthetic, tmp_path, straight, capsys, name, phase, step):
    # a real signal to this (the training) process
    log = tmp_path / "steps.jsonl"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with pytest.raises(SystemExit) as stopped:
        main(run_args(synthetic, tmp_path, "run", log, signal_at(step, name, phase)))
    assert stopped.value.code == 128 + getattr(signal, name)
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the process's own handlers are back
    line = preempted_line(capsys.readouterr().err)
    assert name in line and f"optimizer step {STEPS_PER_EPOCH} " in line
    assert "validation of epoch 0 did not finish" in line and "python main.py validate" in line
    checkpoint, resume = resume_from(line)
    assert saved_step(checkpoint) == STEPS_PER_EPOCH and read_steps(log) == straight[:STEPS_PER_EPOCH]
    main(resume)
    assert read_steps(log) == straight


def test_sigterm_caught_by_lightnings_handler_before_training_still_saves_and_exits_143(synthetic, tmp_path, straight):
    # Lightning's handler is in place from just before the first hook of fit (and DDP processes may wait there for
    # one another): a SIGTERM then sets its flag, which alone would end the run with status 0 and nothing saved
    log = tmp_path / "steps.jsonl"
    with pytest.raises(SystemExit) as stopped:
        main(run_args(synthetic, tmp_path, "run", log, signal_at(0, phase="start")))
    assert stopped.value.code == 128 + signal.SIGTERM
    checkpoint = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert saved_step(checkpoint) == 1 and read_steps(log) == straight[:1]


def test_sigterm_during_validate_exits_143_and_leaves_no_run_folder(synthetic, tmp_path, capsys):
    args = tiny_cli_args(synthetic, tmp_path) + ["--data.val_sets", "[pitts30k_val]", "--trainer.callbacks",
                                                 json.dumps([signal_at(0, phase="validation")])]
    with pytest.raises(SystemExit) as stopped:
        main(["validate", *args])
    assert stopped.value.code == 128 + signal.SIGTERM
    line = preempted_line(capsys.readouterr().err)
    assert "SIGTERM" in line and "nothing to save" in line
    assert not list((tmp_path / "synthetic_demo").rglob("version_*"))  # validate runs: synthetic_demo/validate/


def test_two_processes_stop_at_the_same_step_when_one_is_signalled(synthetic, tmp_path, straight):
    # only rank 1 gets SIGTERM (during step 2): both ranks finish that step, rank 0 writes, nobody hangs
    log = tmp_path / "steps.jsonl"
    args = run_args(synthetic, tmp_path, "run", log, signal_at(1, rank=1), epochs=1) + [
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    proc = start(args)
    stderr = finish(proc)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    checkpoint, _ = resume_from(preempted_line(stderr))
    ranks = [read_steps(f"{log}.rank{r}") for r in (0, 1)]
    assert [len(steps) for steps in ranks] == [2, 2] and saved_step(checkpoint) == 2
    # the two ranks' places of each step are the single-process step's
    assert [a["places"] + b["places"] for a, b in zip(*ranks)] == [s["places"] for s in straight[:2]]


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
