"""Activation checkpointing of a backbone's stages: less memory in training for one more forward pass.

The blocks of each stage run under ``torch.utils.checkpoint`` (non-reentrant): their inner activations
are not kept for the backward pass but recomputed from the block's input. State-dict keys do not
change. Batch norm layers in training mode would update their running statistics a second time during
the recomputation; the recomputation restores them, so running statistics match a run without
checkpointing.
"""
from collections import OrderedDict
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from utils.errors import ConfigError


@contextmanager
def _running_stats_kept(module: nn.Module):
    """Undo every change to the batch norm running statistics of ``module`` made inside the block."""
    saved = [(b, b.clone()) for m in module.modules() if isinstance(m, _BatchNorm)
             for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class CheckpointedSequential(nn.Sequential):
    """nn.Sequential whose blocks keep only their inputs for backward when gradients are needed."""

    def forward(self, x: Tensor) -> Tensor:
        """Same output as nn.Sequential; each trainable block is recomputed during backward."""
        for block in self:
            if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters())):
                x = checkpoint(block, x, use_reentrant=False,
                               context_fn=lambda b=block: (nullcontext(), _running_stats_kept(b)))
            else:
                x = block(x)
        return x


def enable_activation_checkpointing(backbone: nn.Module) -> int:
    """Checkpoint the blocks of the backbone's stages in place; returns the number of stages converted.

    The stages are the nn.Sequential children of the wrapped torchvision network ``backbone.model``
    (ResNet: layer1..layer4; MobileNet/EfficientNet: ``features``, one block per inverted residual).
    DINOv2: its trainable transformer blocks (the frozen ones keep no activations anyway).
    A backbone without any raises ConfigError.
    """
    if hasattr(backbone, "checkpoint_blocks"):  # DINOv2: returns the number of blocks checkpointed
        backbone.checkpoint_blocks = True
        return len(backbone.model.blocks) - backbone.num_frozen_blocks
    trunk = getattr(backbone, "model", None)
    names = [n for n, c in trunk.named_children() if type(c) is nn.Sequential] if trunk is not None else []
    if not names:
        raise ConfigError(f"activation_checkpointing: {type(backbone).__name__} has no nn.Sequential stages under "
                         f".model to checkpoint; set activation_checkpointing false for this backbone")
    for name in names:
        stage = getattr(trunk, name)
        # the same child modules under the same names: state_dict keys unchanged
        setattr(trunk, name, CheckpointedSequential(OrderedDict(stage.named_children())).train(stage.training))
    return len(names)
