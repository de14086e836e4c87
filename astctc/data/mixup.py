"""Mixup (Zhang et al. 2018) for the classification heads, as AST trains with it.

A training item x_i is replaced, with probability `prob`, by lam * x_i + (1 - lam) * x_j for
another item j of the same batch, lam ~ Beta(alpha, alpha), and each classifier target by the
same mixture of the two targets. `level: waveform` mixes the audio and recomputes the fbank
(AST's way); `level: fbank` mixes the normalised log-mel matrices (cheaper, no second fbank).

CTC: a transcript cannot be mixed (there is no "0.6 of 'yes' and 0.4 of 'no'" token sequence),
so by default only items *without* a transcript take part, as the mixed item or as its partner:
a joint batch mixes its classification-only items and leaves its transcribed ones untouched.
`with_text: true` lets transcribed items take part too; a mixed item then drops its transcript
(CTC skips it, its classifier targets are mixed), so the CTC head trains on the unmixed rest.

Randomness comes from (seed, epoch, the batch's ids), so a batch stays a pure function of the
data position and a resumed run mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import torch


@dataclass
class MixupConfig:
    prob: float = 0.0  # probability that an eligible training item is mixed (AST: 0.5); 0 = off
    alpha: float = 10.0  # lam ~ Beta(alpha, alpha); AST uses 10 (lam near 0.5)
    level: str = "fbank"  # fbank | waveform
    with_text: bool = False  # transcribed items take part too (a mixed one loses its transcript)


def mix_targets(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]:
    """lam * a + (1 - lam) * b for every head both have a target for; a head only one of the two
    has is dropped (its mixed target is unknown)."""
    return {h: lam * a[h] + (1 - lam) * b[h] for h in a if h in b}


def _fit(x: torch.Tensor, n: int) -> torch.Tensor:
    """Cut or zero-pad the first axis of x to n (zero: silence, or the normalised mean)."""
    if x.shape[0] >= n:
        return x[:n]
    return torch.cat([x, x.new_zeros((n - x.shape[0],) + tuple(x.shape[1:]))])


def _has_text(item: dict) -> bool:
    """Whether the item has a CTC target (a transcript the model is trained on)."""
    return len(item.get("targets", ())) > 0


class Mixup:
    """Batch transform over Featurizer items (before collation). Needs the featurizer for its
    seed and epoch, and, at waveform level, to recompute features of the mixed audio."""

    def __init__(self, cfg: MixupConfig, featurizer):
        if cfg.level not in ("fbank", "waveform"):
            raise ValueError(f"mixup.level must be fbank or waveform, not {cfg.level!r}")
        if not 0 <= cfg.prob <= 1 or cfg.alpha <= 0:
            raise ValueError("mixup needs 0 <= prob <= 1 and alpha > 0")
        self.cfg, self.featurizer = cfg, featurizer
        if cfg.level == "waveform":
            featurizer.keep_wav = True

    def __call__(self, items: list[dict]) -> list[dict]:
        f = self.featurizer
        pool = [i for i, it in enumerate(items) if self._eligible(it)]
        if self.cfg.prob <= 0 or len(pool) < 2:
            return [self._strip(it) for it in items]
        rng = random.Random(f"mixup:{f.seed}:{f.epoch}:" + "|".join(it["id"] for it in items))
        originals = list(items)
        out = list(items)
        for i in pool:
            if rng.random() >= self.cfg.prob:
                continue
            j = rng.choice([k for k in pool if k != i])
            lam = rng.betavariate(self.cfg.alpha, self.cfg.alpha)
            out[i] = self._mix(originals[i], originals[j], lam)
        return [self._strip(it) for it in out]

    def _eligible(self, item: dict) -> bool:
        """Whether the item may be mixed: it has a label, and no transcript unless with_text."""
        return bool(item.get("labels")) and (self.cfg.with_text or not _has_text(item))

    def _mix(self, a: dict, b: dict, lam: float) -> dict:
        item = dict(a, labels=mix_targets(a["labels"], b["labels"], lam), mixed=(b["id"], lam))
        if "targets" in a:  # a transcript cannot be mixed: CTC skips this item
            item["targets"] = a["targets"][:0]
        if self.cfg.level == "waveform":
            wav = lam * a["wav"] + (1 - lam) * _fit(b["wav"], a["wav"].shape[0])
            key = f"{self.featurizer.seed}/{self.featurizer.epoch}/{a['id']}/mix"
            g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
            item["feats"] = self.featurizer.features_of(wav, g)
        else:
            item["feats"] = lam * a["feats"] + (1 - lam) * _fit(b["feats"], a["feats"].shape[0])
        return item

    @staticmethod
    def _strip(item: dict) -> dict:
        if "wav" in item:
            item = dict(item)
            del item["wav"]
        return item
