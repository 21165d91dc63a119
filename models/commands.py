"""Command-line settings shared by eval.py and retrieve.py, in the flag style of main.py.

Both take a training recipe (``--config configs/x.yaml``, read over configs/base.yaml as in training)
and the same ``--model.*`` and ``--data.*`` settings as ``main.py``; the model settings give the
architecture of bare state_dicts (the authors' releases), whose files carry none. Settings of the
training command that evaluating does not use (trainer, checkpointing, the optimiser ...) are accepted in a
``--config`` recipe and ignored there, so that any recipe can be given; given as flags on the command line
they are refused (``refuse_unused_flags``): a flag a command accepts takes effect.
"""
import sys
from typing import Literal, Optional, Sequence, Union

from jsonargparse import ActionConfigFile, ArgumentParser
from jsonargparse.typing import PositiveInt

from dataloaders.datamodule import VPRDataModule
from dataloaders.eval import root_settings
from utils.errors import ConfigError
from utils.recall import check_faiss_gpu
from utils.recipes import BASE_RECIPE
from utils.safe_config import use_safe_config
from utils.search import Searcher

from .descriptor_cache import DTYPES
from .inference import PRECISIONS
from .network import ARCHITECTURE_ARGS
from .vpr_model import VPRModel

Precision = Literal[tuple(PRECISIONS)]

# data settings of training alone: the evaluation commands embed with their own --batch_size, --num_workers
TRAINING_DATA = ("gsv_root", "cities", "batch_size", "img_per_place", "min_img_per_place", "shuffle_all",
                 "rand_augment_ops", "num_workers", "decode_on", "val_sets", "eval_batch_size", "check_images")
# data settings of the benchmarks (their roots, sets and positives): eval.py's, not retrieve's or export's
# (every benchmark root of the registry, so a new benchmark's root is covered without a list to extend)
BENCHMARK_DATA = ("test_sets", *sorted(set(root_settings()) - {"gsv_root"}), "pos_radius", "check_counts",
                  "synthetic", "synthetic_dir", "synthetic_scale", "seed")
# the flag of these commands that does what a refused training flag would do
INSTEAD = {"data.batch_size": "--batch_size", "data.eval_batch_size": "--batch_size",
           "data.num_workers": "--num_workers", "data.val_sets": "--benchmarks", "model.recall_k": "--k", "trainer.precision": "--precision",
           "trainer.accelerator": "--device", "trainer.devices": "--device", "logs_dir": "--out_dir",
           "model.faiss_gpu": "--faiss_gpu", "name": "--names"}


def recipe_parser(prog: str, description: str) -> ArgumentParser:
    """A parser with --config, --checkpoint and the sections of a training recipe; the command adds its own."""
    use_safe_config()  # configs parsed with size and alias limits, class_path imports from allowed modules only
    # exit_on_error=False: a setting that does not parse is raised and printed as one line (utils.cli.run_command)
    parser = ArgumentParser(prog=prog, description=description, default_config_files=[str(BASE_RECIPE)],
                            parser_mode="yaml", exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a training recipe (configs/*.yaml)")
    parser.add_argument("--checkpoint", type=Union[list[str], str], required=True,
                        help="our Lightning .ckpt, a bare state_dict such as the authors' releases, or a "
                             "published release by name (release:cosplace_resnet50_2048, models/releases.py); "
                             "eval.py takes a list '[a.ckpt, release:megaloc_dinov2_8448]' to compare models")
    parser.add_class_arguments(VPRModel, "model", help="architecture of bare state_dicts (as in training)")
    parser.add_class_arguments(VPRDataModule, "data", help="data roots and evaluation sets (as in training)")
    ignored = parser.add_argument_group("settings of training recipes that evaluation ignores")
    ignored.add_argument("--trainer", type=Optional[dict], default=None)
    ignored.add_argument("--seed_everything", type=Union[bool, int], default=0)
    ignored.add_argument("--name", type=Optional[str], default=None)
    ignored.add_argument("--logs_dir", type=Optional[str], default=None)
    return parser


def command_parser(prog: str, description: str) -> ArgumentParser:
    """``recipe_parser`` with the settings of embedding images (eval.py, retrieve.py)."""
    parser = recipe_parser(prog, description)
    run = parser.add_argument_group("embedding")
    run.add_argument("--batch_size", type=PositiveInt, default=32, help="images per forward pass")
    run.add_argument("--num_workers", type=int, default=0, help="image-loading processes")
    run.add_argument("--device", type=str, default="auto", help="auto (GPU if any), cpu, cuda, cuda:1 ...")
    run.add_argument("--precision", type=Precision, default="32", help="autocast precision of the forward pass")
    run.add_argument("--faiss_gpu", type=bool, default=False, help="faiss search on the GPU (needs faiss-gpu)")
    run.add_argument("--cache", type=bool, default=True, help="read and write cached descriptors")
    run.add_argument("--cache_dir", type=Optional[str], default=None,
                     help="descriptor cache (default: <out_dir>/descriptors)")
    run.add_argument("--cache_dtype", type=Literal[DTYPES], default="float32",
                     help="how cached descriptors are stored: float32, or float16 at half the disk")
    # how the database is searched (exact by default); --faiss_gpu applies to it
    parser.add_class_arguments(Searcher, "search", skip={"faiss_gpu"},
                               help="search of the database: a faiss index_factory string and its settings")
    run.add_argument("--progress", type=bool, default=True, help="progress bars")
    return parser


def architecture_settings(cfg) -> dict:
    """The architecture the parsed settings give a bare state_dict: the model section's architecture
    settings, with data.image_size where the model section has none."""
    model = cfg.model.as_dict() if hasattr(cfg.model, "as_dict") else dict(cfg.model)
    arch = {k: model[k] for k in ARCHITECTURE_ARGS if model.get(k) is not None}
    if "image_size" not in arch and cfg.data.image_size is not None:
        arch["image_size"] = list(cfg.data.image_size)
    return arch


def searcher_of(cfg) -> Searcher:
    """The ``--search.*`` settings as a Searcher, on the GPU with ``--faiss_gpu``."""
    search = cfg.search.as_dict() if hasattr(cfg.search, "as_dict") else dict(cfg.search)
    return Searcher(**search, faiss_gpu=cfg.faiss_gpu)


def checkpoints_of(cfg) -> list[str]:
    """``--checkpoint`` as a list."""
    return [cfg.checkpoint] if isinstance(cfg.checkpoint, str) else list(cfg.checkpoint)


def given_flags(argv: Optional[Sequence[str]]) -> list[str]:
    """The settings given as flags in ``argv`` (None: ``sys.argv[1:]``), as dotted keys without dashes:
    ``--model.lr=0.1`` -> ``model.lr``."""
    argv = sys.argv[1:] if argv is None else argv
    return [a[2:].split("=", 1)[0] for a in map(str, argv) if a.startswith("--") and len(a) > 2]


def refuse_unused_flags(parser: ArgumentParser, argv: Optional[Sequence[str]], prog: str,
                        unused_data: Sequence[str], aliases: Sequence[str] = ()) -> None:
    """ConfigError for a flag given on the command line that ``prog`` accepts (it parses any training
    recipe) but does not use: ``--trainer.*``, ``--seed_everything``, ``--name``, ``--logs_dir``, a
    ``--model.*`` setting other than the architecture of bare state_dicts, and the ``--data.*`` settings in
    ``unused_data``. ``aliases``: flags the command maps onto its own (``--model.faiss_gpu``: ``--faiss_gpu``).
    The message names the command's own flag for the same thing where there is one."""
    own = {a for action in parser._actions for a in action.option_strings}
    unused = []
    for key in given_flags(argv):
        section, _, setting = key.partition(".")
        if key in aliases:
            continue
        if (section in ("trainer", "seed_everything", "name", "logs_dir")
                or (section == "model" and setting and setting.split(".")[0] not in ARCHITECTURE_ARGS)
                or (section == "data" and setting.split(".")[0] in unused_data)):
            instead = INSTEAD.get(section if section in ("name", "logs_dir") else ".".join(key.split(".")[:2]))
            unused.append(f"--{key}" + (f" (use {instead})" if instead in own and f"--{key}" != instead else ""))
    if unused:
        raise ConfigError(f"{prog} does not use {', '.join(unused)}: "
                          f"{'it is a setting' if len(unused) == 1 else 'they are settings'} of training (main.py), "
                          f"accepted in a --config recipe but with no effect here; drop "
                          f"{'it' if len(unused) == 1 else 'them'} ({prog} --help lists what this command uses)")


def resolve_faiss_gpu(cfg, argv: Optional[Sequence[str]]) -> None:
    """``--model.faiss_gpu`` (training's name for it) given on the command line sets the command's own
    ``--faiss_gpu``; either, when true, is checked now (``check_faiss_gpu``: a ConfigError naming the flag
    given, before anything is read or written)."""
    flag = "--faiss_gpu"
    if "model.faiss_gpu" in given_flags(argv) and cfg.model.faiss_gpu:
        cfg.faiss_gpu, flag = True, "--model.faiss_gpu"
    if cfg.faiss_gpu:
        check_faiss_gpu(f"{flag} true")
