"""Train and evaluate visual place recognition models with Lightning.

``python main.py`` trains the embedded synthetic demo (configs/synthetic_demo.yaml).
``python main.py --config configs/mixvpr_resnet50_4096.yaml --data.gsv_root ... --data.pitts_root ...``
trains a published recipe; ``python main.py --help`` lists every setting. Subcommands: fit (default),
validate (the validation sets) and test (the recipe's test sets, ``data.test_sets``). Every recipe is
``configs/base.yaml`` (the paper's recipe) overlaid by the given config.

Every run writes into a new folder ``<logs_dir>/<name>/version_<n>/`` (CSV and TensorBoard logs,
config.yaml, checkpoints/): no command deletes or rewrites what an earlier run wrote. A resumed run
(``--ckpt_path``) is a new version too; its config.yaml records the checkpoint it resumed from. It continues
the checkpoint's own settings and training data, or stops with one line that says what differs (check_resume).
A run that the cluster stops (SIGTERM; SIGUSR1 too, unless Lightning's SLURM auto-requeue takes it) finishes
its optimizer step, saves ``checkpoints/last.ckpt``, prints the command that resumes it and exits with 128 +
the signal's number (143, 138): ``utils/preemption.py``.

``from main import VPRModel, load_weights, load_model`` gives the model class and the loaders.
"""
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from dataloaders.datamodule import VPRDataModule
from dataloaders.eval import eval_set_name
from models import VPRModel, VPRNet, load_model, load_weights
from models.loading import architecture_of, public_settings, read_checkpoint_file, split_checkpoint
from models.network import build_network
from utils.cli import run_command
from utils.errors import CheckpointError, ConfigError
from dataloaders.unreadable import SkippedImages
from utils.divergence import StopOnNonFiniteLoss
from utils.preemption import Preemption, without_ckpt_path
from utils.recipes import BASE_RECIPE, CONFIG_DIR
from utils.run_folder import RunFolder, last_checkpoint
from utils.safe_config import use_safe_config
from utils.seeding import StepSeeds

__all__ = ["VPRModel", "VPRNet", "VPRDataModule", "VPRCLI", "load_weights", "load_model", "main"]

DEFAULT_CONFIG = CONFIG_DIR / "synthetic_demo.yaml"
SUBCOMMANDS = ("fit", "validate", "test")


class VPRCLI(LightningCLI):
    """LightningCLI with: the base recipe under every config, the image size shared by data and model,
    best-R@1 and last checkpoints, a new run folder per command, checks of ``--ckpt_path``, and a checkpoint
    with a non-zero exit status when the cluster stops the run (SIGTERM, SIGUSR1: ``utils.preemption``)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--name", type=Optional[str], default=None,
                            help="run name: runs go to <logs_dir>/<name>/version_<n> (default: the config's file name)")
        parser.add_argument("--logs_dir", type=str, default="LOGS", help="folder of all runs")
        parser.link_arguments("data.image_size", "model.image_size")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
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
        if config.checkpoint.monitor is None:
            config.checkpoint.monitor = f"{eval_set_name(config.data.val_sets[0])}/R1"
        if config.checkpoint.filename is None:
            metric = config.checkpoint.monitor
            config.checkpoint.filename = f"epoch{{epoch:02d}}-{metric.replace('/', '_')}={{{metric}:.4f}}"
        if config.trainer.logger in (None, True):
            configs = [str(c) for c in (config.get("config") or []) if Path(str(c)).resolve() != BASE_RECIPE.resolve()]
            name = config.name or (Path(configs[-1]).stem if configs else "vpr")
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
        return super().instantiate_trainer(**kwargs)

    def parse_arguments(self, parser, args) -> None:
        # what was given explicitly on the command line (not from configs or defaults): checked against a checkpoint
        self._given = [a.split("=", 1)[0][2:] for a in (args or [])
                       if isinstance(a, str) and a.startswith(("--model.", "--data."))]
        self._verbose_given = any(isinstance(a, str) and a.split("=", 1)[0] == "--verbose" for a in (args or []))
        # this command line: a preempted run prints it to resume
        self._args = [str(a) for a in args] if isinstance(args, (list, tuple)) else sys.argv[1:]
        super().parse_arguments(parser, args)


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
    "eval_batch_size", "val_sets", "test_sets", "eval_image_size", "pos_radius",  # evaluation only
    "pitts_root", "msls_root",  # where the evaluation sets are
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


def main(args: Optional[Sequence[str]] = None) -> VPRCLI:
    """Run the command line; no arguments trains the synthetic demo, no subcommand means ``fit``."""
    from_argv = args is None
    args = list(sys.argv[1:] if args is None else args)
    if not args:
        args = ["--config", str(DEFAULT_CONFIG)]
    if args[0] not in SUBCOMMANDS and args[0] not in ("-h", "--help"):
        args = ["fit", *args]
    if from_argv:
        # processes that DDP starts re-run this command line: give them the completed one
        sys.argv[1:] = args
    use_safe_config()  # configs parsed with size and alias limits, class_path imports from allowed modules only
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
        # a resumed run writes into a new folder on purpose (the old one stays as it was)
        warnings.filterwarnings("ignore", message="The dirpath has changed from .* won't be reloaded")
        return VPRCLI(
            VPRModel, VPRDataModule,
            seed_everything_default=0,
            # exit_on_error=False: a setting that does not parse is printed as one line (utils.cli.run_command)
            parser_kwargs={"exit_on_error": False,
                           **{c: {"default_config_files": [str(BASE_RECIPE)], "exit_on_error": False} for c in SUBCOMMANDS}},
            trainer_defaults={
                "logger": True,
                "callbacks": [LearningRateMonitor(logging_interval="step")],
                "plugins": [{"class_path": "utils.checkpoint_io.AtomicCheckpointIO"}],
                "num_sanity_val_steps": 0,
            },
            auto_configure_optimizers=False,
            args=args,
        )


if __name__ == "__main__":
    run_command(lambda argv: main(argv))
