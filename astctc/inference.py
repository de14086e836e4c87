"""A model directory loaded for inference on audio of any length.

Audio is cut into consecutive, non-overlapping windows of the position table's length (a word
that straddles a cut may be split), and windows run through the model in padded batches of
similar length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import torch
from torch import Tensor

from .audio import Source, load_audio
from .features import fbank
from .models.model import load_model

Audio = Union[Source, Tensor]


@dataclass
class Window:
    feats: Tensor  # (frames, mel bins)
    source: int  # index of the audio it was cut from
    start: int  # its first fbank frame in that audio


class WindowedModel:
    """A model on a device ("auto": CUDA when there is one), run over windows of audio."""

    def __init__(self, model_dir: str | Path, device: str = "auto", batch_seconds: float = 120.0):
        loaded = load_model(model_dir, device)
        self.model, self.features, self.tokenizer = loaded.model, loaded.features, loaded.tokenizer
        self.device = loaded.device
        self.frame_seconds = loaded.frame_seconds  # seconds per CTC output frame
        self.window = self.model.cfg.encoder.max_frames  # fbank frames per window
        self.batch_seconds = batch_seconds

    def windows(self, audio: Sequence[Audio]) -> list[Window]:
        """Fbank features of each file or waveform, cut into windows."""
        out = []
        for n, a in enumerate(audio):
            feats = fbank(a if isinstance(a, Tensor) else load_audio(a), self.features)
            out += [Window(feats[i : i + self.window], n, i) for i in range(0, feats.shape[0], self.window)]
        return out

    def seconds(self, frames: int) -> float:
        """Seconds of audio in `frames` fbank frames."""
        return frames * self.features.frame_shift_ms / 1000

    @torch.no_grad()
    def run(self, windows: Sequence[Window]) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
        """(indices into `windows`, model outputs) per batch: shortest windows first, as many
        as fit in `batch_seconds` of padded audio."""
        order = sorted(range(len(windows)), key=lambda i: windows[i].feats.shape[0])
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and self.seconds((j + 1 - i) * windows[order[j]].feats.shape[0]) <= self.batch_seconds:
                j += 1
            idx = order[i:j]
            x = torch.zeros(len(idx), windows[idx[-1]].feats.shape[0], windows[idx[0]].feats.shape[1])
            for b, k in enumerate(idx):
                x[b, : windows[k].feats.shape[0]] = windows[k].feats
            lengths = torch.tensor([windows[k].feats.shape[0] for k in idx])
            yield idx, self.model(x.to(self.device), lengths)  # lengths on the CPU: no device sync
            i = j
