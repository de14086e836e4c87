"""Export command: a model directory's encoder + CTC head to ONNX, checked against PyTorch."""

from __future__ import annotations

from .common import add_parser

TOLERANCE = 1e-4  # max |log-prob difference| the export must stay within (issue 25)


def register(sub) -> None:
    s = add_parser(
        sub, "export", "export a model's encoder + CTC head (ONNX), then check it against PyTorch", cmd_export
    )
    s.add_argument("--model", required=True, help="model directory (or hf://org/name with --out)")
    s.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    s.add_argument(
        "--out",
        default=None,
        help="file to write (default: <model>/model.onnx; needed for hf://org/name: export never writes into "
        "the Hugging Face cache)",
    )
    s.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    s.add_argument(
        "--audio",
        nargs="*",
        default=None,
        help="audio files for the parity check, run as one padded batch (default: two random inputs)",
    )


def cmd_export(args) -> None:
    import torch

    from ..audio import load_audio
    from ..export import OnnxModel, batch_features, export_onnx, max_difference
    from ..features import fbank
    from ..models.model import load_model

    out = export_onnx(args.model, args.out, args.opset)
    print(f"wrote {out}")
    loaded = load_model(args.model, "cpu")
    enc = loaded.model.cfg.encoder
    if args.audio:
        feats = [fbank(load_audio(a), loaded.features)[: enc.max_frames] for a in args.audio]
        what = f"{len(feats)} audio file(s)"
    else:
        gen = torch.Generator().manual_seed(0)
        n = min(enc.max_frames, 300)
        feats = [
            torch.randn(n, enc.num_mel_bins, generator=gen),
            torch.randn(n // 2 + 1, enc.num_mel_bins, generator=gen),
        ]
        what = "2 random inputs"
    x, lengths = batch_features(feats)
    onnx = OnnxModel(out, model_dir=args.model, vocab_size=loaded.model.cfg.ctc.vocab_size)  # its record checked too
    diff = max_difference(loaded.model, onnx, x, lengths)
    print(f"parity on {what} (frames {lengths.tolist()}): max |log-prob difference| = {diff:.2e}")
    if not diff <= TOLERANCE:
        raise ValueError(f"{out}: ONNX log-probs differ from PyTorch's by {diff:.2e} > {TOLERANCE:g}")
