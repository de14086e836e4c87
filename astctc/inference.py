"""A model directory loaded for inference on audio of any length.

Audio is cut into consecutive, non-overlapping windows of the position table's length (a word
that straddles a cut may be split), and windows run through the model in padded batches of
similar length.

Files are read as a stream (`iter_windows`): blocks of samples are decoded as they are needed
and each window's fbank features are computed from that window's own samples, so memory is
bounded by the window length and the chunk of windows run at once, not by the file's length.
Each window is featurised as an utterance of its own: `fbank` removes the waveform mean of the
samples it is given (and `utterance_cmvn` / `utterance_level` normalise over them), so these
statistics are per window, as they were per utterance in training. A file no longer than one
window is featurised exactly as a whole file is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import torch
from torch import Tensor

from .audio import SAMPLE_RATE, AudioError, Source, iter_audio, source_name
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
        # windows read and run at once by `chunks`: four full batches of full-length windows
        self.chunk_frames = self.window * max(1, 4 * int(batch_seconds // self.seconds(self.window)))

    def seconds(self, frames: int) -> float:
        """Seconds of audio in `frames` fbank frames."""
        return frames * self.features.frame_shift_ms / 1000

    # ---- windows: the one place audio is cut ------------------------------------------------

    def iter_windows(self, audio: Sequence[Audio]) -> Iterator[Window]:
        """The windows of each file or waveform, in order, read lazily: window k of an item
        holds fbank frames [k * window, (k + 1) * window), computed from the samples those
        frames cover ((window - 1) * shift + length of them; consecutive windows share the
        length - shift samples between their analysis windows)."""
        for n, a in enumerate(audio):
            yield from self._item_windows(n, a)

    def windows(self, audio: Sequence[Audio]) -> list[Window]:
        """All windows of `audio` at once (fine for clips; long files: `chunks`)."""
        return list(self.iter_windows(audio))

    def _item_windows(self, n: int, a: Audio) -> Iterator[Window]:
        cfg = self.features
        win = int(cfg.sample_rate * cfg.frame_length_ms / 1000)  # samples per analysis window
        hop = int(cfg.sample_rate * cfg.frame_shift_ms / 1000)
        span, step = (self.window - 1) * hop + win, self.window * hop  # samples of a full window, between windows
        if isinstance(a, Tensor):
            if a.dim() != 1:
                raise ValueError(f"waveform {n}: expected a 1-D waveform, got shape {tuple(a.shape)}")
            label, blocks = f"waveform {n}", iter([a])
        else:
            label = source_name(a)
            # blocks a second longer than a window: a file that fits in one window is read (and
            # resampled) in one piece, as load_audio reads it
            blocks = iter_audio(a, SAMPLE_RATE, block_seconds=span / cfg.sample_rate + 1.0)
        pending: list[Tensor] = []  # samples from frame `start` on
        have = total = start = 0
        for block in blocks:
            pending.append(block)
            have += block.numel()
            total += block.numel()
            if have < span:
                continue
            buf = torch.cat(pending) if len(pending) > 1 else pending[0]
            off = 0
            while have - off >= span:
                yield Window(fbank(buf[off : off + span], cfg), n, start)
                start += self.window
                off += step
            pending, have = [buf[off:].clone()], have - off  # clone: let the rest of buf go
            del buf
        if total < win:
            raise AudioError(
                f"{label}: {total} sample{'s' if total != 1 else ''} ({1000 * total / cfg.sample_rate:g} ms)"
                f" is shorter than one {cfg.frame_length_ms:g} ms analysis window"
            )
        if have >= win:  # the last, shorter window
            yield Window(fbank(torch.cat(pending), cfg), n, start)

    def chunks(self, audio: Sequence[Audio]) -> Iterator[list[Window]]:
        """Consecutive windows of `audio` in lists of about `chunk_frames` frames: what is read,
        featurised and run at once, so that a long file is never held whole."""
        chunk: list[Window] = []
        frames = 0
        for w in self.iter_windows(audio):
            chunk.append(w)
            frames += w.feats.shape[0]
            if frames >= self.chunk_frames:
                yield chunk
                chunk, frames = [], 0
        if chunk:
            yield chunk

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
