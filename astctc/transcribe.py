"""Audio files to text, from Python or the command line.

    >>> from astctc.transcribe import Transcriber
    >>> asr = Transcriber("exp/mini/model")
    >>> asr(["a.wav", "b.flac"])
    ['hello world', '...']

Audio longer than the model's position table is cut into consecutive windows that are decoded
separately and joined; a word that straddles a cut may be split. Files are read and decoded a
chunk of windows at a time (`WindowedModel.chunks`): memory does not grow with their length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch

from .decode import greedy_decode
from .inference import Audio, Window, WindowedModel


class Transcriber(WindowedModel):
    def __init__(self, model_dir: str | Path, device: str = "auto", batch_seconds: float = 120.0):
        super().__init__(model_dir, device, batch_seconds)
        if self.tokenizer is None:
            raise ValueError(f"{model_dir}: model has no CTC head, nothing to transcribe with")

    @torch.no_grad()
    def log_probs(self, windows: Sequence[Window]) -> list[torch.Tensor]:
        """Per-window CTC log-probabilities (frames, vocabulary), on the CPU."""
        out: list[torch.Tensor | None] = [None] * len(windows)
        for idx, r in self.run(windows):
            for b, k in enumerate(idx):
                out[k] = r["log_probs"][b, : r["lengths"][b]].cpu()
        return out  # type: ignore[return-value]

    def stream_log_probs(self, audio: Sequence[Audio]) -> Iterator[list[tuple[int, int, torch.Tensor]]]:
        """(source index, first fbank frame, CTC log-probabilities on the CPU) of each window of
        `audio`, in order, a chunk of windows at a time; the features of a chunk are released
        before the next is read."""
        for chunk in self.chunks(audio):
            out = [(w.source, w.start, lp) for w, lp in zip(chunk, self.log_probs(chunk))]
            del chunk
            yield out

    def __call__(self, audio: Audio | Sequence[Audio]) -> str | list[str]:
        single = not isinstance(audio, (list, tuple))
        items = [audio] if single else list(audio)
        texts: list[list[str]] = [[] for _ in items]
        for part in self.stream_log_probs(items):
            for source, _, lp in part:
                texts[source].append(greedy_decode(lp[None], torch.tensor([lp.shape[0]]), self.tokenizer)[0])
        joined = [" ".join(t for t in ts if t) for ts in texts]
        return joined[0] if single else joined


def transcribe(files: Sequence[Audio], model_dir: str | Path, device: str = "auto") -> list[str]:
    """One-call API: transcribe `files` with the model in `model_dir`."""
    return Transcriber(model_dir, device)(list(files))  # type: ignore[return-value]
