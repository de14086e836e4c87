"""Data-parallel training under torchrun: the process group, DDP, and the few collectives the
loop needs besides DDP's gradient all-reduce."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def owns_process_group() -> bool:
    """Whether this run creates the process group (and so destroys it at the end): under
    torchrun, unless the caller has made one already."""
    return launched_by_torchrun() and not (dist.is_available() and dist.is_initialized())


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) join the process group:
    NCCL on CUDA, each process on the GPU of its LOCAL_RANK; gloo on CPU."""
    if not launched_by_torchrun():
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def wrap_ddp(model: torch.nn.Module, device: torch.device, find_unused_parameters: bool) -> DistributedDataParallel:
    return DistributedDataParallel(
        model,
        device_ids=[device] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Sum (or min) of a few numbers over all ranks (float64 on the collective's device)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return t.tolist()


def all_ranks(flag: bool, device: torch.device) -> bool:
    """True where every rank's flag is."""
    return all_reduce([float(flag)], device, "min")[0] == 1.0


def step_seed(seed: int, rank: int, step: int) -> int:
    """Per-rank RNG seed of a DDP step: ranks draw different dropout masks, and a resumed run
    (on any number of ranks) draws what an uninterrupted one would at that step and rank."""
    return (seed * 1_000_003 + rank * 7919 + step) % (2**63)


def barrier() -> None:
    dist.barrier()


def destroy() -> None:
    dist.destroy_process_group()
