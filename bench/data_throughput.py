"""Data pipeline throughput: shard reading, FLAC decoding, fbank, batching, per DataLoader worker.

A GPU step consumes audio at some rate (bench/train_throughput.py prints it as audio seconds
per second); this prints how much one DataLoader worker produces, so the number of workers a
GPU needs is that rate divided by the per-worker figure here (plus a margin).

Two parts:
  * stages, in this process on one thread (what a worker runs), cumulative: tar reading,
    + FLAC decoding, + fbank, + the training featurizer (SpecAugment, targets) and batching;
  * the real training loader (make_loader) with 1 and 2 workers, wall clock.
Figures are seconds of audio per second ("x real time") and utterances per second.

    .venv/bin/python bench/data_throughput.py --shards recipes/mini/data/train/shards \\
        --tokenizer recipes/mini/data/lang
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astctc.audio import load_audio  # noqa: E402
from astctc.data.pipeline import DataConfig, Featurizer, collate, make_loader  # noqa: E402
from astctc.data.shards import BatchedShardDataset, ShardDataset  # noqa: E402
from astctc.features import FeatureConfig, SpecAugmentConfig, fbank  # noqa: E402
from astctc.tokenizer import load_tokenizer  # noqa: E402


def _stage(name: str, items, limit: int, seconds_of, count=lambda it: 1) -> dict:
    """Consume items until `limit` utterances, timing with wall and process CPU clocks."""
    n, secs = 0, 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for it in items:
        n += count(it)
        secs += seconds_of(it)
        if n >= limit:
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "stage": name,
        "utts": n,
        "audio_s": round(secs, 1),
        "wall_s": round(wall, 2),
        "x_realtime_cpu": round(secs / max(cpu, 1e-9)),
        "x_realtime_wall": round(secs / max(wall, 1e-9)),
        "utts_per_s_cpu": round(n / max(cpu, 1e-9)),
    }


def stages(args, tokenizer) -> list[dict]:
    feats_cfg = FeatureConfig()
    rows = []

    def raw():  # tar members grouped into samples, no decoding
        ds = ShardDataset(args.shards, shuffle=False, rank=0, world_size=1)
        for shard in ds.shards:
            yield from ds._read(shard)

    def meta_seconds(r):
        return json.loads(r["json"])["duration"]

    rows.append(_stage("read tar", raw(), args.limit, meta_seconds))
    rows.append(
        _stage("+ FLAC decode", (load_audio(r["flac"]) for r in raw()), args.limit, lambda w: w.numel() / 16000)
    )
    rows.append(
        _stage(
            "+ fbank", (fbank(load_audio(r["flac"]), feats_cfg) for r in raw()), args.limit, lambda f: f.shape[0] / 100
        )
    )
    feat = Featurizer(feats_cfg, tokenizer, SpecAugmentConfig(), seed=0, max_duration=None)
    src = ShardDataset(args.shards, shuffle=True, rank=0, world_size=1, transform=feat)
    batched = BatchedShardDataset(src, collate, args.budget, num_buckets=0, bucket_buffer=args.buffer)
    # batching holds `buffer` utterances before the first batch: this stage reads the whole set
    rows.append(
        _stage(
            "+ SpecAugment, targets, batching (training)",
            batched,
            10**9,
            lambda b: b["seconds"],
            lambda b: len(b["ids"]),
        )
    )
    return rows


def loaders(args, tokenizer) -> list[dict]:
    rows = []
    for workers in args.workers:
        cfg = DataConfig(
            train=args.shards, max_batch_seconds=args.budget, num_workers=workers, bucket_buffer=args.buffer
        )
        feat = Featurizer(
            FeatureConfig(), tokenizer, cfg.spec_augment, seed=0, max_duration=cfg.max_duration, perturb=cfg.augment
        )
        loader = make_loader(args.shards, feat, cfg, train=True, seed=0, epoch=0)
        n, secs = 0, 0.0
        t0 = time.perf_counter()
        for b in loader:
            if b is None:
                continue
            n += len(b["ids"])
            secs += b["seconds"]
        wall = time.perf_counter() - t0  # includes starting the workers
        rows.append(
            {
                "workers": workers,
                "utts": n,
                "audio_s": round(secs, 1),
                "wall_s": round(wall, 2),
                "x_realtime": round(secs / wall),
                "x_realtime_per_worker": round(secs / wall / max(workers, 1)),
                "utts_per_s": round(n / wall),
            }
        )
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", default="recipes/mini/data/train/shards")
    p.add_argument("--tokenizer", default="recipes/mini/data/lang")
    p.add_argument("--limit", type=int, default=1000, help="utterances per stage")
    p.add_argument("--budget", type=float, default=60.0, help="max_batch_seconds")
    p.add_argument("--buffer", type=int, default=2000, help="bucket_buffer")
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="DataLoader workers to try")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # as in a DataLoader worker
    tokenizer = load_tokenizer(args.tokenizer)
    res = {"stages": stages(args, tokenizer), "loaders": loaders(args, tokenizer) if args.workers else []}
    for row in res["stages"]:
        print(
            f"{row['stage']:<45} {row['x_realtime_cpu']:>6}x real time per CPU second  "
            f"({row['utts_per_s_cpu']} utt/s; {row['utts']} utts, {row['audio_s']} s)"
        )
    for row in res["loaders"]:
        print(
            f"make_loader, {row['workers']} worker(s): {row['x_realtime']}x real time, "
            f"{row['x_realtime_per_worker']}x per worker, {row['utts_per_s']} utt/s (wall clock, "
            f"{row['utts']} utts in {row['wall_s']} s)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
