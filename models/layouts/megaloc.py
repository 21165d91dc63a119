"""MegaLoc's released weights (gmberton/MegaLoc) -> our keys. Published in two layouts:

- ``megaloc.torch``, the GitHub release v1.0 (hubconf.py from 3f6e01c until e31e8e0): the state_dict of
  ``MegaLocModel``, whose backbone wraps the official DINOv2 hub model as ``backbone.model``: our keys exactly
  (``backbone.model.<official DINOv2 keys>``, mask_token included; ``aggregator.agg.*``, ``aggregator.linear.*``).
- ``model.safetensors`` on Hugging Face (gberton/MegaLoc; hubconf.py since e31e8e0, at 1af071c): the authors'
  own ViT (``megaloc_model.py`` DINOv2: the official DINOv2's names) directly as ``backbone``, without
  DINOv2's ``mask_token`` (masked pre-training only, never used here)::

    backbone.cls_token (1, 1, 768)   backbone.pos_embed (1, 1370, 768)   backbone.patch_embed.proj.*
    backbone.blocks.<i>.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}  backbone.norm.*
    aggregator.agg.<SALAD keys>   aggregator.linear.*

  renamed to ``backbone.model.*``, with a zero ``mask_token`` (1, 768) put in its place.
"""
import torch

MARK = ("backbone.cls_token", "aggregator.agg.dust_bin")
MASK_TOKEN = "backbone.model.mask_token"


def is_layout(state_dict: dict) -> bool:
    """True when ``state_dict`` is MegaLoc's safetensors release (its ViT directly under ``backbone.``)."""
    return all(k in state_dict for k in MARK)


def to_ours(state_dict: dict) -> dict:
    """The same tensors under our keys, and the unused mask token; ValueError naming any key that is neither
    ``backbone.*`` nor ``aggregator.*``."""
    unplaced = [k for k in state_dict if not k.startswith(("backbone.", "aggregator."))]
    if unplaced:
        raise ValueError(f"not a MegaLoc release's key: {', '.join(unplaced[:8])}. Expected backbone.* (its ViT) "
                         f"and aggregator.*")
    out = {("backbone.model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
           for k, v in state_dict.items()}
    token = state_dict["backbone.cls_token"]
    width = token.shape[-1] if hasattr(token, "shape") else token[-1]
    out.setdefault(MASK_TOKEN, torch.zeros(1, width) if isinstance(token, torch.Tensor) else (1, width))
    return out
