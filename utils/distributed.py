"""Gathering per-sample outputs across processes: evaluation descriptors put back in dataset order, and
training batches gathered with their gradients so that the loss sees the global batch."""
import torch
import torch.distributed as dist
# torch 2.14's differentiable collectives (torch.distributed.nn.functional is deprecated in their favour)
import torch.distributed._functional_collectives as funcol
from torch import Tensor


def world_size() -> int:
    """Number of processes of the default group (1 outside torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def process_rank() -> int:
    """Rank of this process in the default group (0 outside torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_gather_with_grad(values: Tensor) -> Tensor:
    """(n_local, ...) on each rank -> (n_0 + ... + n_{W-1}, ...) on every rank, rows in rank order.

    Differentiable (backward: reduce-scatter with sum): the gradient reaching a rank's own rows is the
    sum over ranks of the gradients of their copies. When every rank computes the same loss L on the
    gathered rows, each rank's parameter gradient is W times its share of dL, and DDP's average over
    ranks gives exactly dL, the gradient of one process on the whole batch. Ranks may hold different
    counts (padded to the largest, then trimmed). Returns ``values`` itself with one process.
    """
    world = world_size()
    if world == 1:
        return values
    count = torch.tensor([len(values)], device=values.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    pad = max(counts) - len(values)
    padded = torch.cat([values, values.new_zeros(pad, *values.shape[1:])]) if pad else values
    gathered = funcol.wait_tensor(funcol.all_gather_single_autograd(padded.contiguous(), 0, dist.group.WORLD))
    return torch.cat([g[:c] for g, c in zip(gathered.chunk(world), counts)])


def gather_by_index(indices: Tensor, values: Tensor, total: int) -> Tensor:
    """(n_local,) dataset indices and (n_local, D) values on this rank -> (total, D) on every rank.

    DistributedSampler pads and interleaves samples, so rows are placed by their dataset index
    (padding duplicates land on the same row with the same value). Ranks may hold different counts.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        # torchmetrics pads tensors of different lengths, gathers them and trims them back
        from torchmetrics.utilities.distributed import gather_all_tensors

        indices = torch.cat(gather_all_tensors(indices.to(values.device)))
        values = torch.cat(gather_all_tensors(values.contiguous()))
    out = values.new_zeros(total, *values.shape[1:])
    seen = torch.zeros(total, dtype=torch.bool, device=values.device)
    out[indices.to(values.device)] = values
    seen[indices.to(values.device)] = True
    if not bool(seen.all()):
        missing = int((~seen).sum())
        raise RuntimeError(f"{missing} of {total} evaluation samples were not embedded by any process; "
                           f"the evaluation dataloader must cover the whole set (no drop_last, no limit_val_batches)")
    return out


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (any picklable object) on every rank; ``[obj]`` without DDP."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]
