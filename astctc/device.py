"""Which device a job runs on, and in which precision."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")


def cuda_unavailable_reason() -> str:
    """Why torch cannot use a GPU here, in a few words ("" when it can)."""
    if torch.cuda.is_available():
        return ""
    if torch.version.cuda is None:
        return "this torch build has no CUDA support"
    try:
        torch.cuda.init()  # raises with the driver's complaint (too old, none found, ...)
    except Exception as e:
        return str(e).strip().splitlines()[0]
    return "no CUDA device is visible"


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when there is one, else the CPU (say so where a GPU run may have been
    meant: `auto` never falls back silently); `cuda`/`cuda:N` must exist, else a clear error;
    anything else is passed to torch."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.info("device auto: no usable GPU (%s), running on the CPU", cuda_unavailable_reason())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name}: no usable GPU ({cuda_unavailable_reason()})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return device


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has AMX tiles, where bf16 matmuls beat fp32 (without them, AVX512-BF16
    alone, bf16 ran at half fp32's speed). Said in the log; `auto` does not act on it."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch exposes it only privately
    return bool(probe and probe())


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast or not. `auto`: bf16 on CUDA, fp32 on every CPU. On a CPU, bf16 takes other
    oneDNN code paths where AMX exists (one asked for 67 GB, others are reported to give wrong
    rows), so the same model would transcribe differently on two CPUs; fp32 gives the same
    transcripts on any CPU, and `bf16` stays one setting away for those who want AMX's speed."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda"


def precision_line(device: torch.device, precision: str) -> str:
    """What a log says of the precision: the choice, and why when `auto` made it."""
    bf16 = use_bf16(device, precision)
    line = f"precision: {'bf16' if bf16 else 'fp32'}"
    if precision == "auto":
        line += " (auto: bf16 on CUDA, fp32 on CPUs"
        if device.type == "cpu" and cpu_has_fast_bf16():
            line += "; this CPU has AMX: precision=bf16 is faster, transcripts may then differ from fp32's"
        line += ")"
    elif bf16 and device.type == "cpu" and not cpu_has_fast_bf16():
        line += " (a CPU without AMX: expect it to be slower than fp32)"
    return line


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast where `use_bf16` says so; CTC loss and log-softmax are run in fp32 by callers."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16(device, precision))


# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets, by device-name fragment,
# most specific first; the denominator of the MFU that training logs and bench/ report.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM; NVL is 835, named "H100 NVL"
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in TFLOP/s, where we know it (None on CPUs and unknown GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if "H100 NVL" in name:
        return 835.0
    return next((v for k, v in PEAK_BF16_TFLOPS if k in name), None)
