"""Command-line settings shared by eval.py and retrieve.py, in the flag style of main.py.

Both take a training recipe (``--config configs/x.yaml``, read over configs/base.yaml as in training)
and the same ``--model.*`` and ``--data.*`` settings as ``main.py``; the model settings give the
architecture of bare state_dicts (the authors' releases), whose files carry none. Settings of the
training command that evaluating does not use (trainer, checkpointing) are accepted and ignored, so
that any recipe can be given.
"""
from typing import Literal, Optional, Union

from jsonargparse import ActionConfigFile, ArgumentParser
from jsonargparse.typing import PositiveInt

from dataloaders.datamodule import VPRDataModule
from utils.recipes import BASE_RECIPE
from utils.safe_config import use_safe_config
from utils.search import Searcher

from .descriptor_cache import DTYPES
from .inference import PRECISIONS
from .network import ARCHITECTURE_ARGS
from .vpr_model import VPRModel

Precision = Literal[tuple(PRECISIONS)]


def recipe_parser(prog: str, description: str) -> ArgumentParser:
    """A parser with --config, --checkpoint and the sections of a training recipe; the command adds its own."""
    use_safe_config()  # configs parsed with size and alias limits, class_path imports from allowed modules only
    # exit_on_error=False: a setting that does not parse is raised and printed as one line (utils.cli.run_command)
    parser = ArgumentParser(prog=prog, description=description, default_config_files=[str(BASE_RECIPE)],
                            parser_mode="yaml", exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a training recipe (configs/*.yaml)")
    parser.add_argument("--checkpoint", type=Union[list[str], str], required=True,
                        help="our Lightning .ckpt, or a bare state_dict such as the authors' releases; eval.py "
                             "takes a list '[a.ckpt, b.ckpt]' to compare models")
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
