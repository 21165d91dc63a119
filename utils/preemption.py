"""Ending a run that the cluster stops (SIGTERM, SIGUSR1) at a step boundary, with a checkpoint to resume from
and an exit status that says it did not finish.

SLURM and Kubernetes stop a job with SIGTERM and kill it (SIGKILL) after a grace period (Kubernetes: 30 s by
default; SLURM: ``KillWait``); SLURM's ``--signal=USR1@<seconds>`` warns ahead of the time limit. What
Lightning 2.6 does on its own: on SIGTERM it sets ``trainer.received_sigterm`` (and passes the signal on to the
processes its launcher started) and ends the loop after the current batch by raising ``SIGTERMException``, a
``SystemExit`` without a code: the process exits 0 and saves nothing. SIGUSR1 has no handler outside SLURM and
kills the process. Under SLURM with auto-requeue (``SLURMEnvironment``'s default), SIGUSR1 makes Lightning save
``hpc_ckpt_<n>.ckpt`` in ``default_root_dir`` from inside the signal handler (wherever the step is) and requeue
the job with ``scontrol requeue``; SIGTERM is then only logged before the same ``SIGTERMException``. That
SIGUSR1 stays Lightning's here; everything else is ``Preemption``'s.
"""
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class Preempted(SystemExit):
    """The run stopped on a signal. ``code`` is 128 + the signal's number, what a shell reports for a process
    that the signal killed (143 for SIGTERM, 138 for SIGUSR1): a job script or requeue policy sees that the run
    did not finish."""


class Preemption(Callback):
    """On SIGTERM (and SIGUSR1, unless Lightning's SLURM auto-requeue takes it): let the optimizer step in
    progress finish, write the run's ``last.ckpt`` (atomically, through the Trainer's checkpoint IO), print one
    line naming the signal, the step, the file and the command that resumes it, and exit with 128 + the
    signal's number (``Preempted``). The resumed run continues mid-epoch with the places not yet trained.

    The signal handler only notes the signal; it is acted on at the end of every optimizer step, validation
    batch and training epoch. Under DDP the processes agree there (a max-reduce of the signal number), so all
    stop after the same step even when only one of them was signalled, and rank 0 writes the checkpoint. A
    signal during the validation that follows an epoch keeps the epoch's training, but that validation is not
    repeated on resume (the line says how to measure it). ``validate`` and ``test`` have nothing to save: they
    end with the same status.

    checkpoint: the ModelCheckpoint that writes ``last.ckpt`` (``utils.run_folder.last_checkpoint``).
    command: this run's command line (``python main.py fit ...``, without ``--ckpt_path``): printed with
        ``--ckpt_path <file>`` as the way to resume.
    """

    def __init__(self, checkpoint: ModelCheckpoint, command: Optional[Sequence[str]] = None):
        self.checkpoint = checkpoint
        self.command = list(command) if command else None
        self.signum: Optional[int] = None

    # --------------------------------------------------------------------------------------- the handler
    def _on_signal(self, signum: int, frame) -> None:
        # only a note: the step in progress finishes, the hooks below act on it
        if self.signum is None:
            self.signum = signum

    def _install(self, trainer: Trainer) -> None:
        """Handle the stop signals from here on (Lightning registered its handlers just before the first hook
        that calls this, and restores the process's own when the Trainer tears down)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if trainer.received_sigterm:  # it came while Lightning's handler was in place: it is ours to act on
            self.signum = self.signum or signal.SIGTERM
            trainer._signal_connector.received_sigterm = False  # (Lightning's would end the run with status 0)
        for signum in self._signals(trainer):
            if signal.getsignal(signum) != self._on_signal:
                signal.signal(signum, self._on_signal)

    @staticmethod
    def _signals(trainer: Trainer) -> list[int]:
        signals = [signal.SIGTERM]
        usr1 = getattr(signal, "SIGUSR1", None)
        environment = getattr(trainer._accelerator_connector, "cluster_environment", None)
        requeued = (isinstance(environment, SLURMEnvironment) and environment.auto_requeue
                    and environment.requeue_signal == usr1)
        if usr1 is not None and not requeued:
            signals.append(usr1)
        return signals

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install(trainer)

    # --------------------------------------------------------------------------------------- where it stops
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches and batch_idx + 1 < trainer.num_training_batches:
            return  # in the middle of an accumulated optimizer step
        self._stop_if_signalled(trainer, "train")

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._stop_if_signalled(trainer, "validation")

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._stop_if_signalled(trainer, "test")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop_if_signalled(trainer, "epoch end")

    def _agreed_signal(self, trainer: Trainer) -> int:
        """The signal that stops the run (0: none yet), the same on every process."""
        if trainer.world_size == 1:
            return self.signum or 0
        noted = torch.tensor([self.signum or 0], device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(noted, reduce_op="max").item())

    def _stop_if_signalled(self, trainer: Trainer, phase: str) -> None:
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        name = signal.Signals(signum).name
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            what = "before the first training step" if trainer.sanity_checking else f"during {phase}"
            self._say(trainer, f"preempted: {name} {what}: nothing to save (results are written at the end); "
                               f"run the same command again")
            raise Preempted(128 + signum)
        path = Path(self.checkpoint.dirpath) / f"{self.checkpoint.filename}{self.checkpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path, weights_only=False)  # every process takes part; rank 0 writes
        epoch, done = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed
        line = (f"preempted: {name} after optimizer step {trainer.global_step} (epoch {epoch}, batch {done - 1}): "
                f"saved {path}")
        if phase == "validation" or (phase == "train" and done >= trainer.num_training_batches
                                     and self._validates_after(trainer, epoch)):
            line += (f"; the validation of epoch {epoch} did not finish and is not repeated on resume (python main.py "
                     f"validate with the same arguments and --ckpt_path measures it)")
        if self.command:
            line += f"; resume with: {self._command(path)}"
        self._say(trainer, line)
        raise Preempted(128 + signum)

    @staticmethod
    def _validates_after(trainer: Trainer, epoch: int) -> bool:
        every = trainer.check_val_every_n_epoch
        return trainer.enable_validation and (every is None or (epoch + 1) % every == 0)

    def _command(self, path: Path) -> str:
        return shlex.join([*self.command, "--ckpt_path", str(path)])

    @staticmethod
    def _say(trainer: Trainer, line: str) -> None:
        if trainer.is_global_zero:
            print(line, file=sys.stderr, flush=True)


def without_ckpt_path(args: Sequence[str]) -> list[str]:
    """Command-line ``args`` without their ``--ckpt_path`` (``--ckpt_path X`` or ``--ckpt_path=X``)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not str(arg).startswith("--ckpt_path="):
            kept.append(arg)
    return kept
