"""A 2-process gloo check of the differentiable gather and GlobalBatchNorm, with unequal slices.

Started by tests/test_distributed_training.py through torch.multiprocessing.spawn; kept apart from the
test module so that the spawned processes import only what they need.
"""
import os

import torch
import torch.distributed as dist

from utils.distributed import all_gather_with_grad
from utils.sync_batchnorm import GlobalBatchNormSync


def collectives_worker(rank: int, port: int, out: str) -> None:
    """Rank ``rank`` of 2: 3 and 5 rows; gathered loss and global batch norm against one process."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    x, weights = torch.randn(8, 3, 2, 2, dtype=torch.float64), torch.randn(8, 3, 2, 2, dtype=torch.float64)
    rows = slice(0, 3) if rank == 0 else slice(3, 8)
    # one process: batch norm then a loss over all 8 rows
    reference = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).double()
    full = x.clone().requires_grad_(True)
    expected = reference(full)
    (expected * weights).square().sum().backward()
    # two processes: global batch norm on this rank's rows, the same loss on the gathered rows
    model = GlobalBatchNormSync().apply(torch.nn.Sequential(torch.nn.BatchNorm2d(3)).double())
    mine = x[rows].clone().requires_grad_(True)
    gathered = all_gather_with_grad(model(mine))
    (gathered * weights).square().sum().backward()
    # every rank computed the whole loss: its rows' gradient is the sum over ranks, 2 x the single one
    torch.save({"output_error": float((gathered - expected).abs().max()),
                "input_grad_error": float((mine.grad / 2 - full.grad[rows]).abs().max()),
                "running_var_error": float((model[0].running_var - reference[0].running_var).abs().max()),
                "class": type(model[0]).__name__, "reverted": type(GlobalBatchNormSync().revert(model)[0]).__name__},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()

