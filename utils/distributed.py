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
