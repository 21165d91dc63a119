"""Batch normalisation over the global batch of all processes, on any device.

Under DDP each process normalises its own slice of the batch in training mode, so N processes x P/N
places do not compute what one process x P places computes. ``torch.nn.SyncBatchNorm`` (Lightning's
``sync_batchnorm: true``, the choice on GPUs) synchronises the statistics on GPUs only. ``GlobalBatchNorm``
computes the same global statistics with differentiable all-reduces on any device, so that CPU runs with
several processes (gloo) are exact too; ``GlobalBatchNormSync`` is the Lightning plugin that swaps it in:
``Trainer(strategy="ddp", plugins=[GlobalBatchNormSync()])``.
"""
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .distributed import world_size


def _all_reduce_sum(x: Tensor) -> Tensor:
    """Sum over processes, differentiable (backward: the sum over processes of the gradients)."""
    return funcol.wait_tensor(funcol.all_reduce(x, "sum", dist.group.WORLD))


class GlobalBatchNorm(_BatchNorm):
    """A BatchNorm whose training-mode statistics are those of the batch of all processes together.

    Same parameters, buffers and state_dict keys as the BatchNorm it replaces; identical to it with one
    process and in eval mode. Statistics are computed in at least float32 (mean first, then the centred sum of
    squares: no cancellation); the running variance is updated with the unbiased global variance.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got {input.dim()} dimension(s)")

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, *) -> (N, C, *) normalised per channel over N and * of all processes."""
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # float16/bfloat16 statistics in float32
        local = torch.cat([xf.sum(dims), xf.new_tensor([xf.numel() / x.shape[1]])])
        total = _all_reduce_sum(local)
        count, mean = total[-1], total[:-1] / total[-1]
        centred = xf - mean.view(shape)
        var = _all_reduce_sum((centred * centred).sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y.to(x.dtype)


def _swap(module: nn.Module, to_global: bool) -> nn.Module:
    """The module tree with each BatchNorm replaced by a GlobalBatchNorm (or back), sharing parameters and
    buffers, so optimizers and state_dicts see the same tensors."""
    for name, child in module.named_children():
        module.add_module(name, _swap(child, to_global))
    if to_global and isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        swapped = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        swapped.original_class = type(module)
    elif not to_global and isinstance(module, GlobalBatchNorm):
        swapped = getattr(module, "original_class", nn.BatchNorm2d)(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    else:
        return module
    for key in ("weight", "bias"):
        setattr(swapped, key, getattr(module, key))
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(swapped, key, getattr(module, key))
    swapped.train(module.training)
    return swapped


class GlobalBatchNormSync(LayerSync):
    """Lightning plugin: every BatchNorm normalises with the statistics of all processes (any device)."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Swap each BatchNorm for a GlobalBatchNorm (same parameters and buffers)."""
        return _swap(model, to_global=True)

    def revert(self, model: nn.Module) -> nn.Module:
        """Swap each GlobalBatchNorm back to the BatchNorm class it replaced."""
        return _swap(model, to_global=False)
