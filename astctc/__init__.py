"""astctc: speech recognition with the Audio Spectrogram Transformer and a per-frame CTC head."""

__version__ = "0.1.0"
