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


# what Trainer.state writes and what resuming and averaging read
STATE_KEYS = ("model", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "rng", "config")


def first_nonfinite(state, name: str = "") -> str | None:
    """The name ("model/encoder.x.weight", "optimizer/state/3/exp_avg") of the first floating
    tensor in `state` (nested dicts, lists, tuples) holding a NaN or an infinity; None if none."""
    if isinstance(state, torch.Tensor):
        return name if state.is_floating_point() and not bool(torch.isfinite(state).all()) else None
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    for k, v in items:
        found = first_nonfinite(v, f"{name}/{k}" if name else str(k))
        if found is not None:
            return found
    return None


def save_checkpoint(path: Path, **state) -> None:
    """torch.save to a temporary name, then rename: a kill never leaves half a checkpoint. A
    state holding NaN or infinite values is not written (RuntimeError): resuming or averaging
    it could only give NaN, and the checkpoints before it stay the newest."""
    bad = first_nonfinite(state)
    if bad is not None:
        raise RuntimeError(
            f"{path}: not written: {bad} holds NaN or infinite values (training diverged); "
            "the checkpoints before it are kept"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint's state; RuntimeError naming the file for one that does not load,
    is not a checkpoint's mapping (STATE_KEYS, the model's tensors by name) or holds NaN or
    infinite values."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        size = path.stat().st_size if path.exists() else 0
        raise RuntimeError(f"{path}: cannot load checkpoint ({why}; {size} bytes)") from None
    _check_state(path, state)
    return state


def _check_state(path: Path, state) -> None:
    if not isinstance(state, dict):
        raise RuntimeError(f"{path}: not a training checkpoint (a {type(state).__name__}, not a mapping of its state)")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise RuntimeError(f"{path}: not a training checkpoint (no {', '.join(missing)})")
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise RuntimeError(f"{path}: not a training checkpoint (its model is not a mapping of names to tensors)")
    bad = first_nonfinite(state)
    if bad is not None:
        raise RuntimeError(f"{path}: {bad} holds NaN or infinite values: nothing can be resumed or averaged from it")


def check_weights_fit(path: Path, sd: dict[str, torch.Tensor], shapes: dict[str, torch.Size]) -> None:
    """ValueError naming the checkpoint and the first tensor of its model state `sd` that is
    missing, extra or of another shape than in `shapes` (the model's, by name): load_state_dict's
    error names no file, over many lines."""
    missing = [k for k in shapes if k not in sd]
    if missing:
        raise ValueError(f"{path}: the weights do not fit the run's config: {missing[0]} is missing")
    extra = [k for k in sd if k not in shapes]
    if extra:
        raise ValueError(f"{path}: the weights do not fit the run's config: {extra[0]} is not in the model")
    for k, v in sd.items():
        if v.shape != shapes[k]:
            raise ValueError(
                f"{path}: the weights do not fit the run's config: {k} is {list(v.shape)}, "
                f"the model's {list(shapes[k])}"
            )


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
