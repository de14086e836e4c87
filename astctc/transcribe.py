"""Audio to text with word times and confidences, from Python or the command line.

    >>> import astctc
    >>> asr = astctc.load_model("recipes/mini/exp/mini/model")
    >>> hyp = asr.transcribe("a.wav")
    >>> hyp.text, [(w.word, w.start, w.end, w.confidence) for w in hyp.words]

Each item (a file, or a 1-D waveform at 16 kHz) is run through `WindowedModel.item_log_probs`:
overlapping windows whose centres are stitched into the CTC log-probabilities of the whole item,
read as a stream (bounded memory), then decoded once, greedily or with a `BeamSearch`. An item
that cannot be read fails alone: `transcribe_all` yields its exception and goes on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .decode import BeamConfig, BeamSearch, Hypothesis, greedy_decode
from .inference import Audio, WindowedModel, item_error, item_label
from .words import greedy_words

Item = Audio | np.ndarray  # a path, encoded bytes, or a 1-D waveform (Tensor or array) at 16 kHz


class Transcriber(WindowedModel):
    """A CTC model ready to transcribe: `model` is a model directory or `hf://org/name`; device
    "auto" picks CUDA when there is one; runtime "onnx" runs the model's model.onnx (made by
    `astctc export --model DIR --format onnx`); batch_size caps the windows per forward pass."""

    def __init__(
        self,
        model: str | Path,
        device: str = "auto",
        batch_seconds: float = 120.0,
        runtime: str = "torch",
        batch_size: int | None = None,
    ):
        super().__init__(model, device, batch_seconds, runtime=runtime, batch_size=batch_size)
        if self.tokenizer is None:
            raise ValueError(f"{model}: model has no CTC head, nothing to transcribe with")
        self.name = str(model)

    # ---- decoding ---------------------------------------------------------------------------

    def beam_search(self, lm: str | Path | None = None, cfg: BeamConfig | None = None, workers: int = 1) -> BeamSearch:
        """A beam search over this model's tokens, with the KenLM `lm` (a .bin/.arpa or a folder
        with one) when given; close it with `.close()` when workers > 1."""
        return BeamSearch(self.tokenizer, lm, cfg, self.frame_seconds, num_workers=workers)

    def decode(self, log_probs: torch.Tensor, search: BeamSearch | None = None) -> Hypothesis:
        """Text and words (times in seconds, confidence in [0, 1]) of one item's (T, V) log-probs."""
        if search is None:
            return greedy_words(log_probs, self.tokenizer, self.frame_seconds)
        return search.decode_one(log_probs.numpy())

    # ---- items ------------------------------------------------------------------------------

    def transcribe_all(
        self, items: Iterable[Item], search: BeamSearch | None = None, progress: Callable[[float], None] | None = None
    ) -> Iterator[tuple[int, Hypothesis | Exception]]:
        """(index, Hypothesis, or the exception the item failed with) for each item, in input
        order; `progress(seconds)` is called with the seconds of audio just run."""
        prepared: list[Audio | Exception] = []
        for n, a in enumerate(items):
            try:
                prepared.append(as_audio(a, n))
            except ValueError as e:
                prepared.append(e)
        good = [n for n, a in enumerate(prepared) if not isinstance(a, Exception)]
        next_n = 0  # the items before it have been yielded

        def failures_before(limit: int) -> Iterator[tuple[int, Exception]]:
            """The items rejected above, from next_n up to `limit` (the rest there are good)."""
            nonlocal next_n
            for m in range(next_n, limit):
                if isinstance(prepared[m], Exception):
                    yield m, prepared[m]  # type: ignore[misc]
            next_n = max(next_n, limit)

        for k, r in self.item_log_probs([prepared[n] for n in good], progress):
            n = good[k]
            yield from failures_before(n)
            next_n = n + 1
            if isinstance(r, Exception):
                yield n, r
                continue
            try:
                yield n, self.decode(r, search)
            except Exception as e:  # noqa: BLE001 - a search that fails on one item fails that item
                yield n, item_error(item_label(prepared[n], n), "decoding", e)  # type: ignore[arg-type]
        yield from failures_before(len(prepared))

    def transcribe(self, audio: Item, search: BeamSearch | None = None, lm: str | Path | None = None) -> Hypothesis:
        """Text, words with start/end times (s) and confidence of one item: a file path, or a 1-D
        float waveform (torch Tensor or numpy array) sampled at 16 kHz; any length. Greedy, or
        beam search with `search`, or with a new BeamSearch over the KenLM `lm`. Raises the
        item's error (AudioError, a ValueError, naming it) when it cannot be read."""
        own = None
        if search is None and lm is not None:
            search = own = self.beam_search(lm)
        try:
            ((_, r),) = list(self.transcribe_all([audio], search))
        finally:
            if own is not None:
                own.close()
        if isinstance(r, Exception):
            raise r
        return r

    def __call__(self, audio: Item | Sequence[Item]) -> str | list[str]:
        """The greedy transcript of one item (a string), or of each of a list (raises the first
        error)."""
        single = not isinstance(audio, (list, tuple))
        items = [as_audio(a, n) for n, a in enumerate([audio] if single else audio)]
        texts: list[str] = [""] * len(items)
        for n, r in self.item_log_probs(items):
            if isinstance(r, Exception):
                raise r
            texts[n] = greedy_decode(r[None], torch.tensor([r.shape[0]]), self.tokenizer)[0]
        return texts[0] if single else texts


def as_audio(a: Item, n: int = 0) -> Audio:
    """A path or bytes unchanged; a numpy waveform as a float32 Tensor; a waveform must be 1-D."""
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if isinstance(a, torch.Tensor):
        if a.dim() != 1:
            raise ValueError(f"waveform {n}: expected a 1-D waveform at 16 kHz, got shape {tuple(a.shape)}")
        return a.float()
    return a


# what a folder is searched for: the containers libsndfile (1.1+, as soundfile ships it) decodes
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64")


def find_audio(
    inputs: Sequence[str | Path], list_file: str | Path | None = None, problems: list[str] | None = None
) -> list[str]:
    """The audio files `inputs` name, in order: a file as it is (whatever its extension); a folder:
    its files with an audio extension (AUDIO_EXTENSIONS, any case), recursively, sorted; then the
    paths in `list_file`, one a line (blank lines and # comments skipped; relative paths are
    relative to the list's folder). A path that does not exist is kept, to fail alone when read;
    a folder without audio is a ValueError naming it; a path given twice is kept once.

    What a folder holds but cannot be read (a subfolder without permission, a symbolic link whose
    target is gone: it may have been audio or a folder of it) is `<path>: <why>` in `problems`,
    when given, and skipped; without `problems` it is an OSError naming it."""
    paths = [str(p) for p in inputs]
    if list_file is not None:
        paths += _list_file(Path(list_file))
    out: list[str] = []
    seen: set[str] = set()
    for p in paths:
        found = _folder_audio(Path(p), problems) if os.path.isdir(p) else [p]  # isdir: never raises
        for f in found:
            key = str(Path(f).resolve())
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def _list_file(lf: Path) -> list[str]:
    """The paths a list file names (see find_audio)."""
    try:
        lines = lf.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{lf}: no such list file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{lf}: list file is not UTF-8 text ({e.reason} at byte {e.start})") from None
    stripped = (line.strip() for line in lines)
    return [s if Path(s).is_absolute() else str(lf.parent / s) for s in stripped if s and not s.startswith("#")]


def _folder_audio(folder: Path, problems: list[str] | None) -> list[str]:
    """The audio files below `folder`, sorted; what cannot be read goes to `problems` (or raises)."""
    found: list[str] = []
    bad: list[str] = []
    _scan(str(folder), found, bad)
    if bad and problems is None:
        raise OSError(bad[0])
    if problems is not None:
        problems += bad
    if not found and not bad:
        raise ValueError(f"{folder}: no audio files in this folder ({' '.join(AUDIO_EXTENSIONS)})")
    return sorted(found)


def _scan(folder: str, found: list[str], bad: list[str]) -> None:
    """Audio files below `folder` into `found`; `<path>: <why>` into `bad` for what cannot be read.
    Symbolic links to folders are not followed (as Path.rglob did: no loops)."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as e:
        bad.append(f"{folder}: cannot read this folder ({e.strerror or e})")
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                _scan(e.path, found, bad)
            elif e.is_symlink() and not os.path.exists(e.path):
                bad.append(f"{e.path}: broken symbolic link (its target {os.readlink(e.path)} does not exist)")
            elif Path(e.name).suffix.lower() in AUDIO_EXTENSIONS and e.is_file():
                found.append(e.path)
        except OSError as err:
            bad.append(f"{e.path}: cannot read ({err.strerror or err})")


def transcribe(files: Sequence[Item], model_dir: str | Path, device: str = "auto") -> list[str]:
    """One-call API: the greedy transcript of each of `files` with the model in `model_dir`."""
    return Transcriber(model_dir, device)(list(files))  # type: ignore[return-value]
