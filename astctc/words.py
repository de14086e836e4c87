"""Words with times: from a greedy path or a beam, for whole files, as JSON or SRT subtitles.

A CTC frame stands for `frame_seconds` of audio (the encoder's time stride times the fbank
shift), so a word's start is its first letter's first frame and its end the frame after its
last letter. These are the frames where the model fired, which lag or lead the true
boundaries by a frame or two.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import torch

from .decode import BeamSearch, Hypothesis, Word
from .tokenizer import Tokenizer


def greedy_words(log_probs: np.ndarray | torch.Tensor, tokenizer: Tokenizer, seconds: float) -> Hypothesis:
    """Best path of one (T, V) matrix, cut into words at spaces (characters) or ▁ (pieces)."""
    lp = torch.as_tensor(log_probs)
    best = lp.argmax(dim=-1).tolist()
    labels = tokenizer.labels()
    words: list[Word] = []
    cur, start, end, prev = "", 0, 0, tokenizer.blank

    def flush():
        if cur:
            words.append(Word(cur, round(start * seconds, 3), round(end * seconds, 3)))

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
    score = float(lp.max(dim=-1).values.sum())
    return Hypothesis(" ".join(w.word for w in words), words, score)


def transcribe_words(asr, files: Sequence, search: BeamSearch | None = None) -> list[Hypothesis]:
    """Words with times for each file, through a `Transcriber` (greedy, or `search`).

    Long files are cut into the Transcriber's windows, read and decoded a chunk at a time; each
    window's times are shifted by where it starts.
    """
    shift = asr.features.frame_shift_ms / 1000.0  # seconds per fbank frame
    out = [Hypothesis("", [], 0.0) for _ in files]
    for part in asr.stream_log_probs(files):
        if search is not None:
            hyps = search.decode([lp.numpy() for _, _, lp in part])
        else:
            hyps = [greedy_words(lp, asr.tokenizer, asr.frame_seconds) for _, _, lp in part]
        for (source, start, _), h in zip(part, hyps):
            o, off = out[source], start * shift
            o.words += [Word(x.word, round(x.start + off, 3), round(x.end + off, 3)) for x in h.words]
            o.text = " ".join(t for t in (o.text, h.text) if t)
            o.score += h.score
    return out


def to_json(name: str, hyp: Hypothesis) -> str:
    return json.dumps(
        {
            "file": name,
            "text": hyp.text,
            "words": [{"word": w.word, "start": w.start, "end": w.end} for w in hyp.words],
        },
        ensure_ascii=False,
    )


def _srt_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def to_srt(hyp: Hypothesis, max_words: int = 8, max_gap: float = 0.8) -> str:
    """SubRip cues of at most `max_words` words, also cut where speech pauses for `max_gap` s."""
    cues: list[list[Word]] = []
    for w in hyp.words:
        if not cues or len(cues[-1]) >= max_words or w.start - cues[-1][-1].end > max_gap:
            cues.append([])
        cues[-1].append(w)
    return "".join(
        f"{k}\n{_srt_time(c[0].start)} --> {_srt_time(c[-1].end)}\n{' '.join(w.word for w in c)}\n\n"
        for k, c in enumerate(cues, 1)
    )


def format_transcripts(names: Sequence[str], hyps: Sequence[Hypothesis], fmt: str) -> str:
    """text: the transcript (tab-prefixed by the file name when there are several); json: one
    object a line; srt: one SubRip document per file, headed `==> file <==` when several."""
    many = len(names) > 1
    if fmt == "text":
        return "".join(f"{n}\t{h.text}\n" if many else f"{h.text}\n" for n, h in zip(names, hyps))
    if fmt == "json":
        return "".join(to_json(str(n), h) + "\n" for n, h in zip(names, hyps))
    if fmt == "srt":
        return "".join((f"==> {n} <==\n" if many else "") + to_srt(h) for n, h in zip(names, hyps))
    raise ValueError(f"output format must be text, json or srt, not {fmt!r}")
