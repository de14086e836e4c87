"""Attention within each utterance of a packed batch, by one of three backends.

A packed batch is the valid tokens of every utterance concatenated, (tokens, heads, head size),
with `cu_seqlens` marking where each utterance starts. Backends (`encoder.attention_backend`):

  fa4   FlashAttention-4 (`flash-attn-4`, CuTe DSL): Hopper and Blackwell kernels, forward and
        backward, variable length; ~FA3 speed on an H100/H200. Called through its
        `flash_attn.cute.interface` functions behind our own custom op: torch 2.11's
        `activate_flash_attention_impl("FA4")` route fails in the backward (torch's varlen passes
        a window of (-1, -1), which FA4's backward rejects).
  fa2   `torch.nn.attention.varlen.varlen_attn`: FlashAttention-2's varlen kernels inside torch.
  sdpa  `scaled_dot_product_attention` per utterance: any device, dtype and head size, and
        attention dropout (on the CPU it measured faster than nested tensors, bench/README.md).

`auto` takes fa4, else fa2, else sdpa, by what can run here (CUDA, fp16/bf16, head size, GPU
generation, no attention dropout, the package importing); a backend named in the config that
cannot run is an error saying why. The choice is logged once per kind of call.

Every kernel is a `torch.library` custom op with a fake implementation, and takes the batch's
boundaries as a tensor and its longest utterance as an int: torch.compile(dynamic=True) then
traces the whole block stack as one graph whatever the batch (no break at attention, no
recompilation per batch). The sdpa op reads the boundaries from a CPU copy (no device sync) and
runs, on the CPU, the kernels SDPA runs there (forward, and backward from the saved log-sum-exp),
so its numbers are the eager loop's; eager runs keep that loop, which also has attention dropout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

BACKENDS = ("auto", "fa4", "fa2", "sdpa")
FA4_VERSION = "4.0.0b40"  # the flash-attn-4 whose interface this module calls (bench/README.md: GPU check)


@dataclass
class Packed:
    """Boundaries of the utterances in a packed (tokens, D) sequence, and the kernel to use."""

    cu_seqlens: Tensor  # (B + 1,) int32 offsets of each utterance's first token, on the tokens' device
    max_len: int  # tokens of the longest utterance
    cu_cpu: Tensor | None = None  # the same offsets on the CPU (sdpa cuts utterances with them: no sync)
    backend: str = "sdpa"  # a resolved backend: fa4 | fa2 | sdpa

    def __post_init__(self):
        if self.cu_cpu is None:  # a caller's CPU tensor costs nothing; a device one, one copy
            self.cu_cpu = self.cu_seqlens.detach().to("cpu")

    @property
    def lengths(self) -> list[int]:
        return self.cu_cpu.diff().tolist()


# ---------------------------------------------------------------------------- choosing


@lru_cache(maxsize=1)
def _fa4_interface():
    """flash_attn.cute.interface, imported once (it loads the CuTe DSL compiler: seconds)."""
    import flash_attn.cute.interface as iface

    for name in ("_flash_attn_fwd", "_flash_attn_bwd"):
        if not hasattr(iface, name):
            raise ImportError(f"flash_attn.cute.interface has no {name} (flash-attn-4 {FA4_VERSION} has)")
    return iface


def fa4_import_error() -> str | None:
    """Why flash-attn-4 cannot be used in this process (None: it imports)."""
    try:
        _fa4_interface()
    except Exception as e:  # noqa: BLE001 - any import failure (a missing .so too) is the reason given
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"flash_attn.cute does not import ({type(e).__name__}: {first[:160]})"
    return None


def unavailable(backend: str, device: torch.device, dtype: torch.dtype, head_dim: int, dropout: float) -> str | None:
    """Why `backend` cannot run this attention here, in a few words; None when it can."""
    if backend == "sdpa":
        return None
    if backend not in ("fa4", "fa2"):
        raise ValueError(f"attention backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if device.type != "cuda":
        return f"it needs a CUDA device, not {device.type}"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"it needs fp16 or bf16 inputs (bf16 autocast), not {str(dtype).replace('torch.', '')}"
    if dropout > 0:
        return "it has no attention dropout (encoder.attn_dropout > 0)"
    major, minor = torch.cuda.get_device_capability(device)
    if backend == "fa2":
        if head_dim % 8 or head_dim > 256:
            return f"head size {head_dim}: flash-attention takes multiples of 8 up to 256"
        if major < 8 or not torch.backends.cuda.is_flash_attention_available():
            return f"no flash attention in this torch build for SM{major}{minor}"
        return None
    if major not in (9, 10):  # FA4's own checks: SM90 (Hopper), SM100 (Blackwell)
        return f"it needs a Hopper or Blackwell GPU (SM90, SM100), this one is SM{major}{minor}"
    top = 256 if major == 9 else 128
    if head_dim % 8 or not 8 <= head_dim <= top:
        return f"head size {head_dim}: FA4 on SM{major}{minor} takes multiples of 8 from 8 to {top}"
    return fa4_import_error()


_logged: set[tuple] = set()


def choose(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int, dropout: float) -> str:
    """The backend that runs attention of this kind: `requested`, or for `auto` the first of
    fa4, fa2, sdpa that can run. A requested backend that cannot run is a ValueError saying why.
    Logged once per kind of call (device, dtype, head size, dropout)."""
    if requested not in BACKENDS:
        raise ValueError(f"encoder.attention_backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if requested != "auto":
        why = unavailable(requested, device, dtype, head_dim, dropout)
        if why is not None:
            raise ValueError(f"encoder.attention_backend {requested} cannot run here: {why}")
        chosen, reason = requested, "as configured"
    else:
        skipped = []
        for chosen in ("fa4", "fa2", "sdpa"):
            why = unavailable(chosen, device, dtype, head_dim, dropout)
            if why is None:
                break
            skipped.append(f"not {chosen}: {why}")
        reason = "auto" + (f"; {'; '.join(skipped)}" if skipped else "")
    key = (requested, device.type, dtype, head_dim, dropout > 0, chosen)
    if key not in _logged:
        _logged.add(key)
        kind = f"{device.type} {str(dtype).replace('torch.', '')}, head size {head_dim}"
        log.info("attention backend: %s for %s (%s)", chosen, kind, reason)
    return chosen


# ---------------------------------------------------------------------------- kernels


def packed_attention(q: Tensor, k: Tensor, v: Tensor, packed: Packed, dropout_p: float = 0.0) -> Tensor:
    """Attention within each utterance of packed (tokens, H, Dh) q/k/v -> (tokens, H, Dh), by
    `packed.backend` (see `choose`)."""
    if packed.backend == "fa4":
        return torch.ops.astctc.fa4_varlen(q, k, v, packed.cu_seqlens, packed.max_len)[0]
    if packed.backend == "fa2":
        from torch.nn.attention.varlen import varlen_attn  # torch >= 2.10

        cu = packed.cu_seqlens
        return varlen_attn(q, k, v, cu, cu, packed.max_len, packed.max_len)
    if packed.backend != "sdpa":
        raise ValueError(f"packed attention backend must be fa4, fa2 or sdpa, not {packed.backend!r}")
    if dropout_p > 0 or not torch.compiler.is_compiling():
        return _sdpa_loop(q, k, v, packed.cu_cpu, dropout_p)
    return torch.ops.astctc.varlen_sdpa(q, k, v, packed.cu_cpu)[0]


# Eager runs, and attention dropout under torch.compile (a graph break: the sdpa op has none).
def _sdpa_loop_eager(q: Tensor, k: Tensor, v: Tensor, cu_cpu: Tensor, dropout_p: float) -> Tensor:
    outs = []
    for qi, ki, vi in zip(*(t.split(cu_cpu.diff().tolist()) for t in (q, k, v))):
        qi, ki, vi = (_heads_first(t) for t in (qi, ki, vi))  # 4-D: the CPU's flash kernel
        outs.append(F.scaled_dot_product_attention(qi, ki, vi, dropout_p=dropout_p)[0].transpose(0, 1))
    return torch.cat(outs)


_sdpa_loop = _sdpa_loop_eager  # leave_loop_out_of_graphs() marks it once something compiles


def leave_loop_out_of_graphs() -> None:
    """Mark the eager loop for torch.compile to leave out of its graphs. Done where compiling
    starts, not at import: torch.compiler.disable imports torch._dynamo, 3-8 s at the start of
    every process (train, decode, transcribe) that never compiles."""
    global _sdpa_loop
    _sdpa_loop = torch.compiler.disable(_sdpa_loop_eager)


def _like(t: Tensor) -> Tensor:
    """A contiguous tensor of t's shape: what the kernels return, whatever strides t came with
    (a fake's strides must be the real output's, which compiled code relies on)."""
    return t.new_empty(t.shape)


def _heads_first(t: Tensor) -> Tensor:
    return t.transpose(0, 1)[None]  # (L, H, Dh) -> (1, H, L, Dh)


def _sdpa_forward(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """One utterance's attention, (1, H, L, Dh) -> (out, lse (1, H, L) float32): on the CPU the
    kernel SDPA itself runs there (the same numbers as the eager loop), elsewhere in fp32 math."""
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
        return out, lse
    return _math_forward(q, k, v)


def _sdpa_backward(g: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor) -> tuple[Tensor, ...]:
    """The gradients of `_sdpa_forward` from its saved output and log-sum-exp."""
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(g, q, k, v, out, lse, 0.0, False)
    return _math_backward(g, q, k, v, out, lse)


def _math_forward(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    lse = scores.logsumexp(-1)
    return ((scores - lse[..., None]).exp() @ v.float()).to(q.dtype), lse


def _math_backward(g: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor) -> tuple[Tensor, ...]:
    scale = q.shape[-1] ** -0.5
    qf, kf, vf, gf = q.float(), k.float(), v.float(), g.float()
    p = ((qf @ kf.transpose(-1, -2)) * scale - lse[..., None]).exp()
    ds = p * (gf @ vf.transpose(-1, -2) - (gf * out.float()).sum(-1, keepdim=True))
    grads = ((ds @ kf) * scale, (ds.transpose(-1, -2) @ qf) * scale, p.transpose(-1, -2) @ gf)
    return tuple(d.to(q.dtype) for d in grads)


@torch.library.custom_op("astctc::varlen_sdpa", mutates_args=())
def _varlen_sdpa(q: Tensor, k: Tensor, v: Tensor, cu_cpu: Tensor) -> tuple[Tensor, Tensor]:
    """Per-utterance attention of packed (tokens, H, Dh) q/k/v -> (out, lse (H, tokens))."""
    outs, lses = [], []
    for qi, ki, vi in zip(*(t.split(cu_cpu.diff().tolist()) for t in (q, k, v))):
        o, lse = _sdpa_forward(_heads_first(qi), _heads_first(ki), _heads_first(vi))
        outs.append(o[0].transpose(0, 1))
        lses.append(lse[0])
    return torch.cat(outs), torch.cat(lses, dim=1)


@_varlen_sdpa.register_fake
def _(q, k, v, cu_cpu):
    return _like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("astctc::varlen_sdpa_backward", mutates_args=())
def _varlen_sdpa_backward(
    grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, cu_cpu: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    lengths = cu_cpu.diff().tolist()
    dq, dk, dv = [], [], []
    pieces = zip(*(t.split(lengths) for t in (grad, q, k, v, out)), lse.split(lengths, dim=1))
    for gi, qi, ki, vi, oi, li in pieces:
        d = _sdpa_backward(*(_heads_first(t) for t in (gi, qi, ki, vi, oi)), li[None])
        for acc, t in zip((dq, dk, dv), d):
            acc.append(t[0].transpose(0, 1))
    return torch.cat(dq), torch.cat(dk), torch.cat(dv)


@_varlen_sdpa_backward.register_fake
def _(grad, q, k, v, out, lse, cu_cpu):
    return _like(q), _like(k), _like(v)


def _sdpa_setup(ctx, inputs, output):
    q, k, v, cu_cpu = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_cpu)


def _sdpa_grad(ctx, grad, dlse):
    q, k, v, out, lse, cu_cpu = ctx.saved_tensors
    dq, dk, dv = torch.ops.astctc.varlen_sdpa_backward(grad.contiguous(), q, k, v, out, lse, cu_cpu)
    return dq, dk, dv, None  # lse is not differentiated: no caller uses it


_varlen_sdpa.register_autograd(_sdpa_grad, setup_context=_sdpa_setup)


@torch.library.custom_op("astctc::fa4_varlen", mutates_args=())
def _fa4_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """FA4's varlen forward -> (out (tokens, H, Dh), lse (H, tokens) float32)."""
    res = _fa4_interface()._flash_attn_fwd(
        q,
        k,
        v,
        cu_seqlens_q=cu_seqlens,
        cu_seqlens_k=cu_seqlens,
        max_seqlen_q=max_len,
        max_seqlen_k=max_len,
        return_lse=True,
    )
    return res[0].contiguous(), res[1].contiguous()  # (out, lse, ...): later entries are for other modes


@_fa4_varlen.register_fake
def _(q, k, v, cu_seqlens, max_len):
    return _like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("astctc::fa4_varlen_backward", mutates_args=())
def _fa4_varlen_backward(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, cu_seqlens: Tensor, max_len: int
) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = _fa4_interface()._flash_attn_bwd(
        q,
        k,
        v,
        out,
        dout,
        lse,
        cu_seqlens_q=cu_seqlens,
        cu_seqlens_k=cu_seqlens,
        max_seqlen_q=max_len,
        max_seqlen_k=max_len,
    )[:3]
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@_fa4_varlen_backward.register_fake
def _(dout, q, k, v, out, lse, cu_seqlens, max_len):
    return _like(q), _like(k), _like(v)


def _fa4_setup(ctx, inputs, output):
    q, k, v, cu_seqlens, max_len = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
    ctx.max_len = max_len


def _fa4_grad(ctx, dout, dlse):
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = torch.ops.astctc.fa4_varlen_backward(dout.contiguous(), q, k, v, out, lse, cu_seqlens, ctx.max_len)
    return dq, dk, dv, None, None  # lse is not differentiated: no caller uses it


_fa4_varlen.register_autograd(_fa4_grad, setup_context=_fa4_setup)
