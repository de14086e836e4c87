"""Words with times: from a greedy path or a beam, for whole files, as JSON or SRT subtitles.

A CTC frame stands for `frame_seconds` of audio (the encoder's time stride times the fbank
shift), so a word's start is its first letter's first frame and its end the frame after its
last letter. These are the frames where the model fired, which lag or lead the true
boundaries by a frame or two. Each word also carries a confidence (decode/hypothesis.py's
`frame_confidence`: exp of the mean best-token log-probability over its frames).

A long file is decoded once, over the stitched log-probabilities of its overlapping windows
(`WindowedModel.item_log_probs`), so its words' times are already the file's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .decode import BeamSearch, Hypothesis, Word
from .decode.hypothesis import frame_confidence
from .tokenizer import Tokenizer


def greedy_words(log_probs: np.ndarray | torch.Tensor, tokenizer: Tokenizer, seconds: float) -> Hypothesis:
    """Best path of one (T, V) matrix, cut into words at spaces (characters) or ▁ (pieces),
    with times and confidences."""
    lp = torch.as_tensor(log_probs)
    top = lp.max(dim=-1)
    best, best_lp = top.indices.tolist(), top.values.double().numpy()
    labels = tokenizer.labels()
    words: list[Word] = []
    cur, start, end, prev = "", 0, 0, tokenizer.blank

    def flush():
        if cur:
            conf = frame_confidence(best_lp, start, end)
            words.append(Word(cur, round(start * seconds, 3), round(end * seconds, 3), conf))

    for t, i in enumerate(best):
        if i == prev and i != tokenizer.blank:  # the same token held: the word goes on
            end = t + 1
        elif i != tokenizer.blank and i != 1:  # a new token (1 is <unk>: no spelling)
            label = labels[i]
            boundary = label == " " or label.startswith("\u2581")
            piece = label.lstrip("\u2581").strip()
            if boundary:
                flush()
                cur = ""
            if piece:
                if not cur:
                    start = t
                cur += piece
            end = t + 1
        prev = i
    flush()
    score = float(top.values.sum())
    return Hypothesis(" ".join(w.word for w in words), words, score)


def transcribe_words(asr, files: Sequence, search: BeamSearch | None = None) -> list[Hypothesis]:
    """Words with times for each file, through a `Transcriber` (greedy, or `search`).

    Each file is decoded once, over the stitched log-probabilities of all its windows
    (`item_log_probs`); the first file that fails raises its error.
    """
    out: list[Hypothesis] = []
    for _, lp in asr.item_log_probs(files):
        if isinstance(lp, Exception):
            raise lp
        if search is not None:
            out.append(search.decode_one(lp.numpy()))
        else:
            out.append(greedy_words(lp, asr.tokenizer, asr.frame_seconds))
    return out
