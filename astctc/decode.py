"""CTC decoding: batched greedy search (beam search with a KenLM lives beside it)."""
from __future__ import annotations

import torch
from torch import Tensor

from .tokenizer import Tokenizer


def greedy_ids(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """Best path per utterance: argmax per frame, merge repeats, drop blanks. Batched on device."""
    best = log_probs.argmax(dim=-1)  # (B, T)
    B, T = best.shape
    keep = best != blank
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    keep &= torch.arange(T, device=best.device)[None, :] < lengths[:, None].to(best.device)
    best, keep = best.cpu(), keep.cpu()
    return [best[b][keep[b]].tolist() for b in range(B)]


def greedy_decode(log_probs: Tensor, lengths: Tensor, tokenizer: Tokenizer) -> list[str]:
    return [tokenizer.decode(ids) for ids in greedy_ids(log_probs, lengths, tokenizer.blank)]


def decode_set(
    model_dir: str,
    shards: str,
    out_dir: str,
    device: str = "auto",
    batch_seconds: float = 200.0,
    plots: int = 2,
):
    """Greedy-decode a shard set with a model directory; write hyp/ref trn, wer.txt, per_utt.tsv.

    Also draws the spectrogram and CTC posteriors of the first `plots` utterances, and records
    the decoding speed (seconds of audio per second) in speed.json.
    """
    import json
    import time
    from pathlib import Path

    from .data.pipeline import DataConfig, Featurizer, make_loader
    from .metrics import score, write_report
    from .models.model import load_model
    from .plots import plot_posteriors
    from .train import resolve_device

    dev = resolve_device(device)
    loaded = load_model(model_dir, dev)
    model, tok = loaded.model, loaded.tokenizer
    if tok is None:
        raise ValueError(f"{model_dir}: model has no CTC head")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = DataConfig(max_batch_seconds=batch_seconds, num_workers=0)
    loader = make_loader(shards, Featurizer(loaded.features, None), cfg, train=False)
    refs, hyps, audio_s, drawn = {}, {}, 0.0, 0
    t0 = time.time()
    with torch.no_grad():
        for batch in loader:
            if batch is None:
                continue
            r = model(batch["feats"].to(dev), batch["lengths"].to(dev))
            texts = greedy_decode(r["log_probs"], r["lengths"], tok)
            hyps.update(zip(batch["ids"], texts))
            refs.update(zip(batch["ids"], batch["texts"]))
            audio_s += batch["seconds"]
            for b in range(len(texts)):
                if drawn >= plots:
                    break
                n, T = int(r["lengths"][b]), int(batch["lengths"][b])
                plot_posteriors(batch["feats"][b, :T], r["log_probs"][b, :n], tok.labels(),
                                f"{batch['ids'][b]}: {texts[b]}", out / f"posteriors_{drawn}.png")
                drawn += 1
    elapsed = time.time() - t0
    if not refs:
        raise ValueError(f"{shards}: no utterances to decode")
    report = score(refs, hyps)
    write_report(report, out)
    (out / "speed.json").write_text(json.dumps(
        {"audio_seconds": audio_s, "wall_seconds": elapsed, "x_real_time": audio_s / max(elapsed, 1e-9),
         "device": str(dev)}, indent=2))
    return report
