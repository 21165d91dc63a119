"""Loading weights from our Lightning checkpoints and from bare state_dicts (e.g. the authors' releases)."""
import inspect
from pathlib import Path

import torch
from torch import nn

PREFIXES = ("model.", "module.")
# VPRModel arguments that fix the architecture (what a bare state_dict needs to be told)
ARCHITECTURE_ARGS = ("backbone_arch", "backbone_config", "layers_to_crop", "agg_arch", "agg_config", "image_size")


def read_state_dict(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, hyper_parameters) from a Lightning ``.ckpt`` or a bare state_dict file.

    hyper_parameters is empty for a bare state_dict; LightningCLI's private entries (``_instantiator``,
    ``_class_path``) are left out, so ``VPRModel(**hyper_parameters)`` rebuilds the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        hparams = {k: v for k, v in obj.get("hyper_parameters", {}).items() if not k.startswith("_")}
        return obj["state_dict"], hparams
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise ValueError(f"{path} is neither a Lightning checkpoint (with 'state_dict') nor a state_dict of tensors")


def strip_prefix(state_dict: dict, model: nn.Module) -> dict:
    """Remove a ``model.``/``module.`` prefix (DataParallel, wrappers) when the model's keys lack it."""
    own = set(model.state_dict())
    for prefix in PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict) and not any(k.startswith(prefix) for k in own):
            return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def load_weights(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Load ``state_dict`` into ``model`` strictly, with an error that lists what does not fit."""
    state_dict = strip_prefix(state_dict, model)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f"{k}: {tuple(state_dict[k].shape)} in {source}, {tuple(own[k].shape)} in model"
                    for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or shapes:
        show = lambda keys: ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
        lines = [f"{source} does not fit the model's architecture:"]
        if missing:
            lines.append(f"  missing keys: {show(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {show(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches: {show(shapes)}")
        lines.append("  Check backbone_arch, layers_to_crop, agg_arch and agg_config (and image_size for MixVPR) "
                     "against the configuration the checkpoint was trained with.")
        raise RuntimeError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)


def model_from_state(state_dict: dict, hyper_parameters: dict, source: str = "checkpoint",
                     **model_kwargs):
    """An eval-mode VPRModel built from saved ``hyper_parameters`` overridden by ``model_kwargs``,
    with ``state_dict`` loaded strictly. ImageNet weights are never fetched (they are overwritten)."""
    from models.vpr_model import VPRModel  # models import utils: import here, not at module level

    accepted = inspect.signature(VPRModel).parameters
    if not hyper_parameters and not model_kwargs:
        raise ValueError(
            f"{source} is a bare state_dict without hyper-parameters: give the architecture it was trained "
            f"with ({', '.join(ARCHITECTURE_ARGS)}; command line: --backbone-arch, --layers-to-crop, "
            f"--agg-arch, --agg-config, --image-size)")
    unknown = sorted(set(model_kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"VPRModel does not take {unknown}; its arguments are {sorted(accepted)}")
    # training-only hyper-parameters of other versions are dropped; the model never loads its own teacher
    config = {k: v for k, v in {**hyper_parameters, **model_kwargs}.items() if k in accepted}
    config["pretrained"] = False
    config["teacher_checkpoint"] = None
    model = VPRModel(**config)
    own = model.state_dict()
    # a distilled student's checkpoint also holds its distillation head, which deployment does not use
    state_dict = {k: v for k, v in state_dict.items() if k in own or not k.startswith("distill_loss_fn.")}
    load_weights(model, state_dict, source=source)
    return model.eval()
