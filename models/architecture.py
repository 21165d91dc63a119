"""Reading a model's architecture back from its weights, to tell a user which configuration fits.

A bare state_dict (e.g. the authors' MixVPR release) carries no hyper-parameters, but its keys and
shapes pin most of them down: the backbone (block counts and widths per ResNet stage, or the
torchvision ``features`` layout), the cropped stages (absent ``layer4``), and the aggregator's
settings (MixVPR: ``in_h * in_w`` from ``mix.0.mix.0.weight``, ``out_channels`` and ``out_rows`` from
``channel_proj`` and ``row_proj``; BoQ and SALAD from their projections and queries). Candidate
backbones are built on the ``meta`` device: no memory, no weights, a fraction of a second each.
A DINOv2 backbone's ``norm_layer`` and ``return_token`` hold no weights and cannot be told.
"""
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch

from utils.errors import UserError
from utils.recipes import BASE_RECIPE, CONFIG_DIR, read_recipe

from .backbones import BACKBONES, DINOV2_ARCHS, build_backbone
from .layouts import to_our_layout

# wrapper prefixes that DataParallel, DDP or an outer module put before every key
PREFIXES = ("model.", "module.")
CROPS = ((), (4,), (3, 4))


def _strip(state_dict: dict) -> dict:
    """``state_dict`` without a ``model.``/``module.`` wrapper prefix carried by every key."""
    for prefix in PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


@lru_cache(maxsize=None)
def _backbone_shapes(name: str, crop: Optional[tuple[int, ...]]) -> tuple[dict, int, int]:
    """({key: shape} of the backbone's state_dict, out_channels, stride), built on the meta device;
    ``crop`` None for a ViT (no stages to crop)."""
    cnn = {} if crop is None else {"layers_to_freeze": -1, "layers_to_crop": list(crop)}
    with torch.device("meta"):
        backbone = build_backbone(name, pretrained=False, **cnn)
    return {k: tuple(v.shape) for k, v in backbone.state_dict().items()}, backbone.out_channels, backbone.stride


def infer_backbone(state_dict: dict) -> Optional[tuple[str, Optional[list[int]], int, int]]:
    """(backbone_arch, layers_to_crop (None for a ViT), out_channels, stride) whose keys and shapes equal
    the ``backbone.`` entries of ``state_dict`` (in our layout), or None when no registered backbone fits."""
    shapes = {k[len("backbone."):]: tuple(v.shape) for k, v in state_dict.items() if k.startswith("backbone.")}
    if not shapes:
        return None
    if "model.pos_embed" in shapes:
        for name in DINOV2_ARCHS:
            expected, channels, stride = _backbone_shapes(name, None)
            if expected == shapes:
                return name, None, channels, stride
        return None
    for name, constructor in BACKBONES.items():
        # building a candidate takes up to seconds: first the one key every state_dict of its class holds
        if name in DINOV2_ARCHS or getattr(constructor.func, "FIRST_KEY", None) not in shapes:
            continue
        for crop in CROPS:
            try:
                expected, channels, stride = _backbone_shapes(name, crop)
            except (ValueError, TypeError):
                continue
            if expected == shapes:
                return name, list(crop), channels, stride
    return None


def infer_aggregator(state_dict: dict) -> Optional[tuple[str, dict]]:
    """(agg_arch, agg_config) read from the ``aggregator.`` entries of ``state_dict``, or None."""
    agg = {k[len("aggregator."):]: tuple(v.shape) for k, v in state_dict.items() if k.startswith("aggregator.")}
    if "mix.0.mix.0.weight" in agg or ("channel_proj.weight" in agg and "row_proj.weight" in agg):
        out_channels, in_channels = agg["channel_proj.weight"]
        out_rows, hw = agg["row_proj.weight"]
        depth = len({k.split(".")[1] for k in agg if k.startswith("mix.")})
        config = {"in_channels": in_channels}
        side = math.isqrt(hw)
        if side * side == hw:
            config.update(in_h=side, in_w=side)
        config.update(out_channels=out_channels, mix_depth=depth)
        if depth:
            ratio = agg["mix.0.mix.1.weight"][0] / hw
            config["mlp_ratio"] = int(ratio) if float(ratio).is_integer() else ratio
        config["out_rows"] = out_rows
        return "MixVPR", config
    if "proj_c.weight" in agg and "fc.weight" in agg:
        proj_channels, in_channels = agg["proj_c.weight"][:2]
        layers = len({k.split(".")[1] for k in agg if k.startswith("boqs.")})
        return "BoQ", {"in_channels": in_channels, "proj_channels": proj_channels,
                       "num_queries": agg["boqs.0.queries"][1], "num_layers": layers, "row_dim": agg["fc.weight"][0]}
    if "agg.dust_bin" in agg and "linear.weight" in agg:
        return "MegaLoc", {"num_channels": agg["agg.score.0.weight"][1], "num_clusters": agg["agg.score.3.weight"][0],
                           "cluster_dim": agg["agg.cluster_features.3.weight"][0],
                           "token_dim": agg["agg.token_features.2.weight"][0], "out_dim": agg["linear.weight"][0]}
    if "dust_bin" in agg:
        return "SALAD", {"num_channels": agg["score.0.weight"][1], "num_clusters": agg["score.3.weight"][0],
                         "cluster_dim": agg["cluster_features.3.weight"][0],
                         "token_dim": agg["token_features.2.weight"][0]}
    if "centroids" in agg:
        clusters, channels = agg["centroids"]
        config = {"in_channels": channels, "num_clusters": clusters}
        if "conv.bias" not in agg:
            config["assignment_bias"] = False
        if "whitening.weight" in agg:
            config["whitening_dim"] = agg["whitening.weight"][0]
        return "NetVLAD", config
    if "gem.p" in agg and "fc.weight" in agg:
        out_dim, channels = agg["fc.weight"]
        return "CosPlace", {"in_channels": channels, "out_dim": out_dim}
    if "channel_proj.weight" in agg and len(agg["channel_proj.weight"]) == 4:
        out_channels, channels = agg["channel_proj.weight"][:2]
        # s1, s2 (the pooled grid) hold no weights: the default 2 x 2 is a guess
        return "ConvAP", {"in_channels": channels, "out_channels": out_channels}
    if set(agg) == {"p"}:
        return "GeM", {}
    return None


def infer_architecture(state_dict: dict) -> dict:
    """VPRModel arguments that fit ``state_dict`` as far as its keys and shapes tell: backbone_arch,
    layers_to_crop (CNNs), agg_arch, agg_config and, for MixVPR with a square map, image_size. Keys that
    cannot be told are absent. A release's keys (BoQ, Lightweight-MixVPR) are read as ours (models.layouts)."""
    state_dict = _strip(state_dict)
    try:
        state_dict, _ = to_our_layout(state_dict)
    except ValueError:
        pass  # not all of it is the release's: infer what the keys as they are tell
    arch: dict = {}
    backbone = infer_backbone(state_dict)
    stride = None
    if backbone is not None:
        arch["backbone_arch"], crop, _, stride = backbone
        if crop is not None:
            arch["layers_to_crop"] = crop
    aggregator = infer_aggregator(state_dict)
    if aggregator is not None:
        arch["agg_arch"], arch["agg_config"] = aggregator
        config = arch["agg_config"]
        if stride is not None and "in_h" in config:
            arch["image_size"] = [config["in_h"] * stride, config["in_w"] * stride]
    return arch


def matching_configs(arch: dict, config_dir: Path = CONFIG_DIR) -> list[Path]:
    """The YAML configs under ``config_dir`` whose ``model:`` section agrees with ``arch`` (as inferred)."""
    found = []
    for path in sorted(config_dir.glob("*.yaml")):
        if path.resolve() == BASE_RECIPE.resolve():
            continue
        try:
            config = read_recipe(path)
        except UserError:
            continue
        model = config.get("model") or {}
        image_size = (config.get("data") or {}).get("image_size")
        same = lambda key, value: key not in arch or value == arch[key]
        agg_config = model.get("agg_config") or {}
        if (same("backbone_arch", model.get("backbone_arch")) and same("agg_arch", model.get("agg_arch"))
                and same("layers_to_crop", list(model.get("layers_to_crop") or []))
                and (image_size is None or same("image_size", list(image_size)))
                and all(agg_config.get(k, v) == v for k, v in arch.get("agg_config", {}).items())
                and arch.get("agg_config") is not None):
            found.append(path)
    return found


def describe_architecture(arch: dict, config_dir: Path = CONFIG_DIR) -> str:
    """How to ask for ``arch``: the matching configs, command-line flags and a ``model:`` YAML section."""
    if not arch:
        return "The weights match no registered backbone or aggregator."
    flags = []
    if "backbone_arch" in arch:
        flags += ["--model.backbone_arch", arch["backbone_arch"]]
    if "layers_to_crop" in arch:
        flags += ["--model.layers_to_crop", f"'{json.dumps(arch['layers_to_crop'])}'"]
    if "agg_arch" in arch:
        flags += ["--model.agg_arch", arch["agg_arch"], "--model.agg_config", f"'{json.dumps(arch['agg_config'])}'"]
    if "image_size" in arch:
        # the data setting: main.py links the model's image size to it, and eval.py/retrieve.py take it too
        flags += ["--data.image_size", f"'{json.dumps(arch['image_size'])}'"]
    lines = ["The weights' keys and shapes fit this architecture:", "  " + " ".join(flags)]
    model = {k: arch[k] for k in ("backbone_arch", "layers_to_crop", "agg_arch", "agg_config") if k in arch}
    lines.append("  or in a config: " + json.dumps({"model": model}))
    if "image_size" in arch:
        lines[-1] += f" with data.image_size {arch['image_size']}"
    configs = matching_configs(arch, config_dir)
    if configs:
        lines.append("  matching config(s): " + ", ".join(str(p.relative_to(config_dir.parent)) for p in configs))
    if arch.get("backbone_arch", "").startswith("dinov2"):
        lines.append("  (DINOv2's backbone_config is not stored in the weights: SALAD's release uses "
                     "{\"num_trainable_blocks\": 4, \"return_token\": true, \"norm_layer\": true}, BoQ's "
                     "{\"num_trainable_blocks\": 2}, MegaLoc's SALAD's with \"resize_to_patches\": true)")
    if arch.get("agg_arch") == "ConvAP":
        lines.append("  (ConvAP's s1/s2 are not stored in the weights: check them against your training run)")
    return "\n".join(lines)
