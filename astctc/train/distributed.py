"""Data-parallel training under torchrun: the process group, DDP, and the few collectives the
loop needs besides DDP's gradient all-reduce."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def launched_by_torchrun() -> bool:
    """Several processes, or torchrun with one (DDP's code path on one GPU, for checks)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


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
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) visible: start at most "
                "that many processes per node (torchrun --nproc_per_node), or train on device cpu"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    cpu_group()  # made now, collectively, by every rank
    return dist.get_rank(), dist.get_world_size(), device


_cpu_group = None


def cpu_group():
    """A gloo group over the same ranks, for numbers the host already has (batch flags, token
    counts, logs): reducing them over NCCL would copy them to the GPU and make the host wait
    for it every step."""
    global _cpu_group
    if _cpu_group is None:
        _cpu_group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return _cpu_group


def wrap_ddp(model: torch.nn.Module, device: torch.device, find_unused_parameters: bool) -> DistributedDataParallel:
    return DistributedDataParallel(
        model,
        device_ids=[device] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Sum (or min) of a few host numbers over all ranks (float64, over the gloo group)."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM, group=cpu_group())
    return t.tolist()


def all_ranks(flag: bool) -> bool:
    """True where every rank's flag is."""
    return all_reduce([float(flag)], "min")[0] == 1.0


def gather(obj) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=cpu_group())
    return out


def step_seed(seed: int, rank: int, step: int) -> int:
    """Per-rank RNG seed of a DDP step: ranks draw different dropout masks, and a resumed run
    (on any number of ranks) draws what an uninterrupted one would at that step and rank."""
    return (seed * 1_000_003 + rank * 7919 + step) % (2**63)


def barrier() -> None:
    dist.barrier()


def destroy() -> None:
    global _cpu_group
    _cpu_group = None
    dist.destroy_process_group()
