"""Audio clips to class labels with a model's classification heads, and their scores on a set.

    >>> from astctc.classify import Classifier
    >>> clf = Classifier("exp/fsdd/model", head="digit")
    >>> clf(["a.wav", "b.wav"], top_k=3)
    [[('seven', 0.98), ('one', 0.01), ('nine', 0.004)], [...]]

Clips longer than the position table are cut into windows whose probabilities are averaged.
Scores: accuracy, macro-F1 and a confusion matrix for single-label heads, mAP for multi-label.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data.pipeline import DataConfig, Featurizer, make_loader
from .data.shards import IncompleteSetError, loss_report
from .inference import WindowedModel
from .metrics import accuracy, average_precision, confusion_matrix, macro_f1, mean_average_precision
from .models.model import load_model

log = logging.getLogger(__name__)


class Classifier(WindowedModel):
    """Class probabilities for audio files or waveforms from one head of a model directory."""

    def __init__(
        self, model_dir: str | Path, head: str | None = None, device: str = "auto", batch_seconds: float = 120.0
    ):
        super().__init__(model_dir, device, batch_seconds)
        names = list(self.model.classifiers)
        if not names:
            raise ValueError(f"{model_dir}: model has no classification head")
        if head is None:
            if len(names) > 1:
                raise ValueError(f"{model_dir}: model has heads {', '.join(names)}; choose one (--head)")
            head = names[0]
        if head not in names:
            raise ValueError(f"{model_dir}: no head {head!r} (it has {', '.join(names)})")
        self.head = head
        cfg = self.model.classifiers[head].cfg
        self.classes = list(cfg.classes) if cfg.classes else [str(i) for i in range(cfg.num_classes)]
        self.multi_label = cfg.multi_label

    @torch.no_grad()
    def probabilities(self, audio: Sequence) -> torch.Tensor:
        """(N, C) probabilities (softmax, or sigmoid for multi-label); windows averaged."""
        windows = self.windows(audio)
        probs = torch.zeros(len(windows), len(self.classes))
        head = self.model.classifiers[self.head]
        for idx, r in self.run(windows):
            probs[idx] = head.probabilities(r[self.head]).float().cpu()
        owner = torch.tensor([w.source for w in windows])
        out = torch.zeros(len(audio), len(self.classes))
        out.index_add_(0, owner, probs)
        return out / torch.bincount(owner, minlength=len(audio)).clamp(min=1)[:, None]

    def __call__(self, audio, top_k: int = 5):
        """[(class, probability)] best first, top_k of them, per clip (one list for one clip)."""
        single = not isinstance(audio, (list, tuple))
        probs = self.probabilities([audio] if single else list(audio))
        k = min(top_k, len(self.classes))
        top = probs.topk(k, dim=1)
        result = [[(self.classes[c], float(p)) for p, c in zip(ps, cs)] for ps, cs in zip(top.values, top.indices)]
        return result[0] if single else result


def classify(
    files: Sequence, model_dir: str | Path, head: str | None = None, top_k: int = 5, device: str = "auto"
) -> list[list[tuple[str, float]]]:
    """One-call API: the top_k classes of each file."""
    return Classifier(model_dir, head, device)(list(files), top_k=top_k)


# ---- evaluation on a shard set --------------------------------------------------------------


def _confusion_text(m: np.ndarray, classes: list[str]) -> str:
    w = max(5, max(len(c) for c in classes) + 1)
    cw = max(5, len(str(m.max())) + 1)
    head = " " * w + "".join(f"{i:>{cw}}" for i in range(len(classes)))
    lines = ["confusion matrix (rows: reference, columns: hypothesis, numbered as the rows)", head]
    for i, c in enumerate(classes):
        lines.append(f"{c:<{w - 4}}{i:>3} " + "".join(f"{v:>{cw}}" for v in m[i]))
    return "\n".join(lines)


def evaluate_set(
    model_dir: str | Path,
    shards: str,
    out_dir: str | Path,
    head: str | None = None,
    device: str = "auto",
    batch_seconds: float = 200.0,
    allow_missing: bool = False,
) -> dict:
    """Score the classification heads of a model on the labelled samples of a shard set.
    Clips lost on the way (unreadable, too long, missing from their shards) are an error after
    the reports are written, unless `allow_missing`.

    Writes to out_dir: scores.json (every head), and per head <head>.txt (summary, per-class
    figures, confusion matrix for single-label heads), <head>_confusion.png and
    <head>_per_utt.tsv (id, reference, hypothesis, its probability; errors first)."""
    from .plots import plot_confusion  # lazy: matplotlib is slow to import

    loaded = load_model(model_dir, device)
    model, dev = loaded.model, loaded.device
    heads = {h: m.cfg for h, m in model.classifiers.items() if head is None or h == head}
    if not heads:
        raise ValueError(f"{model_dir}: " + (f"no head {head!r}" if head else "model has no classification head"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loader = make_loader(
        shards,
        Featurizer(loaded.features, None, heads=heads, max_frames=model.cfg.encoder.max_frames),
        DataConfig(max_batch_seconds=batch_seconds, num_workers=0),
        train=False,
    )
    ids = {h: [] for h in heads}
    targets, probs = {h: [] for h in heads}, {h: [] for h in heads}
    dropped, seen = [], 0
    with torch.no_grad():
        for batch in loader:
            dropped += batch.get("dropped", [])
            if "feats" not in batch:
                continue
            seen += len(batch["ids"])
            r = model(batch["feats"].to(dev), batch["lengths"])
            for h, mask in batch.get("label_mask", {}).items():
                p = model.classifiers[h].probabilities(r[h]).float().cpu()
                ids[h] += [i for i, m in zip(batch["ids"], mask.tolist()) if m]
                targets[h].append(batch["labels"][h][mask])
                probs[h].append(p[mask])
    lost = loss_report(seen, dropped, loader.dataset.source.num_samples)
    unlabelled = [h for h in heads if not ids[h]]
    if len(unlabelled) == len(heads):
        raise ValueError(f"{shards}: no sample has a label for head {' or '.join(unlabelled)}")
    for h in unlabelled:  # e.g. a speaker head, whose classes the test speakers are not
        log.warning("%s: no sample has a label for head %s; it is not scored", shards, h)
        del heads[h]
    scores = {}
    for h, cfg in heads.items():
        classes = list(cfg.classes) if cfg.classes else [str(i) for i in range(cfg.num_classes)]
        y, p = torch.cat(targets[h]).numpy(), torch.cat(probs[h]).numpy()
        if cfg.multi_label:
            present = [c for c in range(len(classes)) if (y[:, c] > 0.5).any()]
            aps = {classes[c]: average_precision(y[:, c] > 0.5, p[:, c]) for c in present}
            s = {
                "head": h,
                "type": "multi-label",
                "count": len(ids[h]),
                "mAP": 100 * mean_average_precision(y, p),
                "classes_scored": len(present),
            }
            lines = [
                f"{h}: mAP {s['mAP']:.2f}% over {len(present)} classes, {len(ids[h])} clips",
                "",
                "per-class AP (%):",
            ]
            lines += [f"  {c:<30} {100 * a:6.2f}" for c, a in sorted(aps.items(), key=lambda x: x[1])]
            rows = [
                (
                    i,
                    ",".join(classes[c] for c in np.flatnonzero(y[n] > 0.5)),
                    ",".join(classes[c] for c in np.flatnonzero(p[n] > 0.5)),
                    float(p[n].max()),
                )
                for n, i in enumerate(ids[h])
            ]
        else:
            ref, hyp = y.argmax(1), p.argmax(1)
            m = confusion_matrix(ref, hyp, len(classes))
            s = {
                "head": h,
                "type": "single-label",
                "count": len(ids[h]),
                "accuracy": 100 * accuracy(ref, hyp),
                "macro_f1": 100 * macro_f1(ref, hyp, len(classes)),
                "errors": int((ref != hyp).sum()),
            }
            recall = np.divide(np.diag(m), m.sum(1), out=np.zeros(len(classes)), where=m.sum(1) > 0)
            lines = [
                f"{h}: accuracy {s['accuracy']:.2f}% ({s['errors']} errors in {s['count']} clips), "
                f"macro-F1 {s['macro_f1']:.2f}%",
                "",
                "per-class recall (%):",
            ]
            lines += [
                f"  {c:<30} {100 * r:6.2f}  ({m[i].sum()} clips)" for i, (c, r) in enumerate(zip(classes, recall))
            ]
            lines += ["", _confusion_text(m, classes)]
            plot_confusion(m, classes, f"{h}: accuracy {s['accuracy']:.2f}%", out / f"{h}_confusion.png")
            rows = [(i, classes[a], classes[b], float(p[n, b])) for n, (i, a, b) in enumerate(zip(ids[h], ref, hyp))]
        rows.sort(key=lambda r: (r[1] == r[2], r[0]))
        (out / f"{h}.txt").write_text("\n".join(lines) + "\n")
        (out / f"{h}_per_utt.tsv").write_text(
            "id\treference\thypothesis\tprobability\n" + "".join(f"{a}\t{b}\t{c}\t{d:.4f}\n" for a, b, c, d in rows)
        )
        scores[h] = s
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    if lost is not None:
        with open(out / "dropped.tsv", "w", encoding="utf-8") as f:
            f.writelines(f"{u}\t{kind}\t{detail}\n" for u, kind, detail in dropped)
        where = f"{shards}: {lost}; the scores in {out} cover what was read, losses listed in {out / 'dropped.tsv'}"
        if not allow_missing:
            raise IncompleteSetError(f"{where}; --allow-missing accepts a partial set")
        log.warning("%s (--allow-missing)", where)
    return scores


def summary(scores: dict) -> str:
    """One line per head, as `astctc evaluate` prints it."""
    lines = []
    for h, s in scores.items():
        if s["type"] == "multi-label":
            lines.append(f"{h}: mAP {s['mAP']:.2f}% ({s['count']} clips)")
        else:
            lines.append(
                f"{h}: accuracy {s['accuracy']:.2f}% macro-F1 {s['macro_f1']:.2f}% "
                f"({s['errors']} errors / {s['count']} clips)"
            )
    return "\n".join(lines)
