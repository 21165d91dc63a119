"""Train and evaluate visual place recognition models with Lightning.

``python main.py`` trains the embedded synthetic demo (configs/synthetic_demo.yaml); flags without a
``--config`` change the demo (``python main.py --trainer.max_epochs 1``).
``python main.py --config configs/mixvpr_resnet50_4096.yaml --data.gsv_root ... --data.pitts_root ...``
trains a published recipe; ``python main.py --help`` lists every setting. Subcommands: fit (default),
validate (the validation sets) and test (the recipe's test sets, ``data.test_sets``). Every recipe is
``configs/base.yaml`` (the paper's recipe) overlaid by the given config.

Every training run writes into a new folder ``<logs_dir>/<name>/version_<n>/`` (CSV and TensorBoard logs,
config.yaml, checkpoints/), every validate or test run into ``<logs_dir>/<name>/validate/version_<n>/`` or
``.../test/version_<n>/`` (test: also recalls.md); each command ends by printing its folder and the files
it wrote. Checkpoint names count epochs from 1 and give recall in percent, as the tables do
(``epoch04-pitts30k_val_R1=85.83.ckpt``). No command deletes or rewrites what an earlier run wrote. A resumed run
(``--ckpt_path``) is a new version too; its config.yaml records the checkpoint it resumed from. It continues
the checkpoint's own settings and training data, or stops with one line that says what differs (check_resume).
A run that the cluster stops (SIGTERM; SIGUSR1 too, unless Lightning's SLURM auto-requeue takes it) finishes
its optimizer step, saves ``checkpoints/last.ckpt``, prints the command that resumes it and exits with 128 +
the signal's number (143, 138): ``utils/preemption.py``.

``from main import VPRModel, load_weights, load_model`` gives the model class and the loaders.
"""
import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI

from dataloaders.datamodule import VPRDataModule
from dataloaders.eval import eval_set_name
from dataloaders.roots import ROOT_ENV
from models import VPRModel, VPRNet, load_model, load_weights
from models.loading import architecture_of, public_settings, read_checkpoint_file, split_checkpoint
from models.network import build_network
from utils.cli import run_command
from utils.errors import CheckpointError, ConfigError
from utils.files import holds_files
from dataloaders.unreadable import SkippedImages
from utils.divergence import StopOnNonFiniteLoss
from utils.preemption import Preemption, without_ckpt_path
from utils.recipes import BASE_RECIPE, CONFIG_DIR
from utils.recall import check_faiss_gpu
from utils.run_folder import RunCheckpoint, RunFolder, last_checkpoint, run_summary
from utils.safe_config import use_safe_config
from utils.seeding import StepSeeds

__all__ = ["VPRModel", "VPRNet", "VPRDataModule", "VPRCLI", "load_weights", "load_model", "main", "settings"]

DEFAULT_CONFIG = CONFIG_DIR / "synthetic_demo.yaml"
SUBCOMMANDS = ("fit", "validate", "test")
DESCRIPTION = (f"Train (fit, the default), validate or test a place recognition model. Without --config the settings "
               f"are the demo's ({DEFAULT_CONFIG.relative_to(CONFIG_DIR.parent)} over configs/base.yaml); flags "
               f"override them (the defaults listed below are configs/base.yaml's, the paper's recipe). Other "
               f"commands: python main.py validate|test --ckpt_path <checkpoint> ... (their --help lists the same "
               f"settings).")
# Lightning's own messages that are noise for this project's users: advertising tips, and a deprecation inside
# Lightning's pytree helper (lightning/pytorch/utilities/_pytree.py on torch >= 2.10) that users cannot act on
QUIET_LOG_PREFIXES = ("\N{ELECTRIC LIGHT BULB} Tip:",)
QUIET_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


class VPRCLI(LightningCLI):
    """LightningCLI with: the base recipe under every config, the image size shared by data and model,
    best-R@1 and last checkpoints, a new run folder per command, checks of ``--ckpt_path``, and a checkpoint
    with a non-zero exit status when the cluster stops the run (SIGTERM, SIGUSR1: ``utils.preemption``)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate and test (Lightning's predict has no use here: ``eval.py`` and ``retrieve.py`` embed)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--name", type=Optional[str], default=None,
                            help="run name: runs go to <logs_dir>/<name>/version_<n> (default: the config's file name)")
        parser.add_argument("--logs_dir", type=str, default="LOGS", help="folder of all runs")
        parser.link_arguments("data.image_size", "model.image_size")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": None,  # None: R@1 of the first validation set
            "checkpoint.mode": "max",
            "checkpoint.save_top_k": 3,
            "checkpoint.save_last": False,  # last.ckpt: its own callback, written every epoch
            "checkpoint.auto_insert_metric_name": False,
        })

    def _parse_ckpt_path(self) -> None:
        # Lightning would replace every model setting by the checkpoint's: check them instead (see check_resume)
        config = self.config[self.config.subcommand] if self.config.get("subcommand") else self.config
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path:
            return
        checkpoint = read_checkpoint_file(ckpt_path)  # read once: a release-sized file takes seconds
        taken = check_resume(ckpt_path, config, self.config.get("subcommand"), self._given, checkpoint)
        eval_size = recorded_eval_size(ckpt_path, config, self._given, checkpoint)
        if eval_size:
            taken["data"]["eval_image_size"] = eval_size
        if taken["model"] or taken["data"]:
            # the model's image size follows data.image_size (a linked setting)
            if "image_size" in taken["model"]:
                taken["data"]["image_size"] = taken["model"].pop("image_size")
            self.config = self.parser.parse_object({self.config.subcommand: taken}, self.config)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if "verbose" in config and not self._verbose_given:
            # validate/test: the model prints each set's recall table once; Lightning's results table would
            # repeat every set's recall in each dataloader's column
            config.verbose = False
        check_accelerator(config.trainer)
        check_whole_evaluation(config.trainer)
        if config.model.faiss_gpu:
            check_faiss_gpu("--model.faiss_gpu true")
        if config.checkpoint.monitor is None:
            config.checkpoint.monitor = f"{eval_set_name(config.data.val_sets[0])}/R1"
        if config.checkpoint.filename is None:
            # RunCheckpoint counts {epoch} from 1 and gives recall in percent
            metric = config.checkpoint.monitor
            config.checkpoint.filename = f"epoch{{epoch:02d}}-{metric.replace('/', '_')}={{{metric}:.2f}}"
        if config.trainer.logger in (None, True):
            configs = [str(c) for c in (config.get("config") or []) if Path(str(c)).resolve() != BASE_RECIPE.resolve()]
            name = config.name or (Path(configs[-1]).stem if configs else "vpr")
            if self.subcommand in ("validate", "test"):
                # evaluations of a checkpoint apart from the training runs: <name>/validate/version_<n>
                name = f"{name}/{self.subcommand}"
            config.trainer.logger = [{"class_path": f"lightning.pytorch.loggers.{cls}",
                                      "init_args": {"save_dir": config.logs_dir, "name": name}}
                                     for cls in ("CSVLogger", "TensorBoardLogger")]

    def instantiate_trainer(self, **kwargs):
        # the data are opened and checked before anything is written: a missing or malformed data set stops
        # the run here, before a run folder exists (Lightning's own calls then find them ready)
        stage = {"fit": "fit", "validate": "validate", "test": "test"}.get(self.subcommand)
        if stage is not None:
            self.datamodule.prepare_data()
            self.datamodule.setup(stage)
        trainer = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        loggers = trainer.get("logger")
        loggers = [loggers] if loggers not in (None, True, False) and not isinstance(loggers, list) else loggers
        folder = RunFolder.reserve(loggers) if isinstance(loggers, list) else None
        callbacks = trainer.get("callbacks") or []
        callbacks = [callbacks] if not isinstance(callbacks, list) else callbacks
        last = last_checkpoint()
        # a preempted run saves once every other callback is done with the step
        command = ["python", "main.py", *without_ckpt_path(self._args)]
        kwargs["callbacks"] = [RunFolder(folder), last, StopOnNonFiniteLoss(), StepSeeds(), SkippedImages(), *callbacks,
                               Preemption(last, command)]
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError) as err:
            # the Trainer refuses its settings (a strategy, devices, precision ...): one line, and no folder left
            if folder is not None and folder.is_dir() and not holds_files(folder):
                shutil.rmtree(folder, ignore_errors=True)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"trainer settings: {first}") from err

    def _run_subcommand(self, subcommand: str) -> None:
        super()._run_subcommand(subcommand)
        if self.trainer.is_global_zero:
            summary = run_summary(self.trainer)
            if summary:
                print(summary)

    def parse_arguments(self, parser, args) -> None:
        # what was given explicitly on the command line (not from configs or defaults): checked against a checkpoint
        self._given = [a.split("=", 1)[0][2:] for a in (args or [])
                       if isinstance(a, str) and a.startswith(("--model.", "--data."))]
        self._verbose_given = any(isinstance(a, str) and a.split("=", 1)[0] == "--verbose" for a in (args or []))
        # this command line: a preempted run prints it to resume
        self._args = [str(a) for a in args] if isinstance(args, (list, tuple)) else sys.argv[1:]
        super().parse_arguments(parser, args)


def check_accelerator(trainer) -> None:
    """ConfigError, before anything is read or written, when the settings ask for a GPU that torch does not see
    (the paper's recipe, configs/base.yaml, trains on one GPU)."""
    accelerator = trainer.get("accelerator")
    if not isinstance(accelerator, str) or accelerator.lower() not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    precision = str(trainer.get("precision"))
    also = (f" --trainer.precision 32-true (the recipe's {precision} would run as bf16-mixed, emulated and slow on "
            f"CPUs without bf16 instructions)" if precision in ("16", "16-mixed", "16-true") else "")
    raise ConfigError(f"the settings ask for a GPU (trainer.accelerator {accelerator}) but torch sees none on this "
                      f"machine: add --trainer.accelerator cpu{also} to run on the CPU")


def check_whole_evaluation(trainer) -> None:
    """ConfigError for a validation or test over part of its sets (``limit_val_batches`` / ``limit_test_batches``
    other than the whole set, or 0 for no validation): recall@K is a property of the whole database and every
    query, and a part of them cannot be scored."""
    for key in ("limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        whole = value is None or (isinstance(value, float) and value == 1.0)
        if whole or (key == "limit_val_batches" and value == 0 and not isinstance(value, bool)):
            continue
        shown = f"{value:g}" if isinstance(value, float) else value
        raise ConfigError(
            f"--trainer.{key} {shown}: recall@K needs every database image and query of a set (a part of the "
            f"database gives another recall, a part of the queries cannot be scored): leave it unset; to validate "
            f"less often use --trainer.check_val_every_n_epoch N, to skip validation --trainer.limit_val_batches 0, "
            f"for smaller sets give others with --data.val_sets")


# settings that only change how a model is evaluated: given ones apply when validating or testing a checkpoint
EVALUATION_ARGS = ("recall_k", "search")  # what validate/test report (and how they search): may differ there
# how the same computation runs (memory layout, recomputation, where faiss searches): may change on any resume
RUNTIME_ARGS = ("faiss_gpu", "keep_eval_descriptors", "channels_last", "activation_checkpointing")
# Data settings a resumed fit may change: every other data setting the checkpoint stores is compared, so a
# new setting is checked unless it is listed here with its reason.
SAME_STREAM_DATA = (
    "num_workers",      # a place's images and augmentation are drawn from (seed, epoch, place) in any worker
    "check_images",     # only checks the files first (the images it leaves out show in the data's fingerprint)
    "skip_unreadable",  # readable images are drawn as before; a run stopped by an unreadable one resumes with it on
    "eval_batch_size", "val_sets", "test_sets", "eval_image_size", "pos_radius", "check_counts",  # evaluation only
    *(root for root in ROOT_ENV if root != "gsv_root"),  # where the evaluation sets are (pitts_root, msls_root, ...)
    # which training data, and where: compared as the data themselves (the datamodule's fingerprint of the
    # cities, places and images, checked when the checkpoint is restored), so a moved copy resumes
    "gsv_root", "synthetic", "synthetic_dir", "cities",
    "image_size",       # compared once, as the model's image size (data.image_size is linked to it)
)


def _plain(value):
    """A setting as plain JSON-like data (tuples as lists, namespaces as dicts), for comparison."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _same(a, b) -> bool:
    """Equal settings, as plain data; an empty dict is no options, the same as None (miner_config={} is the
    model's canonical form of miner_config None)."""
    a, b = _plain(a), _plain(b)
    return (None if a == {} else a) == (None if b == {} else b)


def check_resumable(ckpt_path, checkpoint: dict) -> None:
    """CheckpointError unless ``checkpoint`` holds a training state this project's fit can continue exactly."""
    version = str(checkpoint.get("pytorch-lightning_version", ""))
    start_new = (f"To train from its weights start a new run with --model.init_from {ckpt_path} (and the recipe's "
                 f"--config); validate and test take it with --ckpt_path as it is.")
    if version.split(".")[0].isdigit() and int(version.split(".")[0]) < 2:
        raise CheckpointError(
            f"--ckpt_path {ckpt_path} was written by Lightning {version} (the original MixVPR code or another "
            f"project): its optimizer, schedule and loop states are not this project's (the original trains one "
            f"parameter group with a hand-written warm-up), so its training cannot continue exactly. {start_new}")
    if "optimizer_states" not in checkpoint:
        raise CheckpointError(
            f"--ckpt_path {ckpt_path} holds weights only (saved with save_weights_only: no optimizer or schedule "
            f"state), so its training cannot continue exactly. {start_new}")


def check_resume(ckpt_path, config, subcommand: Optional[str], given: Sequence[str],
                 checkpoint: Optional[dict] = None) -> dict:
    """The settings a run with ``--ckpt_path`` takes from the checkpoint: {'model': {...}, 'data': {...}}.

    The checkpoint's weights fix its architecture, and a resumed fit restores its optimizer, schedule and
    place in the training stream: so a setting given explicitly on the command line that differs from the
    checkpoint's is an error naming the conflict (except evaluation settings such as recall_k when
    validating or testing, and settings of how the same computation runs, such as channels_last or
    activation_checkpointing); a setting that differs only through a config file or a default is taken from
    the checkpoint and said so. A fit compares the data settings too (all but ``SAME_STREAM_DATA``), and
    refuses checkpoints it cannot continue (``check_resumable``); the training data themselves are compared
    when the checkpoint is restored (``VPRDataModule.load_state_dict``). A checkpoint without an image size
    (the original MixVPR code's) is taken at the one its architecture implies, as ``load_model`` does. To
    train other settings or data from a checkpoint's weights, start a new run with ``--model.init_from``.
    ``checkpoint``: the file's contents when already read (``read_checkpoint_file``).
    """
    checkpoint = read_checkpoint_file(ckpt_path) if checkpoint is None else checkpoint
    hparams = split_checkpoint(checkpoint, ckpt_path).hyper_parameters
    if not hparams:
        raise CheckpointError(
            f"--ckpt_path {ckpt_path} is a bare state_dict, not one of our Lightning checkpoints: it holds weights "
            f"but no run to resume or settings to rebuild the model from. To start training from these weights use "
            f"--model.init_from {ckpt_path} (with the recipe's --config); to evaluate them use "
            f"python eval.py --checkpoint {ckpt_path} --config <recipe>.")
    if subcommand == "fit":
        check_resumable(ckpt_path, checkpoint)
    if hparams.get("image_size") is None:
        hparams["image_size"] = list(build_network(**architecture_of(hparams)).image_size)
    current = {k: _plain(v) for k, v in config.model.items()}
    current["image_size"] = _plain(config.data.image_size)
    sections = [("model", hparams, current)]
    if subcommand == "fit":
        data = public_settings(checkpoint.get("datamodule_hyper_parameters"))
        sections.append(("data", {k: v for k, v in data.items() if k not in SAME_STREAM_DATA},
                         {k: _plain(v) for k, v in config.data.items()}))
    taken, conflicts, notes = {"model": {}, "data": {}}, [], []
    for section, saved_settings, current in sections:
        for key, saved in saved_settings.items():
            if key not in current or _same(current[key], saved):
                continue
            saved = _plain(saved)
            explicit = f"{section}.{key}" in given or (key == "image_size" and "data.image_size" in given)
            may_differ = key in RUNTIME_ARGS or (subcommand != "fit" and key in EVALUATION_ARGS)
            if explicit and section == "model" and may_differ:
                continue
            if explicit:
                conflicts.append(f"{key}={current[key]!r} given, the checkpoint has {saved!r}")
                continue
            taken[section][key] = saved
            notes.append(f"{key}={saved!r} (settings said {current[key]!r})")
    if conflicts:
        kind = "architecture, training or training data" if subcommand == "fit" else "architecture"
        raise ConfigError(
            f"--ckpt_path {ckpt_path}: settings conflict with the checkpoint's {kind} settings: " + "; ".join(conflicts)
            + ". A checkpoint continues with its own settings: drop those flags, or start a new run from its "
              "weights with --model.init_from <checkpoint> to train with other settings.")
    if notes:
        print(f"note: {ckpt_path} continues with its own settings: " + ", ".join(notes), file=sys.stderr)
    return taken


def recorded_eval_size(ckpt_path, config, given: Sequence[str], checkpoint: Optional[dict] = None
                       ) -> Optional[list[int]]:
    """The evaluation size a run with ``--ckpt_path`` takes from the checkpoint's preprocessing record (the
    size it was validated at), unless ``--data.eval_image_size`` is given on the command line; a config's or
    the default's other size is said in a note. None: the checkpoint records none (then the settings hold)."""
    checkpoint = read_checkpoint_file(ckpt_path) if checkpoint is None else checkpoint
    record = split_checkpoint(checkpoint, ckpt_path).preprocessing
    if record is None or "data.eval_image_size" in given:
        return None
    size = list(record.image_size)
    current = list(config.data.eval_image_size or config.data.image_size)
    if current != size:
        print(f"note: {ckpt_path} was validated at {size[0]} x {size[1]} (its preprocessing record): evaluating "
              f"at that size, not at the settings' {current[0]} x {current[1]}; --data.eval_image_size overrides",
              file=sys.stderr)
    return size


def command_line(args: Sequence[str]) -> list[str]:
    """The command line main.py runs for ``args``: no subcommand means ``fit`` (``--help`` too: fit's settings),
    and no ``--config`` the demo recipe (``DEFAULT_CONFIG``), which the flags then change. Anything else in
    the subcommand's place is a ConfigError."""
    args = [str(a) for a in args]
    if not args or args[0].startswith("-"):
        args = ["fit", *args]
    if args[0] not in SUBCOMMANDS:
        raise ConfigError(f"unknown command {args[0]!r}: main.py runs fit (the default: python main.py <flags>), "
                          f"validate or test (python main.py validate --ckpt_path <checkpoint> ...); to embed or "
                          f"search images use eval.py or retrieve.py")
    if not any(a in ("-c", "--config") or a.startswith("--config=") for a in args[1:]):
        args = [args[0], "--config", str(DEFAULT_CONFIG), *args[1:]]
    return args


class _QuietLightning(logging.Filter):
    """Drops Lightning's advertising tips (``QUIET_LOG_PREFIXES``) from its info messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(QUIET_LOG_PREFIXES)


def main(args: Optional[Sequence[str]] = None, cli_class: Optional[type] = None) -> VPRCLI:
    """Run the command line (``command_line``): no arguments trains the synthetic demo, no subcommand means
    ``fit``. ``cli_class``: VPRCLI or a subclass (``settings`` uses one that only parses)."""
    from_argv = args is None
    args = command_line(sys.argv[1:] if args is None else args)
    if from_argv:
        # processes that DDP starts re-run this command line: give them the completed one
        sys.argv[1:] = args
    use_safe_config()  # configs parsed with size and alias limits, class_path imports from allowed modules only
    quiet = _QuietLightning()
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    lightning_log.addFilter(quiet)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
        # a resumed run writes into a new folder on purpose (the old one stays as it was)
        warnings.filterwarnings("ignore", message="The dirpath has changed from .* won't be reloaded")
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        try:
            return (cli_class or VPRCLI)(
                VPRModel, VPRDataModule,
                seed_everything_default=0,
                # exit_on_error=False: a setting that does not parse is printed as one line (utils.cli.run_command)
                parser_kwargs={"exit_on_error": False,
                               **{c: {"default_config_files": [str(BASE_RECIPE)], "exit_on_error": False,
                                      **({"description": DESCRIPTION} if c == "fit" else {})} for c in SUBCOMMANDS}},
                trainer_defaults={
                    "logger": True,
                    "callbacks": [LearningRateMonitor(logging_interval="step")],
                    "plugins": [{"class_path": "utils.checkpoint_io.AtomicCheckpointIO"}],
                    "num_sanity_val_steps": 0,
                },
                auto_configure_optimizers=False,
                args=args,
            )
        finally:
            lightning_log.removeFilter(quiet)


class _SettingsOnly(VPRCLI):
    """VPRCLI that parses the command line and stops: no checkpoint is read, nothing is built or run."""

    def _parse_ckpt_path(self) -> None:
        pass

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def settings(args: Sequence[str]):
    """The settings ``python main.py <args>`` would run with (a jsonargparse Namespace: ``.subcommand`` and
    ``[subcommand]``), parsed and checked by type without reading data or checkpoints: what
    ``--print_config`` shows."""
    return main(list(args), cli_class=_SettingsOnly).config


if __name__ == "__main__":
    run_command(lambda argv: main(argv))
