"""Grid search of the LM weight alpha and word bonus beta, and the record of the best pair."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..metrics import score
from .beam import BeamSearch

log = logging.getLogger(__name__)

ALPHA_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
BETA_GRID = (-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


@dataclass
class TuneResult:
    alpha: float
    beta: float
    wer: float
    cer: float
    grid: list[dict]


def tune(
    search: BeamSearch,
    log_probs: Sequence[np.ndarray],
    refs: dict[str, str],
    alphas: Sequence[float] = ALPHA_GRID,
    betas: Sequence[float] = BETA_GRID,
) -> TuneResult:
    """Grid-search alpha x beta on log-probabilities computed once; lowest WER wins, then CER.

    `refs` is ordered like `log_probs` (utterance id -> reference text).
    """
    ids = list(refs)
    if len(ids) != len(log_probs):
        raise ValueError(f"{len(ids)} references for {len(log_probs)} utterances")
    grid = []
    for a in alphas:
        for b in betas:
            hyps = search.decode(log_probs, alpha=a, beta=b)
            r = score(refs, {k: h.text for k, h in zip(ids, hyps)})
            grid.append({"alpha": float(a), "beta": float(b), "wer": r.wer, "cer": r.cer})
            log.info("tune: alpha=%.3g beta=%.3g WER %.2f CER %.2f", a, b, r.wer, r.cer)
    best = min(grid, key=lambda g: (g["wer"], g["cer"]))
    for name, value, axis in (("alpha", best["alpha"], alphas), ("beta", best["beta"], betas)):
        if len(axis) > 1 and value in (min(axis), max(axis)) and not (name == "alpha" and value == 0 == min(axis)):
            log.warning(
                "tune: best %s=%g is at the edge of its grid %s; a wider grid may do better",
                name,
                value,
                ",".join(f"{v:g}" for v in axis),
            )
    return TuneResult(best["alpha"], best["beta"], best["wer"], best["cer"], grid)


def record_tuning(result: TuneResult, path: Path, **context) -> Path:
    """Write the best pair beside the LM, with what it was tuned on (a later decode reads it)."""
    data = {
        "alpha": result.alpha,
        "beta": result.beta,
        "wer": result.wer,
        "cer": result.cer,
        **context,
        "grid": result.grid,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)  # atomic: a decode reading it never sees half a file
    return path
