"""Audio files to text, from Python or the command line.

    >>> from astctc.transcribe import Transcriber
    >>> asr = Transcriber("exp/mini/model")
    >>> asr(["a.wav", "b.flac"])
    ['hello world', '...']

Audio longer than the model's position table is cut into consecutive windows that are decoded
separately and joined; a word that straddles a cut may be split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch

from .audio import Source, load_audio
from .decode import greedy_decode
from .features import fbank
from .models.model import load_model
from .train import resolve_device

Audio = Union[Source, torch.Tensor]


class Transcriber:
    def __init__(self, model_dir: str | Path, device: str = "auto", batch_seconds: float = 120.0):
        self.device = resolve_device(device)
        loaded = load_model(model_dir, self.device)
        if loaded.tokenizer is None:
            raise ValueError(f"{model_dir}: model has no CTC head, nothing to transcribe with")
        self.model, self.features, self.tokenizer = loaded.model, loaded.features, loaded.tokenizer
        self.batch_seconds = batch_seconds
        enc = self.model.cfg.encoder
        self.window = enc.max_frames  # fbank frames per window

    def _features(self, audio: Audio) -> list[torch.Tensor]:
        wav = audio if isinstance(audio, torch.Tensor) else load_audio(audio)
        feats = fbank(wav, self.features)
        return [feats[i : i + self.window] for i in range(0, feats.shape[0], self.window)]

    @torch.no_grad()
    def log_probs(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-window CTC log-probabilities, batched by length."""
        order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0])
        out: list[torch.Tensor | None] = [None] * len(feats)
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and (j + 1 - i) * feats[order[j]].shape[0] / 100 <= self.batch_seconds:
                j += 1
            idx = order[i:j]
            T = feats[idx[-1]].shape[0]
            x = torch.zeros(len(idx), T, feats[idx[0]].shape[1])
            for b, k in enumerate(idx):
                x[b, : feats[k].shape[0]] = feats[k]
            lengths = torch.tensor([feats[k].shape[0] for k in idx])
            r = self.model(x.to(self.device), lengths.to(self.device))
            for b, k in enumerate(idx):
                out[k] = r["log_probs"][b, : r["lengths"][b]].cpu()
            i = j
        return out  # type: ignore[return-value]

    def __call__(self, audio: Audio | Sequence[Audio]) -> str | list[str]:
        single = not isinstance(audio, (list, tuple))
        items = [audio] if single else list(audio)
        windows, owner = [], []
        for n, a in enumerate(items):
            for w in self._features(a):
                windows.append(w)
                owner.append(n)
        lps = self.log_probs(windows)
        texts: list[list[str]] = [[] for _ in items]
        for n, lp in zip(owner, lps):
            texts[n].append(greedy_decode(lp[None], torch.tensor([lp.shape[0]]), self.tokenizer)[0])
        joined = [" ".join(t for t in ts if t) for ts in texts]
        return joined[0] if single else joined


def transcribe(files: Sequence[Audio], model_dir: str | Path, device: str = "auto") -> list[str]:
    """One-call API: transcribe `files` with the model in `model_dir`."""
    return Transcriber(model_dir, device)(list(files))  # type: ignore[return-value]
