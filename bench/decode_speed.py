"""Decoding speed: greedy and beam search + KenLM, ours against Hugging Face's.

Runs the acoustic model once over a shard set, then decodes the same log-probabilities with
  - greedy search (astctc.decode.greedy_decode),
  - our beam search (astctc.decode.BeamSearch: one process pool for the whole run),
  - transformers' Wav2Vec2ProcessorWithLM.batch_decode (pyctcdecode underneath; a new pool
    every call unless one is passed in), with the same LM, labels, beam width, alpha and beta,
on 1 core and on all cores, feeding each `--batch` utterances per call as a decoder does
behind the model. Prints seconds of audio decoded per second of wall clock, and WER/CER.

    .venv/bin/python bench/decode_speed.py --model recipes/mini/exp/mini/model \\
        --data recipes/mini/data/test/shards --lm recipes/mini/data/lm/4gram.bin

`--acoustic` measures the acoustic model instead: PyTorch against onnxruntime (the model exported
to a temporary model.onnx, astctc.export) on the same batches, 1 thread and all threads, with the
max |log-prob difference| between the two; `--clips` runs it on audio files (one utterance per
batch) instead of shards:

    .venv/bin/python bench/decode_speed.py --acoustic --model recipes/mini/exp/mini/model \\
        --data recipes/mini/data/test/shards
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from astctc.data.pipeline import DataConfig, Featurizer, make_loader
from astctc.decode import BeamConfig, BeamSearch, greedy_decode
from astctc.lm import load_unigrams
from astctc.metrics import score
from astctc.models.model import load_model


def forward(model_dir: str, shards: str):
    """Log-probabilities of every utterance (one forward pass), references, audio seconds."""
    loaded = load_model(model_dir)
    loader = make_loader(
        shards, Featurizer(loaded.features, None), DataConfig(max_batch_seconds=100, num_workers=0), train=False
    )
    lps, refs, audio = [], {}, 0.0
    t0 = time.time()
    with torch.no_grad():
        for batch in loader:
            r = loaded.model(batch["feats"], batch["lengths"])
            lps += [r["log_probs"][b, : int(n)].numpy().copy() for b, n in enumerate(r["lengths"])]
            refs.update(zip(batch["ids"], batch["texts"]))
            audio += batch["seconds"]
    return loaded, lps, refs, audio, time.time() - t0


def acoustic(a) -> None:
    """Acoustic model speed, PyTorch vs onnxruntime, on the same batches; prints a table."""
    from astctc.audio import load_audio
    from astctc.export import OnnxModel, batch_features, export_onnx, max_difference
    from astctc.features import fbank

    loaded = load_model(a.model)
    max_frames = loaded.model.cfg.encoder.max_frames
    if a.clips:
        feats = [fbank(load_audio(c), loaded.features)[:max_frames] for c in a.clips]
        inputs = [batch_features([f]) for f in feats]
        source = f"{len(a.clips)} clips ({a.clips[0]} ...), one per batch"
    else:
        loader = make_loader(
            a.data, Featurizer(loaded.features, None), DataConfig(max_batch_seconds=100, num_workers=0), train=False
        )
        inputs = [(b["feats"], b["lengths"]) for b in loader]
        source = f"{a.data}, batches of up to 100 s"
    audio = sum(int(n) for _, lengths in inputs for n in lengths) * loaded.features.frame_shift_ms / 1000
    tmp = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(a.model, tmp)
    sessions = {cores: OnnxModel(tmp, threads=cores) for cores in (1, a.cores)}
    diff = max(max_difference(loaded.model, sessions[1], x, n) for x, n in inputs)

    @torch.no_grad()
    def run_torch(cores):
        torch.set_num_threads(cores)
        for x, n in inputs:
            loaded.model(x, n)

    def run_onnx(cores):
        for x, n in inputs:
            sessions[cores](x, n)

    runs = [
        (name, fn, cores) for name, fn in (("PyTorch", run_torch), ("onnxruntime", run_onnx)) for cores in (1, a.cores)
    ]
    times = [float("inf")] * len(runs)
    for _ in range(a.repeats):  # interleaved, so a burst of load on the shared machine hits all alike
        for k, (_, fn, cores) in enumerate(runs):
            t0 = time.perf_counter()
            fn(cores)
            times[k] = min(times[k], time.perf_counter() - t0)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"model {a.model}  data {source}")
    print(
        f"{audio:.1f} s of audio in {len(inputs)} batches; fastest of {a.repeats} interleaved runs; "
        f"torch {torch.__version__}; load average {load}"
    )
    print(f"max |log-prob difference| onnxruntime - PyTorch (valid frames): {diff:.2e}")
    print(f"{'runtime':14s} {'threads':>7s} {'audio s / s':>12s}")
    for k, (name, _, cores) in enumerate(runs):
        print(f"{name:14s} {cores:7d} {audio / times[k]:12.1f}")
    if a.json:
        rows = [{"runtime": n, "threads": c, "x_real_time": audio / times[k]} for k, (n, _, c) in enumerate(runs)]
        Path(a.json).write_text(json.dumps({"max_abs_diff": diff, "rows": rows}, indent=2))


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def padded(lps: list[np.ndarray], pad: float) -> np.ndarray:
    x = np.full((len(lps), max(lp.shape[0] for lp in lps), lps[0].shape[1]), pad, dtype=np.float32)
    for b, lp in enumerate(lps):
        x[b, : lp.shape[0]] = lp
    return x


def hf_processor(labels: list[str], lm_model: str, unigrams: list[str], alpha: float, beta: float, unk_offset: float):
    """Wav2Vec2ProcessorWithLM over our labels, built offline: vocab.json written here, no hub."""
    from pyctcdecode import build_ctcdecoder
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ProcessorWithLM

    hf_labels = ["<pad>", "<unk>"] + ["|" if s == " " else s for s in labels[2:]]
    vocab = Path(tempfile.mkdtemp()) / "vocab.json"
    vocab.write_text(json.dumps({s: i for i, s in enumerate(hf_labels)}))
    tok = Wav2Vec2CTCTokenizer(
        str(vocab), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|", bos_token=None, eos_token=None
    )
    decoder = build_ctcdecoder(
        hf_labels, kenlm_model_path=lm_model, unigrams=unigrams, alpha=alpha, beta=beta, unk_score_offset=unk_offset
    )
    return Wav2Vec2ProcessorWithLM(feature_extractor=Wav2Vec2FeatureExtractor(), tokenizer=tok, decoder=decoder)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="recipes/mini/exp/mini/model")
    p.add_argument("--data", default="recipes/mini/data/test/shards")
    p.add_argument("--lm", default="recipes/mini/data/lm/4gram.bin")
    p.add_argument("--beam-width", type=int, default=64)
    p.add_argument("--batch", type=int, default=16, help="utterances per decode call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="'all cores'")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--acoustic", action="store_true", help="acoustic model speed: PyTorch vs onnxruntime")
    p.add_argument("--clips", nargs="*", default=None, help="with --acoustic: audio files instead of --data")
    a = p.parse_args(argv)
    if a.acoustic:
        logging.basicConfig(level=logging.WARNING)
        return acoustic(a)
    logging.basicConfig(level=logging.WARNING)
    for name in ("transformers", "pyctcdecode"):
        logging.getLogger(name).setLevel(logging.ERROR)

    torch.set_num_threads(a.cores)
    loaded, lps, refs, audio, t_fwd = forward(a.model, a.data)
    tok, ids = loaded.tokenizer, list(refs)
    search = BeamSearch(tok, a.lm, BeamConfig(beam_width=a.beam_width), loaded.frame_seconds)
    cfg, alpha, beta = search.cfg, search.alpha, search.beta
    chunks = batches(lps, a.batch)
    greedy_in = [(torch.from_numpy(padded(c, 0.0)), torch.tensor([lp.shape[0] for lp in c])) for c in chunks]
    hf_in = [padded(c, -100.0) for c in chunks]  # HF drops frames that are all -100
    proc = hf_processor(
        tok.labels(), str(search.lm_files.model), load_unigrams(search.lm_files), alpha, beta, cfg.unk_score_offset
    )
    kw = dict(
        beam_width=cfg.beam_width,
        beam_prune_logp=cfg.beam_prune_logp,
        token_min_logp=cfg.token_min_logp,
        alpha=alpha,
        beta=beta,
        unk_score_offset=cfg.unk_score_offset,
    )

    def greedy(cores):
        torch.set_num_threads(cores)
        try:
            return [s for x, n in greedy_in for s in greedy_decode(x, n, tok)]
        finally:
            torch.set_num_threads(1)

    def ours(cores):  # a BeamSearch (and its pool) per run: pool start-up is in the time
        with BeamSearch(tok, a.lm, cfg, loaded.frame_seconds, num_workers=cores) as s:
            return [h.text for c in chunks for h in s.decode(c)]

    def hf(cores):  # as documented: batch_decode makes a pool per call
        return [s for x in hf_in for s in proc.batch_decode(x, num_processes=cores, **kw).text]

    def hf_own_pool(cores):  # the caller keeps one pool, as HF's docstring suggests
        with multiprocessing.get_context("fork").Pool(cores) as pool:
            return [s for x in hf_in for s in proc.batch_decode(x, pool=pool, **kw).text]

    runs = [
        (name, fn, cores)
        for name, fn in (
            ("greedy", greedy),
            ("astctc BeamSearch", ours),
            ("HF batch_decode", hf),
            ("HF batch_decode, own pool", hf_own_pool),
        )
        for cores in (1, a.cores)
    ]
    times = {k: float("inf") for k in range(len(runs))}
    texts = {}
    torch.set_num_threads(1)
    for _ in range(a.repeats):  # interleaved, so a burst of load on the shared machine hits all alike
        for k, (name, fn, cores) in enumerate(runs):
            t0 = time.perf_counter()
            texts[k] = fn(cores)
            times[k] = min(times[k], time.perf_counter() - t0)
    rows = []
    for k, (name, fn, cores) in enumerate(runs):
        r = score(refs, dict(zip(ids, texts[k])))
        rows.append(
            {
                "decoder": name,
                "cores": cores,
                "seconds": times[k],
                "x_real_time": audio / times[k],
                "wer": r.wer,
                "cer": r.cer,
            }
        )

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"model {a.model}  LM {a.lm}  data {a.data}")
    print(
        f"{len(ids)} utterances, {audio:.1f} s of audio; acoustic model {audio / t_fwd:.0f} x real time "
        f"({a.cores} threads); beam width {cfg.beam_width}, alpha {alpha:g}, beta {beta:g}; "
        f"{a.batch} utterances per call; fastest of {a.repeats} interleaved runs; load average {load}"
    )
    print(f"{'decoder':28s} {'cores':>5s} {'audio s / s':>12s} {'WER %':>7s} {'CER %':>7s}")
    for r in rows:
        print(f"{r['decoder']:28s} {r['cores']:5d} {r['x_real_time']:12.0f} {r['wer']:7.2f} {r['cer']:7.2f}")
    beams = [k for k, (name, _, _) in enumerate(runs) if name != "greedy"]
    same = all(texts[k] == texts[beams[0]] for k in beams)
    print(f"beam decoders' transcripts identical: {'yes' if same else 'NO'}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
