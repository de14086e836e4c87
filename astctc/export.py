"""ONNX export of a model's encoder + CTC head, and an onnxruntime stand-in for the PyTorch model.

`export_onnx` writes <model_dir>/model.onnx: feats (B, T, F) float32 + lengths (B,) int64 ->
log_probs (B, T', V) float32 + lengths (B,) int64, with batch and time dynamic. Classifier heads
are left out (the ONNX runtime serves transcription only). The graph is the encoder's padded
path written without Python branches on values: the key-padding mask is always computed from
the lengths (all True when nothing is padded), so one graph serves every batch; SDPA with an
all-True mask equals SDPA without one, and the packed path's outputs equal the padded path's
on the valid frames (tests/test_packing.py), so log-probs match PyTorch's within float error.

`OnnxModel` runs that file with onnxruntime and returns torch tensors, the same dict as
ASTModel's CTC outputs, so WindowedModel can swap it in for the PyTorch model.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.encoder import EncoderOutput, Grid
from .models.model import ASTModel, load_model

ONNX_NAME = "model.onnx"
INPUTS = ("feats", "lengths")
OUTPUTS = ("log_probs", "lengths_out")


class CTCGraph(nn.Module):
    """ASTModel's encoder + CTC head as one traceable function of (feats, lengths).

    Inputs must have T >= patch_time frames (OnnxModel pads shorter ones, as the encoder does)."""

    def __init__(self, model: ASTModel):
        super().__init__()
        if model.ctc is None:
            raise ValueError("model has no CTC head: nothing to export")
        self.encoder, self.ctc = model.encoder, model.ctc

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        enc = self.encoder
        cfg = enc.cfg
        B = feats.shape[0]
        columns = cfg.time_columns(lengths.to(torch.long))  # (B,)
        frame_keep = torch.arange(feats.shape[1], device=feats.device)[None, :] < lengths[:, None]
        x = enc.embeddings(feats, frame_keep)  # the Whisper stem masks past each length
        total = (x.shape[1] - cfg.num_cls_tokens) // cfg.freq_rows
        # key-padding mask from the lengths, always (no branch on whether the batch is padded)
        valid_t = torch.arange(total, device=feats.device)[None, :] < columns[:, None]
        keep = torch.cat(
            [
                torch.ones(B, cfg.num_cls_tokens, dtype=torch.bool, device=feats.device),
                valid_t[:, None, :].expand(B, cfg.freq_rows, total).reshape(B, -1),
            ],
            dim=1,
        )
        grid = Grid(cfg, total, keep, None, B)
        if enc.conv_pos is not None:
            x = x + F.gelu(grid.conv(x, enc.conv_pos))
        mask = keep[:, None, None, :]
        for block in enc.encoder.layer:
            x = block(x, mask, grid)
        out = EncoderOutput(enc.layernorm(x), columns, cfg.num_cls_tokens, cfg.freq_rows)
        return self.ctc(out)


def _local(spec: str | Path) -> Path:
    """A model directory as a local path: hf://org/name through the Hub cache (astctc.hub)."""
    if str(spec).startswith("hf://"):
        from .hub import resolve_model

        return resolve_model(spec)
    return Path(spec)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def export_onnx(model_dir: str | Path, out: str | Path | None = None, opset: int | None = None) -> Path:
    """Export the encoder + CTC head of `model_dir` (a directory or hf://) to ONNX; returns the
    path written (default <model_dir>/model.onnx), with a model.onnx.json beside it."""
    import astctc

    loaded = load_model(model_dir, "cpu")
    model = loaded.model.eval()
    cfg = model.cfg.encoder
    graph = CTCGraph(model).eval()
    out = Path(out) if out is not None else _local(model_dir) / ONNX_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    # example input: two utterances, the second padded, long enough for several columns
    T = min(cfg.max_frames, max(4 * cfg.patch_time, 8 * cfg.stride_time + cfg.patch_time))
    feats = torch.randn(2, T, cfg.num_mel_bins)
    lengths = torch.tensor([T, max(cfg.patch_time, T // 2)])
    exporter = "dynamo"
    # the exporter's optimiser logs every rewrite at INFO: keep the command's output readable
    for name in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            batch = torch.export.Dim("batch", min=1, max=4096)
            time = torch.export.Dim("time", min=cfg.patch_time, max=cfg.max_frames)
            prog = torch.onnx.export(
                graph,
                (feats, lengths),
                dynamo=True,
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_shapes={"feats": {0: batch, 1: time}, "lengths": {0: batch}},
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
            prog.save(str(out), external_data=False)
        except Exception as e:  # noqa: BLE001 - any dynamo failure: the TorchScript exporter
            exporter = f"torchscript (dynamo failed: {type(e).__name__})"
            torch.onnx.export(
                graph,
                (feats, lengths),
                str(out),
                dynamo=False,
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_axes={
                    "feats": {0: "batch", 1: "time"},
                    "lengths": {0: "batch"},
                    "log_probs": {0: "batch", 1: "frames"},
                    "lengths_out": {0: "batch"},
                },
                opset_version=opset or 17,
            )
    import onnx

    opsets = onnx.load(str(out), load_external_data=False).opset_import
    meta = {
        "opset": max((o.version for o in opsets if o.domain in ("", "ai.onnx")), default=None),
        "inputs": {"feats": "(B, T, F) float32", "lengths": "(B,) int64"},
        "outputs": {"log_probs": "(B, T', V) float32", "lengths_out": "(B,) int64"},
        "num_mel_bins": cfg.num_mel_bins,
        "patch_time": cfg.patch_time,
        "max_frames": cfg.max_frames,
        "exporter": exporter,
        "astctc": getattr(astctc, "__version__", "unknown"),
        "torch": torch.__version__,
    }
    _sidecar(out).write_text(json.dumps(meta, indent=2))
    return out


class OnnxModel:
    """A model.onnx run with onnxruntime: `(feats (B, T, F), lengths (B,)) -> {"log_probs", "lengths"}`,
    torch tensors on the CPU, like ASTModel's CTC outputs. `threads`: intra-op threads (None:
    onnxruntime's default, all cores); `cuda`: the CUDA provider when onnxruntime has one."""

    def __init__(self, model_dir_or_onnx_path: str | Path, threads: int | None = None, cuda: bool = False):
        p = _local(model_dir_or_onnx_path)
        path = p if p.suffix == ".onnx" else p / ONNX_NAME
        if not path.is_file():
            where = p if p.suffix != ".onnx" else p.parent
            raise FileNotFoundError(f"{path}: no ONNX model; `astctc export --model {where} --format onnx` makes it")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        meta = _sidecar(path)
        self.meta = json.loads(meta.read_text()) if meta.is_file() else {}
        self.patch_time = int(self.meta.get("patch_time", 1))

    def __call__(self, feats: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        B, T, _ = feats.shape
        if lengths is None:
            lengths = torch.full((B,), T)
        if T < self.patch_time:  # shorter than one patch: pad, as the encoder does
            feats = F.pad(feats, (0, 0, 0, self.patch_time - T))
        x = feats.detach().to("cpu", torch.float32).contiguous().numpy()
        n = lengths.detach().to("cpu", torch.int64).contiguous().numpy()
        log_probs, out_lengths = self.session.run(list(OUTPUTS), {"feats": x, "lengths": n})
        return {"log_probs": torch.from_numpy(log_probs), "lengths": torch.from_numpy(out_lengths)}


def batch_features(feats: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Utterances' (T_i, F) features -> zero-padded (B, T, F) and lengths (B,) int64."""
    x = torch.zeros(len(feats), max(f.shape[0] for f in feats), feats[0].shape[1])
    for b, f in enumerate(feats):
        x[b, : f.shape[0]] = f
    return x, torch.tensor([f.shape[0] for f in feats], dtype=torch.long)


@torch.no_grad()
def max_difference(model: ASTModel, onnx: OnnxModel, feats: Tensor, lengths: Tensor) -> float:
    """Max |log_probs_onnx - log_probs_torch| over the valid frames of a batch; ValueError if
    the two disagree on the output lengths."""
    ref, got = model(feats, lengths), onnx(feats, lengths)
    if not torch.equal(ref["lengths"].cpu().long(), got["lengths"].long()):
        raise ValueError(f"output lengths differ: torch {ref['lengths'].tolist()}, onnx {got['lengths'].tolist()}")
    diff = 0.0
    for b, n in enumerate(ref["lengths"].tolist()):
        diff = max(diff, (ref["log_probs"][b, :n].float().cpu() - got["log_probs"][b, :n]).abs().max().item())
    return diff
