"""astctc: speech recognition with the Audio Spectrogram Transformer and a per-frame CTC head.

    >>> import astctc
    >>> model = astctc.load_model("recipes/mini/exp/mini/model")   # or "hf://org/name"
    >>> result = model.transcribe("audio.flac")                    # a path, or a 16 kHz waveform
    >>> print(result.text)
    >>> for w in result.words:
    ...     print(w.word, w.start, w.end, w.confidence)

`import astctc` stays cheap: torch and the model code load at the first `load_model`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__version__ = "0.1.0"


def load_model(model: str | Path, device: str = "auto", runtime: str = "torch"):
    """A `astctc.transcribe.Transcriber` for the CTC model in `model` (a model directory or
    `hf://org/name`), on `device` ("auto": CUDA when there is one), run by PyTorch or, with
    runtime="onnx", by onnxruntime over the model's model.onnx."""
    # imported by name when called: `import astctc` stays free of torch, and a module that
    # imports the package only for __version__ does not thereby depend on the top layer
    return importlib.import_module(".transcribe", __name__).Transcriber(model, device=device, runtime=runtime)
