"""What a decoder returns: the text, its words with times and confidences, and a score.

A word's confidence is exp of the mean, over the CTC frames it spans, of the best token's
log-probability in each frame: the geometric mean probability of the frame-wise best path
under the word, in [0, 1]. Low when the model hesitated between tokens there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float = 1.0  # see the module docstring; 1.0 where a decoder did not measure it


@dataclass
class Hypothesis:
    text: str
    words: list[Word]
    score: float  # acoustic + weighted LM score of the best beam (natural log)


def frame_confidence(best_log_probs: np.ndarray, start: int, end: int) -> float:
    """exp(mean of `best_log_probs[start:end]`): the confidence of a word over frames [start, end)."""
    seg = best_log_probs[start:end]
    if len(seg) == 0:
        return 0.0
    return round(float(min(1.0, math.exp(float(np.mean(seg))))), 4)
