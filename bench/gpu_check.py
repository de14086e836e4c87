"""The GPU checks and figures of one short session, in one run; bench/gpu_check.sh calls this.

Sections, in order of importance (a run that hits --budget skips what is left, says so):
  varlen      packed attention by each backend that runs here (fa4, fa2, sdpa) == padded attention
  features    fbank_batch (log-mel on the device) == fbank on the CPU, Kaldi's and Whisper's
  backends    training rows, FA2 against FA4, eager against compiled (the block stack as one
              graph), for AST-Base at stride 5 (the LibriSpeech recipe) and 10 (AST's) and for
              encoders with Whisper's stem at base and small width; a bf16-residual row. Each row
              leaves --reserve seconds to the later sections, else it is skipped (said in its row)
  decode      greedy decoding of five synthetic hours in 75 shards: `decode_set` end to end with
              log-mel on the device (the loader only decodes audio), then with fbank in the
              loader, and the model alone
  attention   attention alone, fwd + bwd, at the recipe's lengths: each kernel's TFLOP/s and error
  trainer     the recipe's Trainer (compiled, its loader's 12 workers): logged MFU and data wait
  loader      the recipe's training loader alone
  smoke       300 training steps of a small model on synthetic speech: the loss must fall
  ddp         `torchrun --nproc_per_node 1` (DDP, NCCL, encoder frozen then unfrozen) against
              one process: the same parameters (within float tolerance on CUDA)
  resume      a run stopped and resumed equals a straight one; a checkpoint carrying 8 GPUs'
              RNG states resumes here
  syncs       host-device synchronisations per steady training step (CUDA sync debug mode)
`--toy` runs every section at CPU size, so the script is exercised by the test suite (the
fa4/fa2 rows then say why they cannot run; compiled rows use dynamo with the aot_eager backend).
Writes gpu_check.json (every figure) and the profile tables to --out; prints one table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

RECIPE = REPO / "recipes" / "librispeech" / "conf" / "ast_base_100h.yaml"


class Run:
    """Rows of the final table and every figure, written to gpu_check.json after each section."""

    def __init__(self, out: Path, budget: float):
        self.out, self.budget, self.t0 = out, budget, time.time()
        self.rows: list[tuple[str, str, str]] = []
        self.figures: dict = {}
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)

    def row(self, check: str, result: str, ok: bool | None = None) -> None:
        self.rows.append((check, result, "n/a" if ok is None else ("pass" if ok else "FAIL")))
        if ok is False:
            self.failed.append(check)

    def save(self) -> None:
        data = {
            "figures": self.figures,
            "rows": self.rows,
            "failed": self.failed,
            "skipped": self.skipped,
            "seconds": round(time.time() - self.t0, 1),
        }
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=1, default=str) + "\n")

    def section(self, name: str, fn, need: float) -> None:
        """Run one section unless fewer than `need` seconds of the budget are left."""
        if self.left() < need:
            self.skipped.append(name)
            self.row(name, f"skipped: {self.left():.0f} s of the budget left, {need:.0f} s needed")
            return
        t = time.time()
        print(f"== {name} ({self.left():.0f} s left)", flush=True)
        try:
            fn(self)
        except Exception as e:  # one broken section must not hide the others' figures
            traceback.print_exc()
            self.row(name, f"error: {type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}", False)
        self.figures.setdefault("section_seconds", {})[name] = round(time.time() - t, 1)
        self.save()

    def table(self) -> str:
        width = max(len(r[0]) for r in self.rows)
        lines = [f"| {'check':<{width}} | result | status |", f"|{'-' * (width + 2)}|---|---|"]
        lines += [f"| {c:<{width}} | {r} | {s} |" for c, r, s in self.rows]
        return "\n".join(lines)


# ------------------------------------------------------------------------------ sections


def env(run: Run, a) -> None:
    from astctc.device import peak_tflops
    from astctc.models.attention import FA4_VERSION, unavailable

    dev = a.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    t = time.time()
    kernels = {b: unavailable(b, dev, a.dtype, 64, 0.0) or "runs" for b in ("fa4", "fa2")}
    run.figures["env"] = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "capability": torch.cuda.get_device_capability(dev) if dev.type == "cuda" else None,
        "peak_bf16_tflops": peak_tflops(dev),
        "cpus": os.cpu_count(),
        "attention_kernels": kernels,
        "fa4_import_seconds": round(time.time() - t, 1),
    }
    run.row("device", f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPUs")
    run.row(
        "attention kernels (head size 64)",
        f"fa4 (flash-attn-4 {FA4_VERSION}): {kernels['fa4']}; fa2 (torch varlen_attn): {kernels['fa2']}",
    )


def runnable(a, head_dim: int = 64) -> list[str]:
    """The packed backends that can run here at this head size: what the rows compare."""
    from astctc.models.attention import unavailable

    return [b for b in ("fa4", "fa2", "sdpa") if unavailable(b, a.device, a.dtype, head_dim, 0.0) is None]


def varlen(run: Run, a) -> None:
    """The same weights, padded attention vs packed attention by each backend that runs here,
    on a batch of unequal lengths: outputs and gradients."""
    from astctc.models.encoder import ASTEncoder, EncoderConfig

    torch.manual_seed(0)
    if a.toy:
        cfg = EncoderConfig(patch_freq=128, stride_freq=128, patch_time=4, stride_time=4, embed_dim=64, depth=2)
        cfg.num_heads, cfg.num_cls_tokens, cfg.max_frames = 2, 1, 1000
        frames = [400, 330, 250, 120]
    else:
        cfg = EncoderConfig(stride_time=5, depth=4, max_frames=3600)  # AST-Base rows, 4 blocks
        frames = [1600, 1450, 1210, 900, 640, 300]
    enc = ASTEncoder(cfg).to(a.device)
    lengths = torch.tensor(frames)
    feats = torch.randn(len(frames), max(frames), 128, device=a.device)
    outs, grads = {}, {}
    modes = [("padded", "auto")] + [("packed", b) for b in runnable(a, cfg.embed_dim // cfg.num_heads)]
    for mode, backend in modes:
        cfg.attention, cfg.attention_backend = mode, backend
        enc.zero_grad(set_to_none=True)
        with torch.autocast(a.device.type, dtype=torch.bfloat16, enabled=a.bf16):
            out = enc(feats, lengths)
        h = out.hidden.float() * valid_tokens(out)[..., None]  # padding: zeros (packed) vs anything (padded)
        h.square().mean().backward()
        outs[backend if mode == "packed" else mode] = h.detach()
        grads[backend if mode == "packed" else mode] = torch.cat(
            [p.grad.flatten().float() for p in enc.parameters() if p.grad is not None]
        )
    tol = 2e-2 if a.bf16 else 1e-4
    precision = "bf16" if a.bf16 else "fp32"
    run.figures["varlen"] = {}
    for backend in [b for _, b in modes[1:]]:
        rel_out = ((outs[backend] - outs["padded"]).norm() / outs["padded"].norm()).item()
        rel_grad = ((grads[backend] - grads["padded"]).norm() / grads["padded"].norm()).item()
        run.figures["varlen"][backend] = {"rel_out": rel_out, "rel_grad": rel_grad, "tolerance": tol}
        ok = rel_out < tol and rel_grad < tol
        run.row(f"packed ({backend}) == padded", f"{precision}: outputs {rel_out:.1e}, gradients {rel_grad:.1e}", ok)


def valid_tokens(out) -> torch.Tensor:
    """(B, N) True at the class tokens and at each frequency row's valid time columns."""
    B, N, _ = out.hidden.shape
    T = (N - out.num_cls_tokens) // out.freq_rows
    cols = (torch.arange(T, device=out.columns.device)[None] < out.columns[:, None])[:, None, :]
    grid = cols.expand(B, out.freq_rows, T).reshape(B, -1)
    return torch.cat([torch.ones(B, out.num_cls_tokens, dtype=torch.bool, device=grid.device), grid], dim=1)


# ------------------------------------------------------------------- training rows by backend


def shapes(a) -> dict:
    """Encoders of the rows: AST-Base as the LibriSpeech recipe trains it (stride 5) and at AST's
    stride 10, and encoders with Whisper's stem at base and small width (80 mel bins, no class
    token, two frames a token); --toy: the same kinds, tiny."""
    from astctc.config import load_config
    from astctc.models.encoder import EncoderConfig
    from astctc.train import TrainConfig

    ast = load_config(TrainConfig, RECIPE).model.encoder
    whisper = dict(stem="whisper", num_mel_bins=80, patch_freq=80, stride_freq=80, patch_time=1, stride_time=2)
    whisper.update(num_cls_tokens=0, layer_norm_eps=1e-5, mlp_ratio=4.0, dropout=ast.dropout)
    if a.toy:
        tiny = dict(embed_dim=64, depth=2, num_heads=2)
        return {
            "ast_s5": ("tiny AST stride 5", replace(ast, **tiny)),
            "whisper_base": ("tiny Whisper-stem", EncoderConfig(**whisper, **tiny)),
        }
    return {
        "ast_s5": ("AST-Base stride 5", ast),
        "ast_s10": ("AST-Base stride 10", replace(ast, stride_time=10)),
        "whisper_small": (
            "Whisper-small-stem encoder",
            EncoderConfig(**whisper, embed_dim=768, depth=12, num_heads=12),
        ),
        "whisper_base": ("Whisper-base-stem encoder", EncoderConfig(**whisper, embed_dim=512, depth=6, num_heads=8)),
    }


def row_keys(a) -> list[str]:
    """shape/backend/mode, most wanted first: the recipe's model FA2 (today) against FA4, eager and
    compiled, then a bf16 residual stream, then AST's stride, then the Whisper stems."""
    keys = ["ast_s5/fa2/eager", "ast_s5/fa4/eager", "ast_s5/fa4/compiled", "ast_s5/fa2/compiled"]
    keys += ["ast_s5/fa4/compiled+bf16res", "ast_s10/fa4/compiled", "ast_s10/fa2/compiled"]
    keys += ["ast_s10/fa4/eager", "ast_s10/fa2/eager"]
    for w in ("whisper_small", "whisper_base"):
        keys += [f"{w}/fa4/compiled", f"{w}/fa2/compiled", f"{w}/fa4/eager", f"{w}/fa2/eager"]
    if a.toy:  # the CPU runs the sdpa rows; the fa4/fa2 ones say why not
        keys = ["ast_s5/fa4/eager", "ast_s5/sdpa/eager", "ast_s5/sdpa/compiled+bf16res", "whisper_base/sdpa/compiled"]
    return keys


def synth_batch(durs: list[float], bins: int, g: torch.Generator, tokens_per_s: float, vocab: int) -> dict:
    """Random (B, T, bins) features and CTC targets for utterances of `durs` seconds."""
    frames = [int(d * 100) for d in durs]
    feats = torch.zeros(len(frames), max(frames), bins)
    for i, n in enumerate(frames):
        feats[i, :n] = torch.randn(n, bins, generator=g)
    tl = torch.tensor([max(1, int(d * tokens_per_s)) for d in durs])
    targets = torch.randint(1, vocab, (int(tl.sum()),), generator=g)
    return {"feats": feats, "lengths": torch.tensor(frames), "targets": targets, "target_lengths": tl}


def train_row(a, enc, backend: str, mode: str, profile: Path | None = None) -> dict:
    """Forward + backward + AdamW (fused, as the Trainer builds it) of `enc` + a 512-piece CTC
    head on LibriSpeech-like batches of 400 s (train_throughput's mix and batching), bf16
    autocast, packed attention by `backend`; eager or compiled (the block stack as one graph).
    The first step's time includes compilation and FA4's kernel compilation."""
    import train_throughput as tt

    from astctc.models.flops import encoder_tokens, train_flops
    from astctc.models.heads import CTCHead, CTCHeadConfig
    from astctc.models.model import ASTModel, ModelConfig
    from astctc.train.config import OptimConfig
    from astctc.train.optim import make_optimizer

    enc = replace(enc, attention="packed", attention_backend=backend, max_frames=max(enc.max_frames, 3600))
    enc.bf16_residual = mode.endswith("+bf16res")
    vocab = 32 if a.toy else 512
    cfg = ModelConfig(enc, CTCHeadConfig(vocab_size=vocab, combine="concat", dropout=0.1))
    torch.manual_seed(0)
    model = ASTModel(cfg).to(a.device).train()
    if mode.startswith("compiled"):
        model.encoder.compile_blocks(backend="aot_eager" if a.toy else "inductor")  # toy: dynamo's work only
    opt, _ = make_optimizer(model, OptimConfig(lr=1e-4, warmup_steps=1), 1000)
    warmup, steps = (1, 2) if a.toy else (3, a.steps)
    batching = argparse.Namespace(budget=60.0 if a.toy else 400.0, num_buckets=0, buffer=2000, seed=0, budget2=None)
    batches = tt.make_batches(batching, warmup + steps)
    g = torch.Generator().manual_seed(0)
    tokens_per_s = min(15.0, 0.6 * enc.frame_rate)
    times, secs, tokens, flops, first = [], 0.0, 0, 0.0, 0.0
    if a.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(a.device)
    prof = None
    for i, durs in enumerate(batches):
        b = synth_batch(durs, enc.num_mel_bins, g, tokens_per_s, vocab)
        feats, targets = b["feats"].to(a.device), b["targets"].to(a.device)
        sync(a)
        if profile is not None and i == warmup:
            prof = torch.profiler.profile(record_shapes=False)
            prof.__enter__()
        t0 = time.perf_counter()
        with torch.autocast(a.device.type, dtype=torch.bfloat16, enabled=a.bf16):
            out = model(feats, b["lengths"])
        loss = CTCHead.loss(out["log_probs"], enc.time_columns(b["lengths"]), targets, b["target_lengths"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(a)
        dt = time.perf_counter() - t0
        if prof is not None:
            prof.__exit__(None, None, None)
            profile.write_text(tt.kernel_table(prof, dt))
            prof = None
        if i == 0:
            first = dt
        if i >= warmup:
            frames = b["lengths"].tolist()
            times.append(dt)
            secs += sum(durs)
            tokens += sum(encoder_tokens(enc, n) for n in frames)
            flops += train_flops(cfg, frames)
    total = sum(times)
    peak = a.peak
    mem = torch.cuda.max_memory_allocated(a.device) / 2**30 if a.device.type == "cuda" else None
    return {
        "audio_s_per_s": round(secs / total, 1),
        "tokens_per_s": round(tokens / total),
        "step_ms_median": round(1000 * sorted(times)[len(times) // 2], 1),
        "first_step_s": round(first, 1),
        "mfu": round(flops / total / (peak * 1e12), 4) if peak else None,
        "peak_mem_GiB": None if mem is None else round(mem, 1),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    }


def sync(a) -> None:
    if a.device.type == "cuda":
        torch.cuda.synchronize(a.device)


def backends(run: Run, a) -> None:
    """Training rows, FA2 against FA4, eager against compiled, for each encoder shape; each row
    is skipped (said in its row) when it does not fit what the budget keeps for later sections."""
    from astctc.models.attention import unavailable

    shape_of = shapes(a)
    keys = [k for k in (a.rows or row_keys(a)) if k.split("/")[0] in shape_of]
    figures = run.figures.setdefault("backends", {})
    for key in keys:
        name, backend, mode = key.split("/")
        label, enc = shape_of[name]
        title = f"train {label}, {backend}, {mode.replace('+bf16res', ', bf16 residual')}"
        why = unavailable(backend, a.device, a.dtype, enc.embed_dim // enc.num_heads, 0.0)
        if why is not None:
            figures[key] = {"not_run": why}
            run.row(title, f"not run: {why}")
            continue
        need = 0 if a.toy else (75 if mode.startswith("compiled") else 20) + a.reserve
        if run.left() < need:
            figures[key] = {"skipped": f"{run.left():.0f} s of the budget left"}
            run.row(
                title, f"skipped: {run.left():.0f} s of the budget left, {need:.0f} s kept for it and later sections"
            )
            continue
        profile = run.out / f"profile_{key.replace('/', '_')}.txt" if name == "ast_s5" and not a.toy else None
        try:
            res = train_row(a, enc, backend, mode, profile)
        except Exception as e:  # one failing kernel must not hide the other rows
            traceback.print_exc()
            figures[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
            run.row(title, f"error: {figures[key]['error']}", False)
            continue
        figures[key] = res
        mfu = "n/a" if res["mfu"] is None else f"{100 * res['mfu']:.1f}%"
        run.row(
            title,
            f"{res['audio_s_per_s']:.0f}x real time, {res['tokens_per_s'] / 1e3:.0f}k tokens/s, MFU {mfu}, "
            f"step {res['step_ms_median']:.0f} ms (first {res['first_step_s']:.0f} s), {res['peak_mem_GiB']} GiB",
        )
        torch._dynamo.reset()  # each row's compiled graph goes with its model
        run.save()


# ------------------------------------------------------------------- attention alone


def attention(run: Run, a) -> None:
    """Attention alone (fwd + bwd) on the recipe's lengths, by kernel: where attention's time goes;
    and each packed backend against fp32 attention (bf16 errors)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from astctc.models.attention import Packed, packed_attention

    errors = attention_errors(a)
    run.figures["attention_errors"] = errors
    for kernel, (e_out, e_grad) in errors.items():
        ok = max(e_out, e_grad) < 2e-2
        run.row(f"attention {kernel} == fp32 reference", f"outputs {e_out:.1e}, gradients {e_grad:.1e}", ok)
    if a.device.type != "cuda":  # the kernels' timings are CUDA's
        return
    H, Dh = 12, 64
    lens = [2950] * 30  # ~400 s of 12.3 s utterances at stride 5: 12 rows x 20 columns/s
    B, N = len(lens), max(lens)
    flops = 3 * sum(4 * n * n * H * Dh for n in lens)  # fwd 4 N^2 D; bwd 2x
    res = {}

    def timed(fn) -> float:
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / 5

    q, k, v = (torch.randn(sum(lens), H, Dh, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in "qkv")
    cu_cpu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)
    for backend in runnable(a):
        packed = Packed(cu_cpu.cuda(), N, cu_cpu, backend)

        def run_packed():
            packed_attention(q, k, v, packed).sum().backward()

        res[f"{backend} varlen (packed)"] = timed(run_packed)
    qp, kp, vp = (torch.randn(B, H, N, Dh, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = (torch.arange(N, device="cuda")[None] < torch.tensor(lens, device="cuda")[:, None])[:, None, None, :]
    for name, backend, m in (
        ("SDPA flash, no mask (equal lengths)", SDPBackend.FLASH_ATTENTION, None),
        ("SDPA cuDNN, no mask", SDPBackend.CUDNN_ATTENTION, None),
        ("SDPA efficient, key mask (padded)", SDPBackend.EFFICIENT_ATTENTION, mask),
    ):
        try:
            with sdpa_kernel([backend]):

                def run_sdpa():
                    torch.nn.functional.scaled_dot_product_attention(qp, kp, vp, attn_mask=m).sum().backward()

                res[name] = timed(run_sdpa)
        except Exception as e:
            res[name] = f"unavailable: {str(e).splitlines()[0][:80]}"
    figures = {}
    for name, t in res.items():
        if isinstance(t, float):
            figures[name] = {"ms": round(1000 * t, 2), "tflops": round(flops / t / 1e12, 1)}
            run.row(f"attention: {name}", f"{1000 * t:.1f} ms fwd+bwd, {flops / t / 1e12:.0f} TFLOP/s")
        else:
            figures[name] = t
            run.row(f"attention: {name}", t)
    run.figures["attention"] = figures


def attention_errors(a) -> dict:
    """Each packed backend that runs here (bf16) against fp32 attention per utterance: relative
    errors of the outputs and of the q/k/v gradients, on unequal lengths."""
    from astctc.models.attention import Packed, packed_attention

    device = a.device
    torch.manual_seed(0)
    lens = [1500, 1210, 700, 333] if device.type == "cuda" else [150, 121, 70, 33]
    H, Dh = 12, 64
    base = [torch.randn(sum(lens), H, Dh, device=device) for _ in range(3)]
    g = torch.randn(sum(lens), H, Dh, device=device)
    cu_cpu = torch.tensor([0] + lens).cumsum(0).to(torch.int32)

    def grads(fn, dtype):
        x = [t.detach().to(dtype).requires_grad_() for t in base]
        out = fn(*x)
        (out.float() * g).sum().backward()
        return out.float(), torch.cat([t.grad.float().flatten() for t in x])

    def reference(q, k, v):
        outs = []
        for qi, ki, vi in zip(*(t.split(lens) for t in (q, k, v))):
            qi, ki, vi = (t.transpose(0, 1)[None] for t in (qi, ki, vi))
            outs.append(torch.nn.functional.scaled_dot_product_attention(qi, ki, vi)[0].transpose(0, 1))
        return torch.cat(outs)

    with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
        ref_out, ref_grad = grads(reference, torch.float32)
    errors = {}
    for backend in runnable(argparse.Namespace(device=device, dtype=torch.bfloat16)):
        packed = Packed(cu_cpu.to(device), max(lens), cu_cpu, backend)
        out, grad = grads(lambda q, k, v: packed_attention(q, k, v, packed), torch.bfloat16)
        e_out = ((out - ref_out).norm() / ref_out.norm()).item()
        e_grad = ((grad - ref_grad).norm() / ref_grad.norm()).item()
        errors[backend] = (e_out, e_grad)
    return errors


def smoke_corpus(a, work: Path) -> Path:
    """Shards of synthetic speech (espeak-ng): carried in --smoke, or synthesised here."""
    if a.smoke and (Path(a.smoke) / "train" / "shards" / "index.json").exists():
        return Path(a.smoke)
    from astctc.data.shards import write_shards

    root = work / "smoke"
    n = 48 if a.toy else 300
    subprocess.run(
        [sys.executable, "-m", "astctc.cli", "synth", "--out", str(root), "--num-train", str(n), "--num-dev", "8",
         "--num-test", "0"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    for split in ("train", "dev"):
        write_shards(root / split / "manifest.jsonl", root / split / "shards", max_shard_count=16, progress=False)
    return root


def char_lang(corpus: Path, out: Path) -> Path:
    from astctc.data.shards import ShardDataset
    from astctc.text import normalize
    from astctc.tokenizer import CharTokenizer

    texts = [normalize(s["text"]) for s in ShardDataset(corpus / "train" / "shards", shuffle=False)]
    CharTokenizer.train(texts).save(out)
    return out


def small_model_sets(a, corpus: Path, lang: Path, exp: Path, **kw) -> list[str]:
    """A small frame-layout model with convolution modules (the mini recipe's kind)."""
    sets = {
        "exp_dir": str(exp),
        "device": str(a.device),
        "data.train": str(corpus / "train" / "shards"),
        "data.valid": str(corpus / "dev" / "shards"),
        "data.tokenizer": str(lang),
        "data.max_batch_seconds": 30 if a.toy else 120,
        "data.num_workers": 1 if a.toy else 6,
        "model.encoder.patch_freq": 128,
        "model.encoder.stride_freq": 128,
        "model.encoder.patch_time": 3,
        "model.encoder.stride_time": 3,
        "model.encoder.embed_dim": 64 if a.toy else 256,
        "model.encoder.depth": 2 if a.toy else 6,
        "model.encoder.num_heads": 4,
        "model.encoder.num_cls_tokens": 1,
        "model.encoder.conv_kernel": 15,
        "model.encoder.max_frames": 1200,
        "model.encoder.attention": "packed",
        "optim.lr": 2e-3,
        "optim.warmup_steps": 30,
        "log_every": 10,
        "checkpoint_every": 100000,
        "validate": False,
        "progress": False,
    }
    sets.update(kw)
    return [f"{k}={v}" for k, v in sets.items()]


def smoke(run: Run, a) -> None:
    from astctc.config import load_config
    from astctc.train import TrainConfig, Trainer

    corpus, lang = a.corpus, a.lang
    exp = a.work / "smoke_exp"
    steps = 50 if a.toy else 300
    t = time.time()
    Trainer(load_config(TrainConfig, None, small_model_sets(a, corpus, lang, exp, max_steps=steps))).run()
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    first, last = train[0]["loss"], train[-1]["loss"]
    run.figures["smoke"] = {"steps": steps, "seconds": round(time.time() - t, 1), "log": train}
    mfu = train[-1].get("mfu")
    run.row(
        f"smoke: {steps} steps, synthetic speech",
        f"loss {first:.2f} -> {last:.2f} in {time.time() - t:.0f} s; last window "
        f"{train[-1]['audio_seconds_per_second']:.0f}x real time, data wait {100 * train[-1]['data_wait']:.0f}%"
        + (f", MFU {100 * mfu:.1f}%" if mfu else ""),
        last < 0.7 * first,
    )


def compare(a_sd: dict, b_sd: dict) -> tuple[bool, float]:
    """(bit-identical, largest |a - b| / (|b|max + 1e-12) over tensors)."""
    same, worst = True, 0.0
    for k, v in a_sd.items():
        w = b_sd[k]
        if not torch.equal(v, w):
            same = False
            worst = max(worst, ((v.float() - w.float()).abs().max() / (w.float().abs().max() + 1e-12)).item())
    return same, worst


def ddp(run: Run, a) -> None:
    """torchrun with one process: DDP over NCCL (gloo on CPU), the encoder frozen for 3 steps."""
    from astctc.train import checkpoints, load_checkpoint

    results = {}
    for mode in ("plain", "ddp"):
        exp = a.work / f"ddp_{mode}"
        sets = small_model_sets(
            a, a.corpus, a.lang, exp, max_steps=8, **{"optim.freeze_encoder_steps": 3, "model.ctc.dropout": 0.0}
        )
        if mode == "plain":
            cmd = [sys.executable, "-m", "astctc.cli", "train"]
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr",
                   "127.0.0.1", "--master_port", str(port), "-m", "astctc.cli", "train"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        proc = subprocess.run(cmd + [x for s in sets for x in ("--set", s)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} run failed: {proc.stderr.strip().splitlines()[-1]}")
        results[mode] = load_checkpoint(checkpoints(exp)[-1])["model"]
        if mode == "ddp":
            log = (exp / "log.txt").read_text()
            if "DDP: rank 0 of 1" not in log or "encoder unfrozen" not in log:
                raise RuntimeError("the torchrun run did not train under DDP through the unfreezing")
    same, worst = compare(results["ddp"], results["plain"])
    tol = 1e-6 if a.device.type == "cpu" else 2e-2
    run.figures["ddp"] = {"identical": same, "max_rel_diff": worst}
    run.row(
        "DDP, 1 process, freeze -> unfreeze",
        "parameters identical to one process" if same else f"largest relative difference {worst:.1e}",
        same or worst < tol,
    )


def resume(run: Run, a) -> None:
    """Straight 12 steps vs 6 + resume to 12; then resume a checkpoint with 8 CUDA RNG states."""
    from astctc.config import load_config
    from astctc.train import TrainConfig, Trainer, checkpoints, load_checkpoint

    def train(exp, steps, **kw):
        sets = small_model_sets(a, a.corpus, a.lang, exp, max_steps=steps, **kw)
        Trainer(load_config(TrainConfig, None, sets)).run()
        return load_checkpoint(checkpoints(exp)[-1])

    straight = train(a.work / "res_straight", 12)["model"]
    train(a.work / "res_split", 6)
    resumed = train(a.work / "res_split", 12)["model"]
    same, worst = compare(resumed, straight)
    # the checkpoint of an 8-GPU machine (one CUDA RNG state each, the older format), resumed here
    src = checkpoints(a.work / "res_split")[-1]
    state = load_checkpoint(src)
    cuda = state["rng"].get("cuda", torch.zeros(16, dtype=torch.uint8))
    state["rng"]["cuda"] = [cuda.clone() for _ in range(8)]
    eight = a.work / "res_eight"
    (eight / "ckpt").mkdir(parents=True)
    torch.save(state, eight / "ckpt" / src.name)
    train(eight, 14)
    run.figures["resume"] = {"identical": same, "max_rel_diff": worst}
    tol = 0.0 if a.device.type == "cpu" else 2e-2
    run.row(
        "resume = straight run; 8-GPU checkpoint resumed",
        ("bit-identical" if same else f"largest relative difference {worst:.1e}") + "; 8-state checkpoint resumed",
        same or worst <= tol,
    )


def syncs(run: Run, a) -> None:
    """Host-device synchronisations in steady training steps (CUDA's sync debug mode counts them)."""
    if a.device.type != "cuda":
        run.row("host-device syncs per step", "CUDA only")
        return
    from astctc.config import load_config
    from astctc.train import TrainConfig, Trainer
    from astctc.train.config import make_featurizer

    cfg = load_config(TrainConfig, None, small_model_sets(a, a.corpus, a.lang, a.work / "sync", max_steps=100))
    trainer = Trainer(cfg)
    loader = trainer.epoch_batches(make_featurizer(cfg, trainer.tokenizer, train=True))
    batches = [b for _, b in zip(range(8), (x for x in loader if "feats" in x))]
    for b in batches[:3]:
        trainer.train_step(b)
        trainer.step += 1
    torch.cuda.synchronize()
    where: dict[str, int] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for b in batches[3:]:
                trainer.train_step(b)
                trainer.step += 1
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        msg = str(w.message).splitlines()[0][:100]
        where[msg] = where.get(msg, 0) + 1
    per_step = sum(where.values()) / len(batches[3:])
    run.figures["syncs"] = {"per_step": per_step, "where": where}
    run.row("host-device syncs per step", f"{per_step:.1f} ({'; '.join(f'{n}x {m}' for m, n in where.items())[:300]})")


def long_clip(a) -> tuple:
    """15 s of synthetic speech (smoke clips joined) and its words."""
    import numpy as np

    from astctc.data.shards import ShardDataset

    waves, text, sr = [], [], 16000
    for sample in ShardDataset(a.corpus / "train" / "shards", shuffle=False):
        waves.append(sample["wav"].numpy())
        text.append(sample["text"])
        if sum(len(x) for x in waves) >= 15 * sr:
            break
    return np.concatenate(waves)[: 15 * sr], " ".join(text)


def clip_shards(a, name: str, n: int) -> Path:
    """n utterances of the 15 s clip as shards (LibriSpeech-like length; the audio repeats)."""
    import soundfile as sf

    from astctc.data.manifest import write_manifest
    from astctc.data.shards import write_shards

    root = a.work / name
    if (root / "shards" / "index.json").exists():
        return root / "shards"
    root.mkdir(parents=True)
    clip, text = long_clip(a)
    sf.write(root / "clip.flac", clip, 16000)
    row = {"audio": str(root / "clip.flac"), "duration": 15.0, "text": text}
    write_manifest([{"id": f"u{i:05d}", **row} for i in range(n)], root / "manifest.jsonl")
    write_shards(root / "manifest.jsonl", root / "shards", max_shard_count=16, progress=False)
    return root / "shards"


def trainer(run: Run, a) -> None:
    """The recipe's AST-Base (random init, character CTC; compiled, as the recipe) trained by the
    real Trainer on 4 h of 15 s clips through the recipe's loader (12 workers, speed
    perturbation, SpecAugment): the logged MFU and the share of time the step waited for the
    loader. The first log window includes the compilation."""
    from astctc.config import load_config
    from astctc.train import TrainConfig, Trainer

    shards = clip_shards(a, "four_hours", 16 if a.toy else 960)
    exp = a.work / "ast_trainer"
    sets = [
        f"exp_dir={exp}",
        f"device={a.device}",
        "init=null",
        f"data.train={shards}",
        f"data.tokenizer={a.lang}",
        "validate=false",
        "progress=false",
        "checkpoint_every=100000",
        f"max_steps={6 if a.toy else 40}",
        f"log_every={3 if a.toy else 10}",
        "optim.freeze_encoder_steps=0",
        *a.trainer_set,
    ]
    if a.toy:
        sets += ["model.encoder.embed_dim=64", "model.encoder.depth=2", "model.encoder.num_heads=2"]
        sets += ["data.max_batch_seconds=60", "data.num_workers=2", "compile=false"]
    t = time.time()
    Trainer(load_config(TrainConfig, RECIPE, sets)).run()
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    run.figures["trainer"] = {"log": train, "seconds": round(time.time() - t, 1)}
    last = train[-1]
    mfu = f", MFU {100 * last['mfu']:.1f}%" if "mfu" in last else ""
    run.row(
        f"Trainer, recipe conf, {6 if a.toy else 40} steps, {2 if a.toy else 12} loader workers"
        + (f" ({', '.join(a.trainer_set)})" if a.trainer_set else ""),
        f"last {last['step'] - train[-2]['step'] if len(train) > 1 else last['step']} steps: "
        f"{last['audio_seconds_per_second']:.0f}x real time{mfu}, data wait {100 * last['data_wait']:.0f}%, "
        f"grad norm {last['grad_norm']:.2f}",
        None,
    )


def loader(run: Run, a) -> None:
    """The recipe's training loader alone (12 workers, speeds 0.9/1.0/1.1, SpecAugment) over 4 h."""
    from astctc.config import load_config
    from astctc.data.pipeline import make_loader
    from astctc.tokenizer import load_tokenizer
    from astctc.train import TrainConfig
    from astctc.train.config import make_featurizer

    shards = clip_shards(a, "four_hours", 16 if a.toy else 960)
    cfg = load_config(TrainConfig, RECIPE, [f"data.tokenizer={a.lang}"] + (["data.num_workers=2"] if a.toy else []))
    feat = make_featurizer(cfg, load_tokenizer(a.lang), train=True)
    t = time.time()
    seconds = n = 0
    first = None
    for b in make_loader(str(shards), feat, cfg.data, train=True, pin_memory=a.device.type == "cuda"):
        if "feats" in b:
            first = first or time.time() - t
            seconds += b["seconds"]
            n += 1
    wall = time.time() - t
    run.figures["loader"] = {"audio_seconds": seconds, "wall": wall, "first_batch": first, "batches": n}
    run.row(
        f"loader alone, {cfg.data.num_workers} workers",
        f"{seconds / wall:.0f}x real time over {seconds / 3600:.1f} h ({n} batches, first after {first:.1f} s)",
    )


def features(run: Run, a) -> None:
    """fbank_batch on the device against fbank on the CPU, one clip at a time (Kaldi's and
    Whisper's), on the test clips where they came along, else on the synthetic 15 s clip."""
    from astctc.audio import load_audio
    from astctc.features import FeatureConfig, fbank, fbank_batch

    shared = Path(os.environ.get("ASTCTC_SHARED_DATA", REPO.parent / "shared" / "data")) / "ljspeech_lj001" / "wavs"
    wavs = [
        load_audio(p)[:n]
        for p, n in zip(sorted(shared.glob("*.flac"))[:6], (160000, 48000, 30001, 16010, 24039, 12159))
    ]
    if not wavs:
        wavs = [torch.from_numpy(long_clip(a)[0]).float()[:n] for n in (240000, 30001, 16010)]
    lengths = torch.tensor([w.numel() for w in wavs])
    batch = torch.zeros(len(wavs), int(lengths.max()))
    for b, w in enumerate(wavs):
        batch[b, : w.numel()] = w
    figures = {}
    for kind, bins in (("kaldi", 128), ("whisper", 80)):
        cfg = FeatureConfig(kind=kind, num_mel_bins=bins)
        feats = fbank_batch(batch.to(a.device), lengths, cfg).cpu()
        err = max((feats[b, : f.shape[0]] - f).abs().max().item() for b, f in enumerate(fbank(w, cfg) for w in wavs))
        figures[kind] = err
        run.row(
            f"fbank_batch on {a.device.type} == fbank on the CPU ({kind}, {len(wavs)} clips)",
            f"max |diff| {err:.1e}",
            err < 1e-4,
        )
    run.figures["features"] = figures


def decode(run: Run, a) -> None:
    """Five synthetic hours (toy: a minute) of 15 s utterances in 75 shards, decoded greedily with
    an AST-Base model: log-mel on the device, the loader only decoding audio (the default on a
    GPU); then, when the budget allows, the same set with fbank in the loader; and the model alone."""
    from astctc.config import load_config
    from astctc.decode import DecodeOptions, decode_set
    from astctc.models.attention import choose
    from astctc.models.model import ASTModel
    from astctc.tokenizer import load_tokenizer
    from astctc.train import TrainConfig

    n = 4 if a.toy else 1200
    shards = clip_shards(a, "five_hours", n)
    clip, _ = long_clip(a)
    cfg = load_config(TrainConfig, RECIPE)
    model_cfg = cfg.model
    if a.toy:
        model_cfg.encoder.embed_dim, model_cfg.encoder.depth, model_cfg.encoder.num_heads = 64, 2, 2
    model_cfg.ctc.vocab_size = load_tokenizer(a.lang).vocab_size
    model = ASTModel(model_cfg)
    model_dir = model.save(a.work / "ast_base_model", cfg.features, load_tokenizer(a.lang))
    enc = model_cfg.encoder
    backend = choose("auto", a.device, a.dtype, enc.embed_dim // enc.num_heads, 0.0)
    results = {}
    for where in ("auto", "loader") if a.device.type == "cuda" else ("device", "loader"):  # the CPU: both paths
        if where == "loader" and not a.toy and run.left() < 60:
            run.row(f"greedy decoding, {n * 15 / 3600:.2f} h, fbank in the loader", "skipped: budget")
            continue
        out = a.work / f"decode_{where}"
        t = time.time()
        decode_set(
            str(model_dir), str(shards), str(out), DecodeOptions(device=str(a.device), plots=0, features_on=where)
        )
        speed = json.loads((out / "speed.json").read_text())
        speed["wall_with_model_load"] = time.time() - t
        results[speed["features_on"]] = speed
        ok = None if a.toy or a.device.type == "cpu" or where == "loader" else speed["x_real_time"] >= 2000
        fbank_where = f"on the {a.device.type}" if speed["features_on"] == "device" else "in the loader"
        run.row(
            f"greedy decoding, {n * 15 / 3600:.2f} h synthetic, fbank {fbank_where}",
            f"{speed['x_real_time']:.0f}x real time end to end (decode_set, {speed['audio_seconds']:.0f} s of audio, "
            f"{speed['loader_workers']} loader workers, {len(list(shards.glob('*.tar')))} shards, attention {backend}, "
            f"first batch {speed['first_batch_seconds']:.2f} s, waits {speed['loader_wait_seconds']:.2f} s of "
            f"{speed['acoustic_seconds']:.2f} s)",
            ok,
        )
    # the model alone: batches already on the device, bf16 forward + best path
    from astctc.decode.greedy import greedy_ids
    from astctc.features import fbank

    feats = fbank(torch.from_numpy(clip), cfg.features)
    per = max(1, int(200 // 15))
    x = feats[None].repeat(per, 1, 1).to(a.device)
    lengths = torch.full((per,), feats.shape[0])
    m = model.to(a.device).eval()
    with torch.no_grad(), torch.autocast(a.device.type, dtype=torch.bfloat16, enabled=a.bf16):
        for _ in range(2):
            r = m(x, lengths)
        sync(a)
        t1, reps = time.perf_counter(), 3 if a.toy else 10
        for _ in range(reps):
            r = m(x, lengths)
            greedy_ids(r["log_probs"], r["lengths"])
        sync(a)
        alone = reps * per * 15.0 / (time.perf_counter() - t1)
    run.figures["decode"] = {**results, "model_alone_x_real_time": alone, "attention_backend": backend}
    run.row("decoding: model + best path alone, 200 s batches", f"{alone:.0f}x real time (attention {backend})")


def pytest_subset(run: Run, a) -> None:
    """The CPU test files that once assumed a CPU machine, run on this GPU machine."""
    tests = a.tests or ["tests/test_run_safety.py", "tests/test_packing.py", "tests/test_ddp.py", "tests/test_train.py"]
    timeout = max(30, int(min(run.left(), 3600)) - 10)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests, "-k", "not gpu_check"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        text = proc.stdout + proc.stderr
        tail = text.strip().splitlines()[-1]
        ok = proc.returncode == 0
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        tail, ok = f"stopped after {timeout} s (budget)", None
    (run.out / "pytest.txt").write_text(text[-60000:] + "\n")
    run.row("test files on this machine", tail[:200], ok)


# -------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu_check_out", help="gpu_check.json and profile tables")
    p.add_argument("--toy", action="store_true", help="every section at CPU size (the test suite runs this)")
    p.add_argument(
        "--budget",
        type=float,
        help="seconds; sections that would overrun are skipped (default 450; --toy: none, its sizes bound the work)",
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps per throughput row")
    p.add_argument("--smoke", help="shards of synthetic speech: DIR/{train,dev}/shards (default: synthesise)")
    p.add_argument("--pytest", action="store_true", help="finally run the CPU test files that concern GPU machines")
    p.add_argument("--tests", nargs="*", help="with --pytest: these test files (or node ids) instead")
    p.add_argument("--sections", help="comma-separated sections to run (default: all)")
    p.add_argument("--trainer-set", nargs="*", default=[], help="KEY=VALUE overrides for the trainer section")
    p.add_argument("--rows", help="comma-separated training rows (shape/backend/mode) instead of the default ones")
    p.add_argument(
        "--reserve", type=float, default=150, help="seconds the training rows leave to later sections (default 150)"
    )
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    a.device = torch.device("cpu" if a.toy or not torch.cuda.is_available() else "cuda")
    a.bf16 = a.device.type == "cuda"
    a.dtype = torch.bfloat16 if a.bf16 else torch.float32
    a.peak = None
    if a.device.type == "cuda":
        from astctc.device import peak_tflops

        a.peak = peak_tflops(a.device)
    a.model = "tiny" if a.toy else "AST-Base"
    a.work = out / "work"
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir()
    # the toy run is bounded by its sizes, not the clock: a slow or busy machine runs it all
    run = Run(out, a.budget if a.budget is not None else (math.inf if a.toy else 450.0))
    env(run, a)
    a.corpus = smoke_corpus(a, a.work)
    a.lang = char_lang(a.corpus, a.work / "lang")
    plan = [  # most wanted first: a section needing more than the budget has left is skipped
        ("varlen", varlen, 10),
        ("features", features, 5),
        ("backends", backends, 60),
        ("decode", decode, 60),
        ("attention", attention, 20),
        ("trainer", trainer, 60),
        ("loader", loader, 20),
        ("smoke", smoke, 40),
        ("ddp", ddp, 40),
        ("resume", resume, 30),
        ("syncs", syncs, 15),
    ]
    a.rows = a.rows.split(",") if a.rows else []
    wanted = set(a.sections.split(",")) if a.sections else None
    for name, fn, need in plan:
        if wanted is None or name in wanted:
            run.section(name, lambda r, fn=fn: fn(r, a), 0 if a.toy else need)
    if a.pytest:
        run.section("pytest", lambda r: pytest_subset(r, a), 60)
    shutil.rmtree(a.work, ignore_errors=True)
    run.save()
    print(run.table())
    if run.skipped:
        print(f"skipped (budget): {', '.join(run.skipped)}")
    print(f"{len(run.failed)} failed: {', '.join(run.failed) or '-'}; {time.time() - run.t0:.0f} s")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
