"""Training throughput of the AST encoder + CTC head on synthetic LibriSpeech-like batches.

Batches are what training sees: utterance durations drawn from a LibriSpeech-like mix (2-35 s,
mostly 11-18 s, a tail of short ones), cut into dynamic batches by our own duration batching
(BatchedShardDataset) under a padded-seconds budget, with random fbank features and targets.
Each step is forward + backward + AdamW (bf16 autocast on CUDA, fp32 on CPU). Prints audio
seconds and encoder tokens per second, step time, peak memory, padding fraction and MFU.

MFU counts the model's FLOPs on the valid tokens (padding is waste, not work; the count is
astctc/models/flops.py's, which training logs use too) over the device's dense bf16 peak
(astctc/device.py: 989 TFLOP/s for H100 SXM and H200, NVIDIA's datasheets); other devices
need --peak-tflops, else MFU is printed as n/a. --profile writes one step's kernels by time.

    .venv/bin/python bench/train_throughput.py --tiny                    # CPU / CI
    .venv/bin/python bench/train_throughput.py --preset ast --budget 400 # a GPU
    .venv/bin/python bench/train_throughput.py --config recipes/librispeech/conf/ast_base_100h.yaml
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astctc.data.shards import BatchedShardDataset  # noqa: E402
from astctc.device import peak_tflops  # noqa: E402
from astctc.models.encoder import EncoderConfig  # noqa: E402
from astctc.models.flops import encoder_tokens, train_flops  # noqa: E402
from astctc.models.heads import CTCHead, CTCHeadConfig  # noqa: E402
from astctc.models.model import ASTModel, ModelConfig  # noqa: E402

PRESETS = {
    # AST-Base as published: 16x16 patches, strides 10/10 -> 12 x 10 tokens per second
    "ast": dict(
        patch_freq=16,
        patch_time=16,
        stride_freq=10,
        stride_time=10,
        embed_dim=768,
        depth=12,
        num_heads=12,
        num_cls_tokens=2,
    ),
    # the frame layout (SSAST): full-band 128 x 2 patches -> 50 tokens per second, Base size
    "frame": dict(
        patch_freq=128,
        patch_time=2,
        stride_freq=128,
        stride_time=2,
        embed_dim=768,
        depth=12,
        num_heads=12,
        num_cls_tokens=1,
    ),
    # CPU / CI size, frame layout
    "tiny": dict(
        patch_freq=128,
        patch_time=4,
        stride_freq=128,
        stride_time=4,
        embed_dim=64,
        depth=2,
        num_heads=2,
        num_cls_tokens=1,
    ),
}


def librispeech_like(n: int, seed: int = 0) -> np.ndarray:
    """n durations (s) like LibriSpeech's training sets: 80% around 14.6 +- 2.3 s (the
    segmenter's target length), 20% a log-normal tail of short utterances around 6 s,
    clipped to 2-35 s; mean about 13 s (train-960: 12.3 s)."""
    r = np.random.default_rng(seed)
    d = np.where(r.random(n) < 0.8, r.normal(14.6, 2.3, n), r.lognormal(np.log(6.0), 0.55, n))
    return np.clip(d, 2.0, 35.0)


def make_batches(args, n_batches: int) -> list[list[float]]:
    """Durations of the first n_batches batches our duration batching cuts from the mix."""
    durs = librispeech_like(max(args.buffer * 4, n_batches * 80), args.seed)
    src = [{"id": str(i), "duration": float(d)} for i, d in enumerate(durs)]
    ds = BatchedShardDataset(
        src,
        lambda items: [s["duration"] for s in items],
        args.budget,
        num_buckets=args.num_buckets,
        bucket_buffer=args.buffer,
        seed=args.seed,
        max_batch_seconds2=args.budget2,
    )
    out = []
    for b in ds:
        out.append(b)
        if len(out) == n_batches:
            break
    return out


def synth_batch(durs: list[float], g: torch.Generator, tokens_per_s: float, vocab: int) -> dict:
    frames = [int(d * 100) for d in durs]  # fbank: 100 frames per second
    feats = torch.zeros(len(frames), max(frames), 128)
    for i, n in enumerate(frames):
        feats[i, :n] = torch.randn(n, 128, generator=g)
    tl = torch.tensor([max(1, int(d * tokens_per_s)) for d in durs])
    return {
        "feats": feats,
        "lengths": torch.tensor(frames),
        "targets": torch.randint(1, vocab, (int(tl.sum()),), generator=g),
        "target_lengths": tl,
        "seconds": sum(durs),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="ast")
    p.add_argument("--tiny", action="store_true", help="the tiny preset with a small budget (CPU, CI)")
    p.add_argument("--config", help="a training YAML: its model and data batching are used")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the --config")
    p.add_argument("--attention", choices=["padded", "packed"], default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    p.add_argument("--budget", type=float, default=None, help="max_batch_seconds (default 400, tiny 120)")
    p.add_argument("--budget2", type=float, default=None, help="max_batch_seconds2 (s^2), optional")
    p.add_argument("--num-buckets", type=int, default=None, help="0 = sort and cut (default)")
    p.add_argument("--buffer", type=int, default=None, help="bucket_buffer (default 2000)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--vocab", type=int, default=None, help="CTC vocabulary (default 512, tiny 32)")
    p.add_argument("--tokens-per-second", type=float, default=None, help="CTC targets per second of audio")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: datasheet)")
    p.add_argument("--profile", help="write a torch.profiler kernel table of one timed step here")
    p.add_argument(
        "--sdpa", choices=["cudnn", "efficient", "flash"], help="padded attention: allow only this SDPA kernel"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    enc_kw, data = dict(PRESETS["tiny" if args.tiny else args.preset]), {}
    if args.config:
        from astctc.config import load_config
        from astctc.train import TrainConfig

        cfg = load_config(TrainConfig, args.config, args.set)
        enc = cfg.model.encoder
        data = {
            "budget": cfg.data.max_batch_seconds,
            "num_buckets": cfg.data.num_buckets,
            "buffer": cfg.data.bucket_buffer,
            "budget2": cfg.data.max_batch_seconds2,
        }
        ctc = CTCHeadConfig(vocab_size=args.vocab or 512, combine=cfg.model.ctc.combine, dropout=cfg.model.ctc.dropout)
    else:
        enc = EncoderConfig(**enc_kw)
        ctc = CTCHeadConfig(vocab_size=args.vocab or (32 if args.tiny else 512))
    defaults = {"budget": 120.0 if args.tiny else 400.0, "num_buckets": 0, "buffer": 2000, "budget2": None}
    for k, v in {**defaults, **data}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    enc.max_frames = max(enc.max_frames, 3600)  # 35 s + 1 s
    if args.attention:
        enc.attention = args.attention
    tokens_per_s = args.tokens_per_second or min(15.0, 0.6 * enc.frame_rate)  # chars or word pieces
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    bf16 = device.type == "cuda"

    torch.manual_seed(args.seed)
    mcfg = ModelConfig(enc, ctc)
    model = ASTModel(mcfg).to(device).train()
    if args.compile:
        model.encoder.compile_blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    batches = make_batches(args, args.warmup + args.steps)
    g = torch.Generator().manual_seed(args.seed)
    times, cpu_times, secs, valid_tok, padded_tok, flops = [], [], 0.0, 0, 0, 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    prof = None
    for i, durs in enumerate(batches):
        b = synth_batch(durs, g, tokens_per_s, ctc.vocab_size)
        # lengths stay on the CPU, as in training (the encoder plans masks and packing there)
        feats, lengths, tl = b["feats"].to(device), b["lengths"], b["target_lengths"]
        targets = b["targets"].to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if args.profile and i == args.warmup:
            prof = torch.profiler.profile(record_shapes=False)
            prof.__enter__()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), sdpa_context(args.sdpa):
            out = model(feats, lengths)
        loss = CTCHead.loss(out["log_probs"], enc.time_columns(lengths), targets, tl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        if prof is not None:
            prof.__exit__(None, None, None)
            Path(args.profile).write_text(kernel_table(prof, dt))
            prof = None
        times.append(dt)
        cpu_times.append(time.process_time() - c0)
        if i >= args.warmup:
            frames = b["lengths"].tolist()
            tok = [encoder_tokens(enc, n) for n in frames]
            secs += b["seconds"]
            valid_tok += sum(tok)
            padded_tok += len(tok) * max(tok)
            flops += train_flops(mcfg, frames)

    timed = times[args.warmup :]
    total = sum(timed)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = args.peak_tflops or peak_tflops(device)
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB, process RSS
    res = {
        "device": name,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "preset": args.config or ("tiny" if args.tiny else args.preset),
        "attention": enc.attention,
        "compile": args.compile,
        "sdpa": args.sdpa,
        "precision": "bf16" if bf16 else "fp32",
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "budget_s": args.budget,
        "num_buckets": args.num_buckets,
        "buffer": args.buffer,
        "batch_size_mean": round(statistics.mean(len(b) for b in batches[args.warmup :]), 1),
        "audio_s_per_s": round(secs / total, 1),
        "tokens_per_s": round(valid_tok / total),
        # per second of this process's CPU time: steadier than wall time on a shared machine
        "audio_s_per_cpu_s": round(secs / sum(cpu_times[args.warmup :]), 1) if device.type == "cpu" else None,
        "step_ms_median": round(1000 * statistics.median(timed), 1),
        "step_cpu_ms_median": round(1000 * statistics.median(cpu_times[args.warmup :]), 1),  # all threads
        "first_step_s": round(times[0], 2),
        "peak_mem_GiB": round(peak_mem, 2),
        "padding_fraction": round(1 - valid_tok / padded_tok, 4),
        "model_TFLOP_per_step": round(flops / len(timed) / 1e12, 4),
        "achieved_TFLOP_s": round(flops / total / 1e12, 4),
        "peak_TFLOP_s": peak,
        "mfu": round(flops / total / (peak * 1e12), 4) if peak else None,
    }
    if args.compile:  # the first step compiles; later shapes may recompile (dynamic shapes)
        res["compile_s_approx"] = round(times[0] - statistics.median(timed), 2)
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {'n/a' if v is None else v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


def sdpa_context(name: str | None):
    """Only the named scaled_dot_product_attention kernel (None: torch's own choice)."""
    if name is None:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {"cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "flash": "FLASH_ATTENTION"}
    return sdpa_kernel([getattr(SDPBackend, kernels[name])])


def kernel_table(prof, step_seconds: float, rows: int = 25) -> str:
    """The profiled step's device time by kernel (self time, most first), and by kind: matrix
    products, attention, the rest (elementwise, norms, copies): where an MFU goes."""
    # kernels only: an operator (aten::mm, ...) also reports the device time of the kernels it launched
    ops = ("aten::", "autograd::", "Optimizer.", "torch::", "cuda")
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0 and not e.key.startswith(ops)]
    events.sort(key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in events) or 1.0

    def kind(name: str) -> str:
        n = name.lower()
        if "flash" in n or "fmha" in n or "attention" in n or "attn" in n:
            return "attention"
        if "gemm" in n or "xmma" in n or "cutlass" in n or "matmul" in n or "cublas" in n or "nvjet" in n:
            return "matmul"
        return "other"

    by_kind: dict[str, float] = {}
    for e in events:
        by_kind[kind(e.key)] = by_kind.get(kind(e.key), 0.0) + e.self_device_time_total
    lines = [f"step wall {1000 * step_seconds:.1f} ms, device busy {total / 1000:.1f} ms"]
    lines += [f"{k:<10} {v / 1000:8.1f} ms {100 * v / total:5.1f}%" for k, v in sorted(by_kind.items())]
    lines.append("")
    for e in events[:rows]:
        t = e.self_device_time_total
        lines.append(f"{t / 1000:8.2f} ms {100 * t / total:5.1f}% {e.count:5d}x  {e.key[:110]}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
