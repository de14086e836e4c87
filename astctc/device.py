"""Which device a job runs on, and in which precision."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when there is one, else the CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU's bf16 matmuls beat fp32: AMX tiles make them faster; without them
    (AVX512-BF16 alone) bf16 ran at half fp32's speed."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch exposes it only privately
    return bool(probe and probe())


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast or not. `auto`: on CUDA always; on a CPU only where bf16 matmuls are faster
    than fp32 (a CPU with AMX), since elsewhere it costs time and gains nothing."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast where `use_bf16` says so; CTC loss and log-softmax are run in fp32 by callers."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16(device, precision))
