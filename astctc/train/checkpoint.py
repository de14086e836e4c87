"""Checkpoints of a run: exp_dir/ckpt/step-NNNNNNNN.pt, written atomically, with the RNG state."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def checkpoints(exp_dir: str | Path) -> list[Path]:
    """Training checkpoints of a run, oldest first."""
    return sorted((Path(exp_dir) / "ckpt").glob("step-*.pt"))


def checkpoint_path(exp_dir: str | Path, step: int) -> Path:
    return Path(exp_dir) / "ckpt" / f"step-{step:08d}.pt"


def save_checkpoint(path: Path, **state) -> None:
    """torch.save to a temporary name, then rename: a kill never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        size = path.stat().st_size if path.exists() else 0
        raise RuntimeError(f"{path}: cannot load checkpoint ({why}; {size} bytes)") from None


def load_latest(exp_dir: str | Path, warn) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads, and its state; None when there is none. One that does
    not load (a disk filled up, a copy cut short) is renamed `<name>.bad`, `warn`ed about, and
    the one before it is tried: a run resumes from the last good state instead of stopping."""
    for path in reversed(checkpoints(exp_dir)):
        try:
            return path, load_checkpoint(path)
        except RuntimeError as e:
            bad = path.with_name(path.name + ".bad")
            os.replace(path, bad)
            warn(f"{e}; moved to {bad.name}, resuming from the checkpoint before it")
    return None


def prune_checkpoints(exp_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for old in checkpoints(exp_dir)[:-keep]:
        old.unlink()


def rng_state() -> dict:
    """The torch, numpy, Python (and this process's CUDA device's) generators' states, as
    tensors and plain values that torch.load(weights_only=True) accepts.

    Only the current device's CUDA state: a process trains on one GPU, and a checkpoint must
    resume on a machine with fewer GPUs (saving all of them made resuming on fewer crash)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _np_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _np_state() -> tuple:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # older checkpoints: one state per visible GPU
            cuda = cuda[torch.cuda.current_device()] if torch.cuda.current_device() < len(cuda) else cuda[0]
        torch.cuda.set_rng_state(cuda)
