"""Decode a whole shard set and score it: the acoustic model runs once over the set, then
the log-probabilities are searched (greedy, or beam with an optional LM and alpha/beta
tuning), then the report, plots and speed figures are written."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.pipeline import DataConfig, Featurizer, batch_features, has_audio, make_loader
from ..data.shards import IncompleteSetError, loss_report
from ..data.sources import is_url, resolve_shard_counts
from ..device import autocast, precision_line
from ..features import FeatureConfig
from ..metrics import Report, score, write_report
from ..models.model import ASTModel, load_model
from ..tokenizer import Tokenizer
from .beam import BeamConfig, BeamSearch
from .greedy import greedy_decode
from .tune import ALPHA_GRID, BETA_GRID, record_tuning, tune

log = logging.getLogger(__name__)


@dataclass
class DecodeOptions:
    device: str = "auto"
    batch_seconds: float = 200.0  # seconds of audio per forward batch
    plots: int = 2  # utterances whose spectrogram and CTC posteriors are drawn
    method: str = "greedy"  # greedy (best path) | beam
    lm: str | None = None  # KenLM n-gram for beam search
    beam: BeamConfig = field(default_factory=BeamConfig)
    tune_weights: bool = False  # grid-search alpha x beta on this set, record the best beside the LM
    alpha_grid: Sequence[float] = ALPHA_GRID
    beta_grid: Sequence[float] = BETA_GRID
    num_workers: int | None = None  # beam search processes; None: one per core
    # processes reading (and featurising) the shards; None: 0 on a CPU, on CUDA cores - 1 (at most
    # 16) and at most one per shard, so that each reads whole shards (with fewer shards than
    # workers every worker reads every shard and keeps its share)
    loader_workers: int | None = None
    # where fbank runs: auto (on the device when it is a GPU, else in the loader) | device (a batch
    # at a time in this process: the workers only read and decode audio) | loader (per utterance)
    features_on: str = "auto"
    attention_backend: str = "auto"  # packed attention's kernel here (models/attention.py), not the model's
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on any CPU | bf16 | fp32
    # a set not decoded whole (unreadable, too long, missing from its shards) is an error after
    # everything is written, unless allowed: scores over a silent subset are not the set's
    allow_missing: bool = False


@dataclass
class Forward:
    """What one pass of the acoustic model over a set leaves."""

    refs: dict[str, str] = field(default_factory=dict)  # in decoding order
    greedy: dict[str, str] = field(default_factory=dict)  # best paths (greedy method only)
    log_probs: list[np.ndarray] = field(default_factory=list)  # per utterance (beam method only)
    drawn: list[tuple[str, Tensor, Tensor]] = field(default_factory=list)  # id, fbank, log-probs to plot
    audio_seconds: float = 0.0
    dropped: list[tuple[str, str, str]] = field(default_factory=list)  # (id, kind, detail) left out
    first_batch: float = 0.0  # seconds until the loader's first batch
    loader_wait: float = 0.0  # seconds spent waiting for the loader, the first batch included


def decode_set(model_dir: str, shards: str, out_dir: str, opts: DecodeOptions | None = None) -> Report:
    """Decode a shard set with a model directory; write hyp/ref trn, wer.txt, per_utt.tsv.

    method "greedy" is best path; "beam" is beam search, with the n-gram `lm` when given.
    With `tune_weights`, alpha and beta are grid-searched on this set first (the acoustic
    model runs once) and the best pair is recorded beside the LM for later decodes.
    Also draws the spectrogram and CTC posteriors of the first `plots` utterances, and records
    the decoding speed (seconds of audio per second) in speed.json.
    """
    opts = opts or DecodeOptions()
    if opts.method not in ("greedy", "beam"):
        raise ValueError(f"decoding method must be greedy or beam, not {opts.method!r}")
    if opts.tune_weights and (opts.method != "beam" or opts.lm is None):
        raise ValueError("--tune needs --method beam and an --lm to tune for")
    loaded = load_model(model_dir, opts.device)
    if loaded.tokenizer is None:
        raise ValueError(f"{model_dir}: model has no CTC head")
    search = None
    if opts.method == "beam":  # before the forward pass: a bad LM should fail in seconds, not minutes
        search = BeamSearch(
            loaded.tokenizer, opts.lm, opts.beam, loaded.frame_seconds, opts.num_workers or os.cpu_count() or 1
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    on_device = features_on_device(opts.features_on, loaded.device)
    workers = loader_workers(opts.loader_workers, loaded.device, shards)
    loaded.model.cfg.encoder.attention_backend = opts.attention_backend  # how this process runs it
    # utterances longer than the position table are left out, listed and counted, not fatal
    max_frames = loaded.model.cfg.encoder.max_frames
    loader = make_loader(
        shards,
        Featurizer(loaded.features, None, max_frames=max_frames, device_features=on_device),
        DataConfig(max_batch_seconds=opts.batch_seconds, num_workers=workers),
        train=False,
        pin_memory=loaded.device.type == "cuda",
    )
    log.info(precision_line(loaded.device, opts.precision))
    log.info(
        "features: %s; %d loader worker(s)",
        f"fbank_batch on {loaded.device} in this process, the loader only decodes audio"
        if on_device
        else "fbank per utterance in the loader",
        workers,
    )
    t0 = time.time()
    with autocast(loaded.device, opts.precision):
        fwd = forward(
            loaded.model,
            loaded.tokenizer,
            loader,
            loaded.device,
            keep_log_probs=search is not None,
            plots=opts.plots,
            features=loaded.features,
        )
    if fwd.dropped:
        with open(out / "dropped.tsv", "w", encoding="utf-8") as f:
            f.writelines(f"{u}\t{kind}\t{detail}\n" for u, kind, detail in fwd.dropped)
        log.warning(
            "%s: %d utterance(s) left out of decoding (%s), listed in %s",
            shards,
            len(fwd.dropped),
            ", ".join(f"{u} ({kind}: {detail})" for u, kind, detail in fwd.dropped[:3]),
            out / "dropped.tsv",
        )
    if not fwd.refs:
        raise ValueError(f"{shards}: no utterances to decode")
    speed = {
        "audio_seconds": fwd.audio_seconds,
        "acoustic_seconds": time.time() - t0,
        "device": str(loaded.device),
        "dropped": len(fwd.dropped),
        "first_batch_seconds": fwd.first_batch,
        "loader_wait_seconds": fwd.loader_wait,
        "loader_workers": workers,
        "features_on": "device" if on_device else "loader",
    }
    hyps = fwd.greedy
    if search is not None:
        hyps = beam_search(search, fwd, opts, model_dir, shards, speed)
        (out / "beam.json").write_text(
            json.dumps(
                {
                    "lm": str(search.lm_files.model) if search.lm_files else None,
                    **asdict(search.cfg),
                    "alpha": search.alpha,
                    "beta": search.beta,
                },
                indent=2,
            )
        )
    elapsed = time.time() - t0 - speed.get("tune_seconds", 0.0)
    speed.update(wall_seconds=elapsed, x_real_time=fwd.audio_seconds / max(elapsed, 1e-9), method=opts.method)
    result = report(fwd, hyps, loaded.tokenizer, speed, out)
    lost = loss_report(len(fwd.refs), fwd.dropped, loader.dataset.source.num_samples)
    if lost is not None:
        where = f"{shards}: {lost}; scores in {out} cover what was decoded, losses listed in {out / 'dropped.tsv'}"
        if not opts.allow_missing:
            raise IncompleteSetError(f"{where}; --allow-missing accepts a partial set")
        log.warning("%s (--allow-missing)", where)
    return result


def features_on_device(where: str, device: torch.device) -> bool:
    """Whether fbank runs on the device (a batch at a time) rather than in the loader: `where` is
    auto (on a GPU: there, fbank is ~2/3 of a loader worker's time), device or loader."""
    if where not in ("auto", "device", "loader"):
        raise ValueError(f"features_on must be auto, device or loader, not {where!r}")
    return where == "device" or (where == "auto" and device.type == "cuda")


def loader_workers(asked: int | None, device: torch.device, shards: str) -> int:
    """Loader processes: as asked, else none on a CPU, and on CUDA one per core but one (at most
    16; a GPU decodes thousands of times real time) and at most one per shard (said in the log)."""
    if asked is not None:
        return asked
    if device.type == "cpu":
        return 0
    workers = min(16, max(1, (os.cpu_count() or 1) - 1))
    count = len(resolve_shard_counts(shards)[0])
    if count < workers:
        log.info("%d loader workers for %d shards (one per shard: each reads whole shards)", count, count)
    return max(1, min(workers, count))


@torch.no_grad()
def forward(
    model: ASTModel,
    tokenizer: Tokenizer,
    loader,
    device: torch.device,
    keep_log_probs: bool,
    plots: int,
    features: FeatureConfig | None = None,
) -> Forward:
    """Run the model over every batch: greedy paths on the device, or the log-probabilities
    kept on the CPU for a beam search; and the first `plots` utterances for drawing. Batches of
    waveforms (a loader that only decodes audio) are featurised on the device (`features`)."""
    fwd = Forward()
    t0 = time.perf_counter()
    batches = iter(loader)  # the loader's workers start reading now
    if device.type == "cuda":
        warm_up(model, device)  # meanwhile: libraries and kernels load on the first forward
    while True:
        t = time.perf_counter()
        batch = next(batches, None)
        fwd.loader_wait += time.perf_counter() - t
        if batch is None:
            break
        fwd.first_batch = fwd.first_batch or time.perf_counter() - t0
        fwd.dropped += batch.get("dropped", [])
        if not has_audio(batch):
            continue
        feats = batch_features(batch, features or FeatureConfig(), device)
        r = model(feats, batch["lengths"])
        if keep_log_probs:
            fwd.log_probs += [r["log_probs"][b, : int(n)].float().cpu().numpy() for b, n in enumerate(r["lengths"])]
        else:
            fwd.greedy.update(zip(batch["ids"], greedy_decode(r["log_probs"], r["lengths"], tokenizer)))
        fwd.refs.update(zip(batch["ids"], batch["texts"]))
        fwd.audio_seconds += batch["seconds"]
        for b in range(len(batch["ids"])):
            if len(fwd.drawn) >= plots:
                break
            n, T = int(r["lengths"][b]), int(batch["lengths"][b])
            fwd.drawn.append((batch["ids"][b], feats[b, :T].float().cpu(), r["log_probs"][b, :n].cpu()))
    return fwd


def warm_up(model: ASTModel, device: torch.device) -> None:
    """One forward of a dummy batch (a padded and a shorter utterance): on a GPU the first
    forward loads cuBLAS, cuDNN and each kernel, a second or so that decoding an hour at
    thousands of times real time would otherwise wait for."""
    enc = model.cfg.encoder
    frames = min(enc.max_frames, 1600)
    model(torch.zeros(2, frames, enc.num_mel_bins, device=device), torch.tensor([frames, frames // 2]))
    torch.cuda.synchronize(device)


def beam_search(
    search: BeamSearch, fwd: Forward, opts: DecodeOptions, model_dir: str, shards: str, speed: dict
) -> dict[str, str]:
    """Beam-search the set (tuning alpha and beta on it first when asked); adds its times to `speed`."""
    model = model_dir if model_dir.startswith("hf://") else str(Path(model_dir).resolve())  # hf:// is no path
    with search:
        if opts.tune_weights:
            t1 = time.time()
            result = tune(search, fwd.log_probs, fwd.refs, opts.alpha_grid, opts.beta_grid)
            search.alpha, search.beta = result.alpha, result.beta
            path = record_tuning(
                result,
                search.lm_files.tuned,
                model=model,
                data=shards if is_url(shards) else str(Path(shards).resolve()),  # a URL is not a path
                beam=asdict(search.cfg),
            )
            log.info(
                "tuned on %s: alpha=%g beta=%g WER %.2f -> %s", shards, result.alpha, result.beta, result.wer, path
            )
            speed["tune_seconds"] = time.time() - t1
        elif search.tuned and search.tuned.get("model") != model:
            log.warning(
                "%s was tuned for model %s, not %s; rerun with --tune for this model",
                search.lm_files.tuned,
                search.tuned.get("model"),
                model_dir,
            )
        t1 = time.time()
        found = search.decode(fwd.log_probs)
        speed["search_seconds"] = time.time() - t1
    return {k: h.text for k, h in zip(fwd.refs, found)}


def report(fwd: Forward, hyps: dict[str, str], tokenizer: Tokenizer, speed: dict, out: Path) -> Report:
    """Plots of the drawn utterances, the scores (wer.txt, per_utt.tsv, trn files) and speed.json."""
    from ..plots import plot_posteriors  # lazy: matplotlib is slow to import

    for k, (uid, feats, lp) in enumerate(fwd.drawn):
        plot_posteriors(feats, lp, tokenizer.labels(), f"{uid}: {hyps.get(uid, '')}", out / f"posteriors_{k}.png")
    result = score(fwd.refs, hyps)
    write_report(result, out)
    (out / "speed.json").write_text(json.dumps(speed, indent=2))
    return result
