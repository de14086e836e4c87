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

An export records what it was made from in the ONNX file's own metadata (it travels with the
file): the sha256 of model.safetensors and config.json, the vocabulary size and the patch
length. OnnxModel, given the model directory, refuses a model.onnx made from other weights
(`astctc average` into the folder, a Hub repo whose model.onnx is older than its weights) or
made before this record existed, with one line that says to re-export. model.onnx.json beside
it repeats the record for people; nothing reads it. Files are written through a temporary file
and a rename, so a symbolic link at the target is replaced, never written through, and never
into the Hugging Face cache (a hf:// model needs an explicit --out).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
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
SOURCE_FILES = ("model.safetensors", "config.json")  # what the graph is made of: the record's hashes
RECORD = "astctc."  # prefix of the ONNX metadata keys an export writes


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


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read a megabyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def source_record(model_dir: Path) -> dict[str, str]:
    """{"<file>.sha256": hex digest} of the model files the graph is made from."""
    return {f"{name}.sha256": sha256(model_dir / name) for name in SOURCE_FILES}


def _target(spec: str | Path, out: str | Path | None) -> Path:
    """Where export writes: `out`, or <model_dir>/model.onnx; never into the Hub cache."""
    from .hub import in_hub_cache

    if out is None and str(spec).startswith("hf://"):
        raise ValueError(f"{spec}: a Hub model is read from the Hub cache, which export never writes: give --out FILE")
    target = Path(out) if out is not None else _local(spec) / ONNX_NAME
    if in_hub_cache(target):
        raise ValueError(f"{target}: inside the Hugging Face cache, which export never writes: give --out elsewhere")
    return target


def _write_graph(graph: CTCGraph, feats: Tensor, lengths: Tensor, out: Path, opset: int | None) -> str:
    """The graph as ONNX at `out` (dynamo, else TorchScript); the exporter that made it."""
    cfg = graph.encoder.cfg
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
    return exporter


def export_onnx(model_dir: str | Path, out: str | Path | None = None, opset: int | None = None) -> Path:
    """Export the encoder + CTC head of `model_dir` (a directory or hf://) to ONNX; returns the
    path written (default <model_dir>/model.onnx; a hf:// model needs `out`), with a
    model.onnx.json beside it. The ONNX metadata records the source files' sha256."""
    import onnx

    import astctc

    target = _target(model_dir, out)
    loaded = load_model(model_dir, "cpu")
    model = loaded.model.eval()
    cfg = model.cfg.encoder
    graph = CTCGraph(model).eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    # example input: two utterances, the second padded, long enough for several columns
    T = min(cfg.max_frames, max(4 * cfg.patch_time, 8 * cfg.stride_time + cfg.patch_time))
    feats = torch.randn(2, T, cfg.num_mel_bins)
    lengths = torch.tensor([T, max(cfg.patch_time, T // 2)])
    record = {
        **source_record(_local(model_dir)),
        "vocab_size": str(model.cfg.ctc.vocab_size),
        "num_mel_bins": str(cfg.num_mel_bins),
        "patch_time": str(cfg.patch_time),
    }
    tmp = target.with_name(f".{os.getpid()}.export.part")  # short: fits wherever the target's name does
    try:
        exporter = _write_graph(graph, feats, lengths, tmp, opset)
        proto = onnx.load(str(tmp), load_external_data=False)
        for key, value in record.items():
            proto.metadata_props.add(key=RECORD + key, value=value)
        onnx.save(proto, str(tmp))
        os.replace(tmp, target)  # a link at the target is replaced, not written through
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": {"feats": "(B, T, F) float32", "lengths": "(B,) int64"},
        "outputs": {"log_probs": "(B, T', V) float32", "lengths_out": "(B,) int64"},
        "max_frames": cfg.max_frames,
        "exporter": exporter,
        "astctc": getattr(astctc, "__version__", "unknown"),
        "torch": torch.__version__,
        "source": {"model": str(model_dir), **record},  # repeated from the ONNX metadata, for people
    }
    side = _sidecar(target)
    tmp = side.with_name(f".{os.getpid()}.export.part")
    try:
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, side)
    finally:
        tmp.unlink(missing_ok=True)
    return target


class OnnxModel:
    """A model.onnx run with onnxruntime: `(feats (B, T, F), lengths (B,)) -> {"log_probs", "lengths"}`,
    torch tensors on the CPU, like ASTModel's CTC outputs. `threads`: intra-op threads (None:
    onnxruntime's default, all cores); `cuda`: the CUDA provider when onnxruntime has one.

    Given a model directory, it runs <dir>/model.onnx after checking that the export's record
    matches the directory's model.safetensors and config.json; given a .onnx file, it checks it
    against `model_dir` when that is given. `vocab_size` (when given) must be the graph's. Every
    failure, onnxruntime's included, is one line naming the file."""

    def __init__(
        self,
        model_dir_or_onnx_path: str | Path,
        threads: int | None = None,
        cuda: bool = False,
        model_dir: str | Path | None = None,
        vocab_size: int | None = None,
    ):
        p = _local(model_dir_or_onnx_path)
        path = p if p.suffix == ".onnx" else p / ONNX_NAME
        where = p if p.suffix != ".onnx" else p.parent
        spec = model_dir or (model_dir_or_onnx_path if p.suffix != ".onnx" else where)
        hub = str(spec).startswith("hf://")  # a Hub model is exported to a file of one's own
        self.redo = f"re-export it: astctc export --model {spec} --format onnx" + (" --out FILE" if hub else "")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ONNX model; `astctc export --model {where} --format onnx` makes it")
        self.path = path
        self.session = self._session(path, threads, cuda)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.record = {k[len(RECORD) :]: v for k, v in meta.items() if k.startswith(RECORD)}
        source = _local(model_dir) if model_dir is not None else (p if p.suffix != ".onnx" else None)
        if source is not None:
            self._check_source(source)
        self.vocab_size = vocab_size
        self._check_vocab(vocab_size)
        self.patch_time = int(self.record.get("patch_time", 1))

    def _session(self, path: Path, threads: int | None, cuda: bool):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            return ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types: truncated, junk, invalid graph
            raise ValueError(f"{path}: onnxruntime cannot load it ({_first_line(e)}); {self.redo}") from None

    def _check_source(self, model_dir: Path) -> None:
        """ValueError naming the file when it was not exported from `model_dir`'s weights and config."""
        if not all(f"{name}.sha256" in self.record for name in SOURCE_FILES):
            raise ValueError(f"{self.path}: records no source weights (an older export): {self.redo}")
        for name in SOURCE_FILES:
            if not (model_dir / name).is_file():
                raise FileNotFoundError(f"{model_dir}: no {name} to check {self.path} against")
            if sha256(model_dir / name) != self.record[f"{name}.sha256"]:
                raise ValueError(f"{self.path}: exported from another {name} than the one in {model_dir}: {self.redo}")

    def _check_vocab(self, vocab_size: int | None) -> None:
        """ValueError naming the file when its output vocabulary is not `vocab_size`."""
        shape = self.session.get_outputs()[0].shape
        found = shape[-1] if shape and isinstance(shape[-1], int) else self.record.get("vocab_size")
        if vocab_size is not None and found is not None and int(found) != vocab_size:
            raise ValueError(
                f"{self.path}: outputs {found} tokens, the model's vocabulary has {vocab_size}: {self.redo}"
            )

    def __call__(self, feats: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        B, T, _ = feats.shape
        if lengths is None:
            lengths = torch.full((B,), T)
        if T < self.patch_time:  # shorter than one patch: pad, as the encoder does
            feats = F.pad(feats, (0, 0, 0, self.patch_time - T))
        x = feats.detach().to("cpu", torch.float32).contiguous().numpy()
        n = lengths.detach().to("cpu", torch.int64).contiguous().numpy()
        try:
            log_probs, out_lengths = self.session.run(list(OUTPUTS), {"feats": x, "lengths": n})
        except Exception as e:  # noqa: BLE001 - onnxruntime's own types, many lines long
            raise ValueError(f"{self.path}: onnxruntime failed ({_first_line(e)})") from None
        if self.vocab_size is not None and log_probs.shape[-1] != self.vocab_size:
            raise ValueError(
                f"{self.path}: outputs {log_probs.shape[-1]} tokens, the model's vocabulary has "
                f"{self.vocab_size}: {self.redo}"
            )
        return {"log_probs": torch.from_numpy(log_probs), "lengths": torch.from_numpy(out_lengths)}


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


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
