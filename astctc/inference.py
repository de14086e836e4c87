"""A model directory loaded for inference on audio of any length.

Audio is cut into windows of the position table's length that overlap: every window carries
`context` fbank frames of left and right context around a centre, and only the centre's CTC
frames are kept (the first window also keeps its left edge, the last its right edge). Window
starts are multiples of the encoder's time stride (fbank frames per CTC frame), so window k's
CTC column j is the file's CTC frame start / stride + j and the kept spans tile the file's CTC
frames exactly; `item_log_probs` stitches them into one (T, V) matrix per item, which is
decoded once, so a word across a cut is no longer split and the result does not depend on
where the cuts fall. The stitched matrix is small (an hour at 10 frames/s and 30 tokens is
about 4 MB of float32). context=0 gives the old non-overlapping windows, cut at the same
places when the patch and stride divide the window (else at the last whole CTC frame), all
columns kept and stitched.

Files are read as a stream (`iter_windows`): blocks of samples are decoded as they are needed
and each window's fbank features are computed from that window's own samples, so memory is
bounded by the window length and the chunk of windows run at once, not by the file's length.
Each window is featurised as an utterance of its own: `fbank` removes the waveform mean of the
samples it is given (and `utterance_cmvn` / `utterance_level` normalise over them), so these
statistics are per window, as they were per utterance in training. A file no longer than one
window is featurised and decoded exactly as a whole file is.

On a GPU (`features_on` auto) a window carries its samples instead, and `run` featurises a
batch of windows at once on the device (`fbank_batch`, equal to `fbank` within 1e-4): per-window
fbank on the CPU is what held decoding back there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import torch
from torch import Tensor

from .audio import SAMPLE_RATE, AudioError, Source, iter_audio, source_name
from .features import FeatureConfig, fbank, fbank_batch
from .models.model import load_model

Audio = Union[Source, Tensor]

# seconds of context on each side of a window's kept centre: AST attends over its whole window,
# so frames near a cut lack what follows or precedes them; 1 s (two or three words) on each side
# was best of 0.5/1/1.5/2 s on the dev long files of bench/long_audio.py and leaves an 8.24 s
# centre of a 10.24 s window (1.24x the forward passes of no overlap)
DEFAULT_CONTEXT_SECONDS = 1.0
ITEM_ERRORS = (AudioError, ValueError, OSError)  # what fails one item and not the others


def item_error(label: str, what: str, e: Exception) -> Exception:
    """`e` as an error of one item: unchanged when it already names the item; else a ValueError
    `<label>: <what> failed (<type>: <first line>)` (a torch RuntimeError spans many lines)."""
    if isinstance(e, ITEM_ERRORS) and str(e).startswith(label):
        return e
    first = (str(e).strip().splitlines() or [""])[0]
    return ValueError(f"{label}: {what} failed ({type(e).__name__}: {first})")


def item_label(a: Audio, n: int) -> str:
    """How errors name item n: its path, or `waveform n`."""
    return f"waveform {n}" if isinstance(a, Tensor) else source_name(a)


@dataclass
class Window:
    feats: Tensor | None  # (frames, mel bins); None: features on the device, from `wav`
    source: int  # index of the audio it was cut from
    start: int  # its first fbank frame in that audio
    keep: tuple[int, int | None] = (0, None)  # CTC columns of this window that are kept (end None: to its end)
    last: bool = True  # the item's last window
    wav: Tensor | None = None  # its samples, where `run` computes its features on the device
    frames: int = 0  # fbank frames (set from feats when they are given)

    def __post_init__(self):
        if self.feats is not None:
            self.frames = self.feats.shape[0]


def window_of(samples: Tensor, cfg: FeatureConfig, on_device: bool, **where) -> Window:
    """A window of `samples`: featurised here, or (on_device) carrying them for `run` to featurise
    with its batch on the device (a copy, so that the file's block it was cut from is let go)."""
    if on_device:
        return Window(None, wav=samples.clone(), frames=cfg.frames(samples.numel()), **where)
    return Window(fbank(samples, cfg), **where)


@dataclass
class Failed:
    """An item that could not be read: its windows stop here."""

    source: int
    error: Exception


class WindowedModel:
    """A model on a device ("auto": CUDA when there is one), run over windows of audio.

    runtime "onnx" runs the forward passes through `astctc.export.OnnxModel` (the model's
    model.onnx) instead of PyTorch; batch_size caps the windows per forward pass; context is
    seconds of left/right context per window (None: DEFAULT_CONTEXT_SECONDS for a CTC model,
    0 for a classifier, whose window probabilities are averaged; at most a quarter of a window);
    window is seconds per window (None: the position table's length; shorter suits a model
    trained on short utterances, whose later positions were never trained). features_on: where
    fbank runs, auto (on the device when it is a GPU and the runtime torch) | device | cpu;
    attention_backend: packed attention's kernel in this process (models/attention.py).
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        batch_seconds: float = 120.0,
        runtime: str = "torch",
        batch_size: int | None = None,
        context: float | None = None,
        window: float | None = None,
        features_on: str = "auto",
        attention_backend: str = "auto",
    ):
        loaded = load_model(model_dir, device)
        self.model, self.features, self.tokenizer = loaded.model, loaded.features, loaded.tokenizer
        self.device = loaded.device
        self.model.cfg.encoder.attention_backend = attention_backend  # how this process runs it
        self.frame_seconds = loaded.frame_seconds  # seconds per CTC output frame
        enc = self.model.cfg.encoder
        self.window = enc.max_frames  # fbank frames per window
        self.stride = enc.stride_time  # fbank frames per CTC frame
        self.batch_seconds = batch_seconds
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        if runtime not in ("torch", "onnx"):
            raise ValueError(f"runtime must be torch or onnx, not {runtime!r}")
        self.runtime = runtime
        self.onnx = None
        if runtime == "onnx":
            from .export import OnnxModel  # lazy: the torch runtime needs neither it nor onnxruntime

            ctc = self.model.cfg.ctc
            self.onnx = OnnxModel(model_dir, vocab_size=ctc.vocab_size if ctc is not None else None)
        if features_on not in ("auto", "device", "cpu"):
            raise ValueError(f"features_on must be auto, device or cpu, not {features_on!r}")
        if features_on == "device" and runtime == "onnx":
            raise ValueError("features_on device needs runtime torch (onnxruntime takes features from the CPU)")
        gpu = self.device.type == "cuda" and runtime == "torch"
        self.features_on_device = features_on == "device" or (features_on == "auto" and gpu)
        if window is not None:
            frames = int(round(window * 1000 / self.features.frame_shift_ms))
            if not enc.patch_time <= frames <= enc.max_frames:
                raise ValueError(
                    f"window of {window:g} s must be within one patch and the position table's "
                    f"{self.seconds(enc.max_frames):g} s"
                )
            self.window = frames
        self.columns = enc.time_columns(self.window)  # CTC frames of a full window
        if context is None:
            context = DEFAULT_CONTEXT_SECONDS if self.tokenizer is not None else 0.0
        if context < 0:
            raise ValueError(f"context must be >= 0 seconds, got {context}")
        # context in CTC frames, rounded to whole frames, at most a quarter of a window
        self.context = min(int(round(context / self.frame_seconds)), (self.columns - 1) // 4)
        self.centre = self.columns - 2 * self.context  # CTC frames kept from a middle window
        # fbank frames between window starts: whole CTC frames, so that kept spans tile the file
        self.step = self.centre * self.stride
        # windows read and run at once by `chunks`: four full batches of full-length windows
        self.chunk_frames = self.window * max(1, 4 * int(batch_seconds // self.seconds(self.window)))

    def seconds(self, frames: int) -> float:
        """Seconds of audio in `frames` fbank frames."""
        return frames * self.features.frame_shift_ms / 1000

    # ---- windows: the one place audio is cut ------------------------------------------------

    def iter_windows(self, audio: Sequence[Audio]) -> Iterator[Window]:
        """The windows of each file or waveform, in order, read lazily: window k of an item
        holds fbank frames [k * step, k * step + window), computed from the samples those
        frames cover ((window - 1) * shift + length of them). A bad item raises."""
        for n, a in enumerate(audio):
            yield from self._item_windows(n, a)

    def windows(self, audio: Sequence[Audio]) -> list[Window]:
        """All windows of `audio` at once (fine for clips; long files: `chunks`)."""
        return list(self.iter_windows(audio))

    def _item_windows(self, n: int, a: Audio) -> Iterator[Window]:
        cfg = self.features
        hop = int(cfg.sample_rate * cfg.frame_shift_ms / 1000)
        # samples of a full window (Kaldi: (window - 1) * hop + win; Whisper: window * hop), between windows
        span, step = cfg.samples_for(self.window), self.step * hop
        c, centre = self.context, self.centre
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
            if have < span + hop:
                continue
            buf = torch.cat(pending) if len(pending) > 1 else pending[0]
            off = 0
            # a window is not the last while a frame exists past it (span + hop samples)
            while have - off >= span + hop:
                lo = 0 if start == 0 else c
                where = dict(source=n, start=start, keep=(lo, c + centre), last=False)
                yield window_of(buf[off : off + span], cfg, self.features_on_device, **where)
                start += self.step
                off += step
            pending, have = [buf[off:].clone()], have - off  # clone: let the rest of buf go
            del buf
        if cfg.frames(total) < 1:
            raise AudioError(
                f"{label}: {total} sample{'s' if total != 1 else ''} ({1000 * total / cfg.sample_rate:g} ms)"
                f" is shorter than one {cfg.frame_length_ms:g} ms analysis window"
            )
        if cfg.frames(have) >= 1:  # the last window (at most a full one), kept to its end
            where = dict(source=n, start=start, keep=(0 if start == 0 else c, None), last=True)
            yield window_of(torch.cat(pending), cfg, self.features_on_device, **where)

    def _safe_windows(self, audio: Sequence[Audio], dropped: set[int] | None = None) -> Iterator[Window | Failed]:
        """iter_windows, with an item that fails reported as `Failed` and the others read on; an
        item put in `dropped` (its windows failed to run) is read no further."""
        for n, a in enumerate(audio):
            try:
                for w in self._item_windows(n, a):
                    yield w
                    if dropped and n in dropped:
                        break
            except Exception as e:  # noqa: BLE001 - any failure (an odd file's MemoryError too) is this item's
                yield Failed(n, item_error(item_label(a, n), "reading", e))

    def chunks(self, audio: Sequence[Audio]) -> Iterator[list[Window]]:
        """Consecutive windows of `audio` in lists of about `chunk_frames` frames: what is read,
        featurised and run at once, so that a long file is never held whole."""
        yield from self._chunks(self.iter_windows(audio))  # type: ignore[arg-type]

    def _chunks(self, windows: Iterator[Window | Failed]) -> Iterator[list[Window | Failed]]:
        chunk: list[Window | Failed] = []
        frames = 0
        for w in windows:
            chunk.append(w)
            frames += w.frames if isinstance(w, Window) else 0
            if frames >= self.chunk_frames:
                yield chunk
                chunk, frames = [], 0
        if chunk:
            yield chunk

    @torch.no_grad()
    def run(self, windows: Sequence[Window]) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
        """(indices into `windows`, model outputs) per batch: shortest windows first, as many
        as fit in `batch_seconds` of padded audio (and at most `batch_size`)."""
        order = sorted(range(len(windows)), key=lambda i: windows[i].frames)
        cap = self.batch_size or len(order)
        i = 0
        while i < len(order):
            j = i + 1
            while (
                j < len(order)
                and j - i < cap
                and self.seconds((j + 1 - i) * windows[order[j]].frames) <= self.batch_seconds
            ):
                j += 1
            idx = order[i:j]
            lengths = torch.tensor([windows[k].frames for k in idx])  # on the CPU: no device sync
            x = self._batch_features([windows[k] for k in idx])
            if self.onnx is not None:
                yield idx, self.onnx(x, lengths)
            else:
                yield idx, self.model(x, lengths)
            i = j

    def _batch_features(self, windows: Sequence[Window]) -> Tensor:
        """(B, T, bins) features of windows sorted by length, zero-padded, on the model's device
        (the CPU for onnxruntime): stacked from their own, or computed there from their samples."""
        if windows[0].feats is None:
            samples = torch.tensor([w.wav.numel() for w in windows])
            wavs = torch.zeros(len(windows), int(samples.max()))
            for b, w in enumerate(windows):
                wavs[b, : w.wav.numel()] = w.wav
            if self.device.type == "cuda":
                wavs = wavs.pin_memory()
            return fbank_batch(wavs.to(self.device, non_blocking=True), samples, self.features)
        x = torch.zeros(len(windows), windows[-1].frames, windows[0].feats.shape[1])
        for b, w in enumerate(windows):
            x[b, : w.frames] = w.feats
        return x if self.onnx is not None else x.to(self.device)

    # ---- stitched CTC log-probabilities -------------------------------------------------------

    def window_log_probs(self, windows: Sequence[Window]) -> list[Tensor]:
        """Each window's kept CTC log-probabilities (its centre, or edge), float32 on the CPU."""
        out: list[Tensor | None] = [None] * len(windows)
        for idx, r in self.run(windows):
            for b, k in enumerate(idx):
                lo, hi = windows[k].keep
                out[k] = r["log_probs"][b, : int(r["lengths"][b])][lo:hi].float().cpu()
        return out  # type: ignore[return-value]

    def _isolated_log_probs(self, windows: Sequence[Window]) -> list[Tensor | Exception]:
        """window_log_probs; when a batch fails, each item's windows are run again alone, so one
        item that fails (or a batch too big for memory) fails only its own windows."""
        try:
            return self.window_log_probs(windows)  # type: ignore[return-value]
        except Exception as e:  # noqa: BLE001 - retried item by item below
            if len({w.source for w in windows}) == 1:
                return [e] * len(windows)
        out: list[Tensor | Exception] = []
        for source in dict.fromkeys(w.source for w in windows):  # consecutive: a chunk is in order
            own = [w for w in windows if w.source == source]
            try:
                out += self.window_log_probs(own)
            except Exception as e:  # noqa: BLE001 - this item's failure, reported for it
                out += [e] * len(own)
        return out

    def item_log_probs(
        self, items: Sequence[Audio], progress: Callable[[float], None] | None = None
    ) -> Iterator[tuple[int, Tensor | Exception]]:
        """(index, stitched (T, V) CTC log-probabilities of the whole item, or the exception it
        failed with, naming it) for each item, in input order, as soon as its last window has
        run. Frame t starts at t * frame_seconds. `progress(seconds)` gets the audio seconds just
        processed. An item that cannot be read, or whose windows fail to run, fails alone."""
        if self.tokenizer is None:
            raise ValueError("model has no CTC head: no log-probabilities to stitch")
        parts: list[Tensor] = []  # the kept pieces of the item being read
        dropped: set[int] = set()  # items whose windows failed to run: read no further
        for chunk in self._chunks(self._safe_windows(items, dropped)):
            ws = [w for w in chunk if isinstance(w, Window)]
            lps = iter(self._isolated_log_probs(ws)) if ws else iter(())
            for w in chunk:
                if isinstance(w, Failed):
                    parts = []
                    yield w.source, w.error
                    continue
                lp = next(lps)
                if w.source in dropped:
                    continue
                if isinstance(lp, Exception):
                    dropped.add(w.source)
                    parts = []
                    yield w.source, item_error(item_label(items[w.source], w.source), "the model", lp)
                    continue
                parts.append(lp)
                if progress is not None:
                    progress(lp.shape[0] * self.frame_seconds)
                if w.last:
                    yield w.source, torch.cat(parts) if len(parts) > 1 else parts[0]
                    parts = []
            del chunk, ws
