"""Pictures a person would rather look at than read: training curves, and a spectrogram with
the CTC posteriors under it (where the model fires, and what)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training machines have no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(metrics_jsonl: str | Path, out_png: str | Path) -> Path:
    """Train loss, validation loss and WER/CER, learning rate; gradient norm, speed (x real time,
    MFU) and the share of time waiting for data, against the step, from metrics.jsonl."""
    rows = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train"]
    valid = [r for r in rows if r.get("split") == "valid"]
    fig, grid = plt.subplots(2, 3, figsize=(14, 7.2))
    axes = grid[0]
    ax = axes[0]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="train")
    if valid:
        ax.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="valid")
    ax.set(xlabel="step", ylabel="CTC loss / token", title="loss", yscale="log")
    ax.legend()
    ax = axes[1]
    heads = sorted({k for r in valid for k in r if k.startswith(("acc_", "map_"))})  # classifiers
    for key in ("wer", "cer", *heads):
        pts = [(r["step"], r[key]) for r in valid if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", label=key.upper())
    ax.set(xlabel="step", ylabel="%", title="validation error rate" + (" / accuracy, mAP" if heads else ""))
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax = axes[2]
    ax.plot([r["step"] for r in train], [r["lr"] for r in train], lw=1)
    ax.set(xlabel="step", title="learning rate")

    def series(key: str) -> list:
        return [(r["step"], r[key]) for r in train if r.get(key) is not None]

    ax = grid[1][0]
    for key, label in (("grad_norm", "mean"), ("grad_norm_max", "max")):
        if series(key):
            ax.plot(*zip(*series(key)), lw=0.8, label=label)
    ax.set(xlabel="step", title="gradient norm (before clipping)", yscale="log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax = grid[1][1]
    if series("audio_seconds_per_second"):
        ax.plot(*zip(*series("audio_seconds_per_second")), lw=0.8)
    ax.set(xlabel="step", ylabel="x real time", title="speed" + (" and MFU" if series("mfu") else ""))
    if series("mfu"):
        twin = ax.twinx()
        steps, mfu = zip(*series("mfu"))
        twin.plot(steps, [100 * m for m in mfu], lw=0.8, color="tab:orange")
        twin.set(ylabel="MFU %")
    ax = grid[1][2]
    if series("data_wait"):
        steps, wait = zip(*series("data_wait"))
        ax.plot(steps, [100 * w for w in wait], lw=0.8)
    ax.set(xlabel="step", ylabel="%", title="time waiting for the loader")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


def plot_posteriors(feats, log_probs, labels: list[str], title: str, out_png: str | Path) -> Path:
    """Log-mel spectrogram (top) over per-frame CTC posteriors of the non-blank tokens (bottom)."""
    import numpy as np

    probs = np.exp(log_probs.detach().cpu().float().numpy())  # (T', V)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(12, 6), sharex=False)
    a1.imshow(feats.detach().cpu().numpy().T, origin="lower", aspect="auto", cmap="magma")
    a1.set(title=title, ylabel="mel bin", xlabel="frame (10 ms)")
    used = [v for v in range(1, probs.shape[1]) if probs[:, v].max() > 0.3]
    for v in used:
        a2.plot(probs[:, v], lw=1)
        t = int(probs[:, v].argmax())
        a2.text(t, probs[t, v], labels[v].replace(" ", "␣") or "?", fontsize=8)
    a2.plot(probs[:, 0], color="0.7", lw=0.8, ls="--", label="blank")
    a2.set(xlim=(0, probs.shape[0] - 1), ylim=(0, 1.05), xlabel="output frame", ylabel="posterior")
    a2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


def plot_confusion(matrix, classes: list[str], title: str, out_png: str | Path) -> Path:
    """Confusion matrix as an image (rows: reference, columns: hypothesis), row-normalised
    colours so rare classes show their errors, counts written in when there is room."""
    import numpy as np

    m = np.asarray(matrix)
    n = len(classes)
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = min(4 + 0.35 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        str(m[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if rows[i, j] > 0.5 else "black",
                    )
    ticks = range(n)
    ax.set_xticks(ticks, classes if n <= 60 else [""] * n, rotation=90, fontsize=7)
    ax.set_yticks(ticks, classes if n <= 60 else [""] * n, fontsize=7)
    ax.set(xlabel="hypothesis", ylabel="reference", title=title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)
