"""The one way to load weights: our Lightning checkpoints, bare state_dicts, and the related projects' releases.

    from main import load_weights, load_model
    load_weights(model, "resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt")   # into a VPRModel or VPRNet
    net = load_model("LOGS/run/version_0/checkpoints/last.ckpt")                # a VPRNet, eval mode

Files are read with ``torch.load(weights_only=True)``: no pickled code runs, whatever the file holds.
Keys are put in our layout before a strict load: a ``model.``/``module.`` wrapper prefix is removed, the
releases of Lightweight-MixVPR, BoQ and SALAD are renamed (``models.layouts``), and a distilled
student's distillation head (training only) is dropped. Anything else that does not fit is an error
naming the keys, and the architecture the weights do fit.
"""
import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn

from dataloaders.preprocessing import Preprocessing
from utils.errors import CheckpointError, ConfigError, NotFoundError
from utils.recipes import read_model_settings

from .architecture import PREFIXES, describe_architecture, infer_architecture
from .layouts import netvlad, optional_entries, to_our_layout
from .network import ARCHITECTURE_ARGS, VPRNet, build_network

# what a distilled student's checkpoint holds beside the network: training-only modules
TRAINING_ONLY = ("distill_loss_fn.",)


class Checkpoint(NamedTuple):
    """What a checkpoint file holds: weights, the settings it was trained with, its evaluation preprocessing."""

    state_dict: dict
    hyper_parameters: dict           # empty for a bare state_dict
    preprocessing: Optional[Preprocessing]  # None: a file that records none (bare, or written before it did)


# the key of the evaluation preprocessing record in our Lightning checkpoints (VPRModel.on_save_checkpoint)
PREPROCESSING_KEY = "preprocessing"


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, hyper_parameters) of a Lightning ``.ckpt`` or a bare state_dict file (``open_checkpoint``)."""
    checkpoint = open_checkpoint(path)
    return checkpoint.state_dict, checkpoint.hyper_parameters


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The ``Checkpoint`` (state_dict, hyper_parameters, preprocessing) of a Lightning ``.ckpt`` or a bare
    state_dict file.

    Nothing pickled is executed (``weights_only=True``); a file that needs it, a truncated file or one
    that is not a PyTorch checkpoint raises CheckpointError naming it. hyper_parameters is empty for a
    bare state_dict; LightningCLI's private entries (``_instantiator``, ``_class_path``) are left out.
    A malformed preprocessing record raises CheckpointError.
    """
    return split_checkpoint(read_checkpoint_file(path), path)


def read_checkpoint_file(path: str | Path) -> dict:
    """The whole object a checkpoint file holds (a Lightning checkpoint's dict, or a state_dict), read as
    ``read_checkpoint`` reads it: without running pickled code, a file that is not a checkpoint named."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"checkpoint not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    if path.suffix.lower() in OTHER_FORMATS:
        return read_other_format(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path} needs code to run to be loaded ({first}). Checkpoints are loaded without running "
            f"pickled code; a weights file holds only tensors and plain values. If you wrote this file and "
            f"trust it, load it with torch.load(path, weights_only=False) yourself and save its state_dict.") from None
    # what torch.load raises for a file that is not (all) a PyTorch checkpoint: a truncated zip, a text
    # file (its first byte read as a legacy pickle opcode: KeyError), an empty file ...
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError, TypeError,
            AttributeError, io.UnsupportedOperation) as err:
        size = path.stat().st_size
        raise CheckpointError(f"{path} ({size} bytes) is not a readable PyTorch checkpoint: truncated, still "
                              f"being written, or another kind of file ({type(err).__name__}: {err})") from None


# weights files that are not torch.save's: the format each needs, and what it holds
OTHER_FORMATS = {".safetensors": "safetensors file (MegaLoc's release)",
                 ".mat": "MatConvNet network saved by MATLAB (NetVLAD's release)"}


def read_other_format(path: Path) -> dict:
    """The tensors of a ``.safetensors`` file, or of a MatConvNet ``.mat`` network (``layouts.netvlad``); neither
    runs code. CheckpointError naming the file when it is not what its suffix says."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return netvlad.read_matconvnet(path)
    except Exception as err:  # safetensors' SafetensorError, scipy's MatReadError, a .mat without 'net' ...
        raise CheckpointError(f"{path} ({path.stat().st_size} bytes) is not a readable "
                              f"{OTHER_FORMATS[path.suffix.lower()]}: truncated or another kind of file "
                              f"({type(err).__name__}: {err})") from None


def split_checkpoint(obj, path: str | Path) -> Checkpoint:
    """The ``Checkpoint`` (state_dict, hyper_parameters, preprocessing) of what ``read_checkpoint_file`` read from ``path``."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        hparams = public_settings(obj.get("hyper_parameters"))
        record = obj.get(PREPROCESSING_KEY)
        try:
            preprocessing = Preprocessing.from_dict(record) if record is not None else None
        except ConfigError as err:
            raise CheckpointError(f"{path}: its evaluation preprocessing record cannot be used: {err}") from None
        return Checkpoint(obj["state_dict"], hparams, preprocessing)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return Checkpoint(obj, {}, None)
    raise CheckpointError(f"{path} is neither a Lightning checkpoint (a dict with 'state_dict') nor a state_dict "
                          f"of tensors (it holds {type(obj).__name__}"
                          + (f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else "") + ")")


def public_settings(hyper_parameters) -> dict:
    """Saved hyper-parameters without LightningCLI's private entries (``_instantiator``, ``_class_path``)."""
    return {k: v for k, v in (hyper_parameters or {}).items() if not str(k).startswith("_")}


def to_layout_of(state_dict: dict, model: nn.Module) -> tuple[dict, str]:
    """``state_dict`` with our key names for ``model``: wrapper prefix removed, a release layout renamed,
    training-only entries dropped. Returns (state_dict, name of the release layout or '')."""
    own = model.state_dict()
    for prefix in PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict) and not any(k.startswith(prefix) for k in own):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
            break
    try:
        state_dict, layout = to_our_layout(state_dict)
    except ValueError as err:  # a release's layout recognised, but some of its keys cannot be placed
        raise CheckpointError(str(err)) from None
    dropped = TRAINING_ONLY + optional_entries(layout)
    state_dict = {k: v for k, v in state_dict.items() if k in own or not k.startswith(dropped)}
    return state_dict, layout


def load_weights(model: nn.Module, path_or_state_dict, source: Optional[str] = None) -> nn.Module:
    """Load weights into ``model`` (a VPRModel or VPRNet) strictly; returns ``model``.

    ``path_or_state_dict``: a checkpoint file (ours, a bare state_dict, or a release of MixVPR,
    Lightweight-MixVPR, BoQ or SALAD) or a state_dict already in memory. A key that is missing,
    unexpected or of another shape raises CheckpointError listing them and the architecture the
    weights fit.
    """
    if isinstance(path_or_state_dict, (str, Path)):
        source = source or str(path_or_state_dict)
        state_dict, _ = read_checkpoint(path_or_state_dict)
    else:
        state_dict, source = path_or_state_dict, source or "state_dict"
    state_dict, layout = to_layout_of(state_dict, model)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f"{k}: {tuple(state_dict[k].shape)} in {source}, {tuple(own[k].shape)} in model"
                    for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or shapes:
        show = lambda keys: ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
        lines = [f"{source}{f' ({layout} layout)' if layout else ''} does not fit the model's architecture:"]
        if missing:
            lines.append(f"  missing keys: {show(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {show(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches: {show(shapes)}")
        lines.append("  Check backbone_arch, layers_to_crop, agg_arch and agg_config (and image_size for MixVPR) "
                     "against the configuration the checkpoint was trained with.")
        lines.append(describe_architecture(infer_architecture(state_dict)))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)
    return model


def architecture_of(hyper_parameters: dict, config: Optional[str | Path] = None, **overrides) -> dict:
    """``build_network`` arguments: saved hyper-parameters, overridden by a config's model section (with
    data.image_size), overridden by ``overrides``; anything that is not architecture is left out."""
    settings = {**hyper_parameters, **(read_model_settings(config) if config else {}), **overrides}
    # settings of building a network to train: the checkpoint's weights replace every parameter, whatever
    # pretrained would load under them, and the network returned is for inference, where freezing means nothing
    not_loading = [k for k in ("pretrained", "layers_to_freeze") if k in overrides]
    if not_loading:
        given = ", ".join(f"{k}={overrides[k]!r}" for k in not_loading)
        raise ConfigError(f"load_model(..., {given}) does not apply to loading: the checkpoint's weights replace "
                          f"every parameter (pretrained weights would be overwritten) and the network is returned "
                          f"in eval mode for inference (layers_to_freeze is a training setting: VPRModel(..., "
                          f"layers_to_freeze=k) or --model.layers_to_freeze). Leave {' and '.join(not_loading)} out.")
    unknown = sorted(set(overrides) - set(ARCHITECTURE_ARGS))
    if unknown:
        raise ConfigError(f"load_model does not take {unknown}; architecture settings are {list(ARCHITECTURE_ARGS)}")
    return {k: settings[k] for k in ARCHITECTURE_ARGS if settings.get(k) is not None}


def release_settings(path: str | Path) -> tuple[dict, Optional[Preprocessing]]:
    """(architecture, evaluation preprocessing) of the release whose published file name ``path`` has
    (``models.releases.release_of_file``), or ({}, None): a release file is bare weights, and its name is what
    says which network it is and how its authors evaluate it."""
    from .releases import RELEASES, release_of_file  # releases builds on this module

    name = release_of_file(path)
    if name is None:
        return {}, None
    return dict(RELEASES[name].architecture), RELEASES[name].eval_preprocessing


def load_model(checkpoint: str | Path, config: Optional[str | Path] = None, device: str = "cpu",
               **overrides) -> VPRNet:
    """The network of ``checkpoint`` (a VPRNet in eval mode on ``device``) with its weights loaded.

    The architecture comes from the checkpoint's saved hyper-parameters (our ``.ckpt``), overridden by
    ``config`` (a recipe YAML: its model section and data.image_size) and ``overrides`` (backbone_arch,
    backbone_config, layers_to_crop, agg_arch, agg_config, image_size). A bare state_dict needs one of them,
    unless it is a release's file under its published name (``models/releases.py``: its architecture and
    its authors' evaluation preprocessing); without, the error names the configuration its keys fit.
    """
    state_dict, hyper_parameters, preprocessing = open_checkpoint(checkpoint)
    if preprocessing is None:  # a release's file (bare, or another project's Lightning checkpoint) by its name
        release_arch, preprocessing = release_settings(checkpoint)
        hyper_parameters = hyper_parameters or release_arch
    arch = architecture_of(hyper_parameters, config, **overrides)
    if not hyper_parameters and not arch:
        raise CheckpointError(
            f"{checkpoint} is a bare state_dict without hyper-parameters: give the architecture it was trained "
            f"with (a config with a model: section, or {', '.join(ARCHITECTURE_ARGS)}; on the command line "
            f"--config or --model.backbone_arch, --model.agg_arch, --model.agg_config ...).\n"
            f"{describe_architecture(infer_architecture(state_dict))}")
    try:
        net = build_network(**arch)
    except ConfigError as err:
        raise ConfigError(f"{err}\n{describe_architecture(infer_architecture(state_dict))}") from None
    load_weights(net, state_dict, source=str(checkpoint))
    net.preprocessing = checkpoint_preprocessing(Checkpoint(state_dict, hyper_parameters, preprocessing), net,
                                                 str(checkpoint), overrides.get("image_size"))
    return net.eval().to(resolve_device(device))


def checkpoint_preprocessing(checkpoint: Checkpoint, net: VPRNet, source: str,
                             image_size: Optional[Sequence[int]] = None) -> Preprocessing:
    """The evaluation preprocessing of ``net`` loaded from ``checkpoint``: the record the checkpoint carries
    (its validation size, e.g. SALAD's 322 x 322 after training at 224), at ``image_size`` when given
    explicitly (a one-line note says it overrides another recorded size). A checkpoint of ours written
    before checkpoints carried it falls back to the network's image size, with a one-line note; a bare
    state_dict takes the network's (its settings')."""
    size = tuple(int(s) for s in image_size) if image_size is not None else None
    recorded = checkpoint.preprocessing
    if recorded is not None:
        if size is not None and size != recorded.image_size:
            print(f"note: {source}: evaluated at {size[0]} x {size[1]} as asked, not at the {recorded.image_size[0]} "
                  f"x {recorded.image_size[1]} its preprocessing records", file=sys.stderr)
        return recorded.with_size(size)
    if checkpoint.hyper_parameters and size is None:
        print(f"note: {source} records no evaluation preprocessing (written before checkpoints carried it): "
              f"evaluated at the model's image size {net.image_size[0]} x {net.image_size[1]}; if it was "
              f"validated at another, give it (eval.py, retrieve.py: --data.eval_image_size)", file=sys.stderr)
    return net.preprocessing.with_size(size)


def resolve_device(device: Optional[str]) -> torch.device:
    """``'auto'``/None: the first GPU when there is one, else the CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
