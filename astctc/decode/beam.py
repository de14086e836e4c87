"""CTC prefix beam search with a KenLM n-gram (pyctcdecode), over log-probabilities on the CPU.

Beam search runs over log-probabilities the model computed once, so a set can be decoded
many times (alpha/beta tuning) for the price of one forward pass. Search is parallel over
utterances in a process pool that lives as long as its `BeamSearch` object.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..lm import load_unigrams, resolve_lm
from ..tokenizer import CharTokenizer, Tokenizer
from .hypothesis import Hypothesis, Word, frame_confidence

log = logging.getLogger(__name__)

DEFAULT_ALPHA, DEFAULT_BETA = 0.5, 1.5  # pyctcdecode's defaults; used until `--tune` records better


@dataclass
class BeamConfig:
    beam_width: int = 64
    alpha: float | None = None  # LM weight; None: the tuned value beside the LM, else DEFAULT_ALPHA
    beta: float | None = None  # word insertion bonus; None: tuned, else DEFAULT_BETA
    beam_prune_logp: float = -10.0  # drop beams this far (log) below the best one
    token_min_logp: float = -5.0  # tokens less likely than this in a frame are not expanded
    prune_history: bool = False  # merge beams equal over the LM's context (faster, less diverse)
    unk_score_offset: float = -10.0  # log10 penalty (scaled by alpha) for a word outside the LM
    hotwords: list[str] = field(default_factory=list)
    hotword_weight: float = 10.0


def collapse_runs(log_probs: np.ndarray, token_min_logp: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames beam search has to visit, and the last frame of the run each one stands for.

    pyctcdecode expands, in each frame, the tokens at or above `token_min_logp` (and the
    argmax). When that is one token X, and was the same single X in the frame before, every
    beam already ends in X (blank, or a letter it just read or repeated), so the frame only
    adds one constant to every beam's score: no pruning, merging or ranking changes, only
    the end time of the word being read. Such frames are dropped and their run's end is
    remembered for the word times. The beams and words come out the same, faster: most CTC
    frames repeat a confident blank or letter.
    """
    T = log_probs.shape[0]
    if T == 0:
        return np.arange(0), np.arange(0)
    best = log_probs.argmax(axis=1)
    single = (log_probs >= token_min_logp).sum(axis=1) <= 1
    drop = np.zeros(T, dtype=bool)
    drop[1:] = single[1:] & single[:-1] & (best[1:] == best[:-1])
    keep = np.flatnonzero(~drop)
    run_end = np.append(keep[1:] - 1, T - 1)
    return keep, run_end


def _alphabet(tokenizer: Tokenizer) -> set[str]:
    """Characters the model can spell words with."""
    if isinstance(tokenizer, CharTokenizer):
        return set(tokenizer.symbols[2:]) - {" "}
    chars = set("".join(p for p in tokenizer.labels()[1:] if not (p.startswith("<") and p.endswith(">"))))
    return chars - {"\u2581"}


def check_vocabulary(tokenizer: Tokenizer, words: Sequence[str], lm_name: str, max_bad: float = 0.2) -> None:
    """Refuse an LM whose words the model cannot spell; warn, naming characters, when few can't.

    A word with a character outside the model's alphabet can never be hypothesised, so an LM
    for another alphabet (upper case, another script) silently degrades to no LM at all.
    """
    alphabet = _alphabet(tokenizer)
    bad = [w for w in words if not set(w) <= alphabet]
    if not bad:
        return
    chars = sorted(set("".join(bad)) - alphabet)
    shown = " ".join(repr(c) for c in chars[:20]) + (" ..." if len(chars) > 20 else "")
    msg = (
        f"{lm_name}: {len(bad)} of {len(words)} LM words use characters the model's tokenizer "
        f"lacks: {shown} (e.g. {', '.join(bad[:5])})"
    )
    if len(bad) > max_bad * len(words):
        raise ValueError(
            f"{msg}; the LM was built for a different alphabet (the model spells with "
            f"{''.join(sorted(alphabet))!r}). Train it on text normalised like the "
            "model's (astctc lm) or import it lower-cased (astctc lm --arpa)"
        )
    log.warning("%s; those words can never be decoded", msg)


_WORKER: "BeamSearch | None" = None  # the BeamSearch a pool process serves (inherited by fork)


def _init_worker(search: "BeamSearch") -> None:
    global _WORKER
    _WORKER = search
    torch.set_num_threads(1)


def _worker_decode(task):
    i, lp, alpha, beta = task
    return i, _WORKER.decode_one(lp, alpha, beta)


class BeamSearch:
    """CTC prefix beam search over a tokenizer's labels with an optional KenLM (pyctcdecode).

    Characters use the space as the word boundary, SentencePiece pieces their leading ▁.
    With num_workers > 1, utterances are decoded in a pool of forked processes created at the
    first call and reused by every later one (creating a pool per call costs more than
    decoding a small batch); alpha and beta travel with each task, so one pool serves a whole
    tuning grid. Close it with `close()` or a `with` block.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        lm: str | Path | None = None,
        cfg: BeamConfig | None = None,
        frame_seconds: float = 0.02,
        num_workers: int = 1,
    ):
        from pyctcdecode import build_ctcdecoder  # lazy: slow to import, and only a beam search needs it

        self.cfg = cfg or BeamConfig()
        self.tokenizer = tokenizer
        self.frame_seconds = frame_seconds
        self.num_workers = max(1, num_workers)
        self.lm_files = resolve_lm(lm) if lm is not None else None
        self.tuned: dict | None = None
        unigrams = None
        if self.lm_files is not None:
            unigrams = load_unigrams(self.lm_files)
            check_vocabulary(tokenizer, unigrams, str(self.lm_files.model))
            if self.lm_files.tuned.exists():
                self.tuned = json.loads(self.lm_files.tuned.read_text())
        self.alpha, self.beta = self._resolve_weights()
        plog = logging.getLogger("pyctcdecode")
        level = plog.level
        plog.setLevel(logging.ERROR)  # its "few unigrams" / "arpa is slow" notes are noise here
        try:
            self.decoder = build_ctcdecoder(
                tokenizer.labels(),
                kenlm_model_path=str(self.lm_files.model) if self.lm_files else None,
                unigrams=unigrams,
                alpha=self.alpha,
                beta=self.beta,
                unk_score_offset=self.cfg.unk_score_offset,
            )
        except OSError as e:  # kenlm reports a corrupt or foreign file as an OSError
            raise ValueError(f"{self.lm_files.model}: KenLM cannot load it ({e})") from None
        finally:
            plog.setLevel(level)
        self._pool = None
        self._finalizer = None

    def _resolve_weights(self) -> tuple[float, float]:
        """Explicit alpha/beta first, then the pair `--tune` recorded beside the LM, then defaults."""
        t = self.tuned or {}
        alpha = self.cfg.alpha if self.cfg.alpha is not None else t.get("alpha", DEFAULT_ALPHA)
        beta = self.cfg.beta if self.cfg.beta is not None else t.get("beta", DEFAULT_BETA)
        if t and (self.cfg.alpha is None or self.cfg.beta is None):
            log.info("LM weights alpha=%.3g beta=%.3g (tuned: %s)", alpha, beta, self.lm_files.tuned)
        return float(alpha), float(beta)

    # ---- one utterance ----------------------------------------------------------------------

    def decode_one(self, log_probs: np.ndarray, alpha: float | None = None, beta: float | None = None) -> Hypothesis:
        """Best beam for one (T, V) log-probability matrix, with its words' start/end times and
        confidences (`frame_confidence` over the frames each word spans)."""
        lp = np.asarray(log_probs, dtype=np.float32)
        if lp.ndim != 2 or lp.shape[1] != self.tokenizer.vocab_size:
            raise ValueError(
                f"log-probabilities of shape {lp.shape} do not fit the tokenizer's {self.tokenizer.vocab_size} tokens"
            )
        if lp.shape[0] == 0:
            return Hypothesis("", [], 0.0)
        self.decoder.reset_params(
            alpha=float(self.alpha if alpha is None else alpha), beta=float(self.beta if beta is None else beta)
        )
        keep, run_end = collapse_runs(lp, self.cfg.token_min_logp)
        c = self.cfg
        beams = self.decoder.decode_beams(
            lp[keep],
            beam_width=c.beam_width,
            beam_prune_logp=c.beam_prune_logp,
            token_min_logp=c.token_min_logp,
            prune_history=c.prune_history,
            hotwords=c.hotwords or None,
            hotword_weight=c.hotword_weight,
        )
        text, _, word_frames, _, score = beams[0]
        dropped = np.ones(lp.shape[0], dtype=bool)
        dropped[keep] = False  # each dropped frame added the same log-prob to every beam
        score += float(lp[dropped].max(axis=1).sum())
        fs = self.frame_seconds
        best = lp.max(axis=1)
        words = []
        for w, (s, e) in word_frames:
            if s < 0:
                continue
            first, end = int(keep[s]), int(run_end[e - 1]) + 1  # frames of the whole matrix
            words.append(Word(w, round(first * fs, 3), round(end * fs, 3), frame_confidence(best, first, end)))
        return Hypothesis(text, words, float(score))

    # ---- many utterances --------------------------------------------------------------------

    def _get_pool(self):
        if self._pool is None:
            # fork: the children inherit the loaded LM (pyctcdecode keeps it in a class variable)
            ctx = multiprocessing.get_context("fork")
            self._pool = ctx.Pool(self.num_workers, initializer=_init_worker, initargs=(self,))
            self._finalizer = weakref.finalize(self, self._pool.terminate)
        return self._pool

    def decode(
        self, log_probs: Sequence[np.ndarray | Tensor], alpha: float | None = None, beta: float | None = None
    ) -> list[Hypothesis]:
        """Decode a list of (T_i, V) matrices; in the pool when there are several and num_workers > 1."""
        lps = [lp.detach().float().cpu().numpy() if isinstance(lp, Tensor) else lp for lp in log_probs]
        # resolved here: pool processes hold a copy of self from when they were forked
        alpha = self.alpha if alpha is None else alpha
        beta = self.beta if beta is None else beta
        if self.num_workers == 1 or len(lps) < 2:
            return [self.decode_one(lp, alpha, beta) for lp in lps]
        order = sorted(range(len(lps)), key=lambda i: -lps[i].shape[0])  # longest first: even finish
        out: list[Hypothesis | None] = [None] * len(lps)
        for i, hyp in self._get_pool().imap_unordered(_worker_decode, ((i, lps[i], alpha, beta) for i in order)):
            out[i] = hyp
        return out  # type: ignore[return-value]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._finalizer.detach()
            self._pool = None

    def __enter__(self) -> "BeamSearch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
