"""Gathering per-sample outputs across processes, put back in dataset order."""
import torch
import torch.distributed as dist
from torch import Tensor


def gather_by_index(indices: Tensor, values: Tensor, total: int) -> Tensor:
    """(n_local,) dataset indices and (n_local, D) values on this rank -> (total, D) on every rank.

    DistributedSampler pads and interleaves samples, so rows are placed by their dataset index
    (padding duplicates land on the same row with the same value). Ranks may hold different counts.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        count = torch.tensor([len(indices)], device=values.device)
        counts = [torch.zeros_like(count) for _ in range(world)]
        dist.all_gather(counts, count)
        longest = int(max(c.item() for c in counts))
        pad = longest - len(indices)
        idx_pad = torch.cat([indices.to(values.device), indices.new_zeros(pad).to(values.device)])
        val_pad = torch.cat([values, values.new_zeros(pad, *values.shape[1:])])
        all_idx = [torch.empty_like(idx_pad) for _ in range(world)]
        all_val = [torch.empty_like(val_pad) for _ in range(world)]
        dist.all_gather(all_idx, idx_pad)
        dist.all_gather(all_val, val_pad)
        indices = torch.cat([i[: int(c.item())] for i, c in zip(all_idx, counts)])
        values = torch.cat([v[: int(c.item())] for v, c in zip(all_val, counts)])
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
