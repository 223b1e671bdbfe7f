"""torch.distributed plumbing: one process by default, torchrun for N devices or nodes.

Stages call `init()` once; under torchrun (RANK/WORLD_SIZE set) it joins the process group with
NCCL on CUDA and gloo on CPU, otherwise it does nothing and every helper acts as world size 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def init() -> None:
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or torch_dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    torch_dist.init_process_group(backend=backend)


def is_distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    return torch_dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return torch_dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        torch_dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (no-op in one process) and return it."""
    if is_distributed():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel when several processes train, else itself."""
    if world_size() == 1:
        return module
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )


def shard(count: int) -> range:
    """Indices of `count` items this rank handles: a strided slice, disjoint and covering."""
    return range(rank(), count, world_size())


def cleanup() -> None:
    if is_distributed():
        torch_dist.destroy_process_group()
