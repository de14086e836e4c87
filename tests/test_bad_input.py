"""Bad input, one table: each row builds an input in tmp_path, runs the real CLI in-process and
expects exit 1 with exactly one stderr line, `astctc <cmd>: error: ...`, that names the file
(or the config key) and the problem, and no traceback.

To add a case, append a `BadInput` to BAD_INPUTS: `make(tmp, ctx)` writes the input under `tmp`
and returns the command's arguments; `ctx` has "corpus" (conftest's tiny_corpus) and "model"
(a tiny untrained model directory, to copy before breaking it). `name` and `problem` are regular
expressions (`name` may hold `{tmp}`, replaced by the escaped tmp_path); `after(tmp)`, when
given, asserts that what was there before the command is still there.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from astctc.cli import main
from tests.conftest import tiny_train_config


@dataclass
class BadInput:
    id: str  # says what the input is
    make: Callable[[Path, dict], list[str]]  # writes the input under tmp, returns argv
    name: str  # regex: the file or key the error must name ({tmp}: tmp_path)
    problem: str  # regex: what the error must say is wrong, after the name
    after: Callable[[Path], None] | None = None  # nothing already done was lost


# ---- inputs -------------------------------------------------------------------------------


def _clip(path: Path, seconds: float = 0.5) -> Path:
    x = (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 0.1).astype("float32")
    sf.write(path, x, 16000)
    return path


def _audio(kind: str, path: Path) -> Path:
    """A bad audio file of one kind: empty, junk, truncated FLAC, NaN samples, zero samples."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "junk":
        path.write_bytes(b"not audio at all" * 10)
    elif kind == "truncated":
        buf = io.BytesIO()
        x = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype("float32")
        sf.write(buf, x, 16000, format="FLAC")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "nan":
        x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype("float32")
        x[100:200] = np.nan
        sf.write(path, x, 16000, subtype="FLOAT")
    else:
        sf.write(path, np.zeros(0, "float32"), 16000)
    return path


AUDIO = {  # kind -> (file name, what load_audio says, what the header-only `manifest` says)
    "empty": ("empty.wav", r"empty audio file", r"empty audio file"),
    "junk": ("junk.flac", r"cannot decode audio", r"cannot read audio header"),
    "truncated": ("truncated.flac", r"cannot decode audio", None),  # its header is whole
    "nan": ("nan.wav", r"audio contains NaN or infinite samples", None),
    "zero": ("zero.wav", r"audio has zero samples", r"audio has zero samples"),
}


def _manifest(tmp: Path, rows: list[dict], name: str = "m.jsonl") -> Path:
    p = tmp / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _row(audio: Path | str, uid: str = "u1", text: str = "hello there") -> dict:
    return {"id": uid, "audio": str(audio), "duration": 0.5, "text": text}


def _train(ctx: dict, tmp: Path, *sets: str, config: Path | None = None, without: tuple[str, ...] = ()) -> list[str]:
    """`astctc train` of conftest's tiny config (its --set overrides, but those of keys in
    `without`: the config file's value is the bad one), plus `sets`."""
    argv = ["train"] + (["--config", str(config)] if config else [])
    for s in tiny_train_config(ctx["corpus"], tmp / "exp", max_steps=2) + list(sets):
        if s.split("=", 1)[0] not in without:
            argv += ["--set", s]
    return argv


def _model(tmp: Path, ctx: dict, breaking: Callable[[Path], None]) -> Path:
    d = tmp / "model"
    shutil.copytree(ctx["model"], d)
    breaking(d)
    return d


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


POS = "encoder.embeddings.position_embeddings"  # a tensor every model has


def _nan_weights(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    sd = load_file(str(d / "model.safetensors"))
    sd[POS][0, 0, 0] = float("nan")
    save_file(sd, str(d / "model.safetensors"))


def _average(tmp: Path, ctx: dict, breaking: Callable[[dict], object]) -> list[str]:
    """`astctc average` of a run whose one checkpoint (the tiny config's untrained state) is
    `breaking(state)`, written with torch.save as it is."""
    import torch

    from astctc.config import load_config
    from astctc.train import TrainConfig, Trainer
    from astctc.train.checkpoint import checkpoint_path

    exp = tmp / "exp"
    state = Trainer(load_config(TrainConfig, None, tiny_train_config(ctx["corpus"], exp))).state()
    path = checkpoint_path(exp, 1)
    path.parent.mkdir(parents=True)
    torch.save(breaking(state), path)
    return ["average", "--exp", str(exp), "--last", "1"]


def _reshaped(state: dict, name: str, shape: tuple[int, ...]) -> dict:
    state["model"][name] = state["model"][name].new_zeros(shape)
    return state


def _nan_in(state: dict) -> dict:
    state["model"][POS][0, 0, 0] = float("nan")
    return state


def _pickle_checkpoint(tmp: Path) -> Path:
    """A Hugging Face ViT directory whose weights are a pickle (pytorch_model.bin), no safetensors."""
    import pickle

    d = tmp / "vit"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "vit", "architectures": ["ViTModel"]}')
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": tmp}))  # a global torch.load refuses
    return d


def _decode(tmp: Path, ctx: dict, model: Path, *extra: str) -> list[str]:
    shards = str(ctx["corpus"]["shards"])
    return ["decode", "--model", str(model), "--data", shards, "--out", str(tmp / "dec"), "--device", "cpu", *extra]


def _shards(manifest: Path) -> list[str]:
    return ["shards", "--manifest", str(manifest), "--out", str(manifest.parent / "s")]


def _text(tmp: Path, text: str | bytes, name: str = "c.yaml") -> Path:
    p = tmp / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _not_utf8_manifest(tmp: Path) -> Path:
    good = json.dumps(_row(_clip(tmp / "a.wav"))).encode()
    return _text(tmp, good + b'\n{"id": "b\xff", "audio": "a.wav", "duration": 0.5}\n', "m.jsonl")


def _transcribe(model: Path, *files: Path | str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["transcribe", "--model", str(model), "--device", "cpu", *extra, *map(str, files)]


def _score(tmp: Path, ref: str | bytes, hyp: str = "u1 hello there\n", name: str = "ref.jsonl") -> list[str]:
    """`astctc score` of the reference file `ref` (written as `name`) against a Kaldi text hypothesis."""
    return ["score", "--ref", str(_text(tmp, ref, name)), "--hyp", str(_text(tmp, hyp, "hyp.txt"))]


def _junk(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def _earlier_shards(tmp: Path) -> None:
    (tmp / "s").mkdir()
    (tmp / "s" / "index.json").write_text('{"earlier": true}\n')


def _earlier_shards_kept(tmp: Path) -> None:
    assert json.loads((tmp / "s" / "index.json").read_text()) == {"earlier": True}


def _shards_of_bad_clip(kind: str) -> BadInput:
    name = AUDIO[kind][0]

    def make(tmp: Path, ctx: dict) -> list[str]:
        _earlier_shards(tmp)
        return _shards(_manifest(tmp, [_row(_audio(kind, tmp / name))]))

    return BadInput(
        f"shards-every-clip-{kind}",
        make,
        r"no clip of {tmp}/m\.jsonl",
        rf"could be read; nothing written .*{re.escape(name)}: {AUDIO[kind][1]}",
        _earlier_shards_kept,
    )


def _no_manifest_written(tmp: Path) -> None:
    assert not (tmp / "out.jsonl").exists()


def _manifest_of_bad_clip(kind: str) -> BadInput:
    name = AUDIO[kind][0]

    def make(tmp: Path, ctx: dict) -> list[str]:
        m = _manifest(tmp, [_row(_audio(kind, tmp / name))])
        return ["manifest", "--in", str(m), "--out", str(tmp / "out.jsonl")]

    return BadInput(
        f"manifest-only-clip-{kind}",
        make,
        r"{tmp}/m\.jsonl",
        rf"no usable utterances .*{re.escape(name)}: {AUDIO[kind][2]}",
        _no_manifest_written,
    )


def _transcribe_bad_clip(kind: str) -> BadInput:
    name = AUDIO[kind][0]
    return BadInput(
        f"transcribe-{kind}-audio",
        lambda tmp, ctx: _transcribe(ctx["model"], _audio(kind, tmp / name)),
        rf"{{tmp}}/{re.escape(name)}",
        AUDIO[kind][1],
    )


# ---- the table ------------------------------------------------------------------------------

BAD_INPUTS: list[BadInput] = [
    # training configs: rejected when read, naming the file (and line) or the --set, and the key
    BadInput(
        "train-config-yaml-syntax-error",
        lambda tmp, ctx: _train(ctx, tmp, config=_text(tmp, "max_steps: 3\nmodel:\n  encoder: {depth: 2\n", "c.yaml")),
        r"{tmp}/c\.yaml:4",
        r"invalid YAML: .*while parsing a flow mapping from line 3",
    ),
    BadInput(
        "train-set-yaml-syntax-error",
        lambda tmp, ctx: _train(ctx, tmp, "optim.betas=[0.9"),
        r"--set 'optim\.betas=\[0\.9'",
        r"invalid YAML value",
    ),
    BadInput(
        "train-config-not-utf8",
        lambda tmp, ctx: _train(ctx, tmp, config=_junk(tmp / "c.yaml")),
        r"{tmp}/c\.yaml",
        r"not a UTF-8 text file",
    ),
    BadInput(
        "train-config-a-list-not-a-mapping",
        lambda tmp, ctx: _train(ctx, tmp, config=_text(tmp, "- max_steps: 3\n")),
        r"{tmp}/c\.yaml",
        r"a config must be a YAML mapping",
    ),
    BadInput(
        "train-config-unknown-key",
        lambda tmp, ctx: _train(ctx, tmp, config=_text(tmp, "optim:\n  learning_rate: 0.1\n")),
        r"{tmp}/c\.yaml: optim\.learning_rate",
        r"unknown config key",
    ),
    BadInput(
        "train-set-exp_dir-null",
        lambda tmp, ctx: _train(ctx, tmp, "exp_dir=null"),
        r"--set 'exp_dir=null': exp_dir",
        r"expected a string, got null",
    ),
    BadInput(
        "train-set-data.train-empty",
        lambda tmp, ctx: _train(ctx, tmp, "data.train="),
        r"data\.train",
        r"is empty: no training data given",
    ),
    BadInput(
        "train-set-max_steps-not-a-number",
        lambda tmp, ctx: _train(ctx, tmp, "max_steps=many"),
        r"--set 'max_steps=many': max_steps",
        r"expected an integer, got 'many'",
    ),
    BadInput(
        "train-features.num_mel_bins-0",
        lambda tmp, ctx: _train(ctx, tmp, "features.num_mel_bins=0"),
        r"--set 'features\.num_mel_bins=0': features\.num_mel_bins",
        r"must be >= 4 .*not 0",
    ),
    BadInput(
        "train-features.num_mel_bins-not-the-encoders",
        lambda tmp, ctx: _train(ctx, tmp, "features.num_mel_bins=64"),
        r"features\.num_mel_bins",
        r"64 differs from model\.encoder\.num_mel_bins 128",
    ),
    BadInput(
        "train-features.sample_rate-0",
        lambda tmp, ctx: _train(ctx, tmp, "features.sample_rate=0"),
        r"features\.sample_rate",
        r"must be >= 1",
    ),
    BadInput(
        "train-features.frame_shift_ms-0",
        lambda tmp, ctx: _train(ctx, tmp, "features.frame_shift_ms=0"),
        r"features\.frame_shift_ms",
        r"must be > 0",
    ),
    BadInput(
        "train-features.frame_length_ms-negative",
        lambda tmp, ctx: _train(ctx, tmp, "features.frame_length_ms=-25"),
        r"features\.frame_length_ms",
        r"must be > 0",
    ),
    BadInput(
        "train-features.high_freq-above-nyquist",
        lambda tmp, ctx: _train(ctx, tmp, "features.high_freq=9000"),
        r"features\.high_freq",
        r"must lie in \(20, 8000\] Hz",
    ),
    BadInput(
        "train-max_steps-negative",
        lambda tmp, ctx: _train(ctx, tmp, "max_steps=-1"),
        r"--set 'max_steps=-1': max_steps",
        r"must be >= 1, not -1",
    ),
    BadInput(
        "train-config-model.encoder.depth-negative",
        lambda tmp, ctx: _train(
            ctx, tmp, config=_text(tmp, "model:\n  encoder:\n    depth: -2\n"), without=("model.encoder.depth",)
        ),
        r"{tmp}/c\.yaml: model\.encoder\.depth",
        r"must be >= 1, not -2",
    ),
    BadInput(
        "train-model.encoder.depth-negative",
        lambda tmp, ctx: _train(ctx, tmp, "model.encoder.depth=-1"),
        r"model\.encoder\.depth",
        r"must be >= 1, not -1",
    ),
    BadInput(
        "train-model.encoder.num_heads-0",
        lambda tmp, ctx: _train(ctx, tmp, "model.encoder.num_heads=0"),
        r"model\.encoder\.num_heads",
        r"must be >= 1, not 0",
    ),
    BadInput(
        "train-model.encoder.embed_dim-negative",
        lambda tmp, ctx: _train(ctx, tmp, "model.encoder.embed_dim=-32"),
        r"model\.encoder\.embed_dim",
        r"must be >= 1, not -32",
    ),
    BadInput(
        "train-log_every-0",
        lambda tmp, ctx: _train(ctx, tmp, "log_every=0"),
        r"log_every",
        r"must be >= 1, not 0",
    ),
    BadInput(
        "train-checkpoint_every-negative",
        lambda tmp, ctx: _train(ctx, tmp, "checkpoint_every=-5"),
        r"checkpoint_every",
        r"must be >= 1, not -5",
    ),
    # numbers a run cannot use: not finite, out of range, or silently without effect
    BadInput(
        "train-optim.lr-inf",
        lambda tmp, ctx: _train(ctx, tmp, "optim.lr=.inf"),
        r"--set 'optim\.lr=\.inf': optim\.lr",
        r"must be a finite number, not inf",
    ),
    BadInput(
        "train-optim.lr-0",
        lambda tmp, ctx: _train(ctx, tmp, "optim.lr=0"),
        r"optim\.lr",
        r"must be > 0, not 0\.0",
    ),
    BadInput(
        "train-loss_weights-nan",
        lambda tmp, ctx: _train(ctx, tmp, "loss_weights={ctc: .nan}"),
        r"loss_weights\.ctc",
        r"must be a finite number, not nan",
    ),
    BadInput(
        "train-loss_weights-negative",
        lambda tmp, ctx: _train(ctx, tmp, "loss_weights={ctc: -1}"),
        r"loss_weights\.ctc",
        r"must be >= 0, not -1\.0",
    ),
    BadInput(
        "train-loss_weights-all-0",
        lambda tmp, ctx: _train(ctx, tmp, "loss_weights={ctc: 0}"),
        r"loss_weights",
        r"0 for every head \(ctc\): nothing would be trained",
    ),
    BadInput(
        "train-model.encoder.dropout-1",
        lambda tmp, ctx: _train(ctx, tmp, "model.encoder.dropout=1"),
        r"model\.encoder\.dropout",
        r"must be in \[0, 1\), not 1\.0",
    ),
    BadInput(
        "train-model.encoder.mlp_ratio-inf",
        lambda tmp, ctx: _train(ctx, tmp, "model.encoder.mlp_ratio=.inf"),
        r"model\.encoder\.mlp_ratio",
        r"must be a finite number, not inf",
    ),
    BadInput(
        "train-seed-1e23",
        lambda tmp, ctx: _train(ctx, tmp, "seed=1e23"),
        r"--set 'seed=1e23': seed",
        r"must be an integer in \[0, 2\*\*63\)",
    ),
    BadInput(
        "train-model.encoder.embed_dim-2e6",
        lambda tmp, ctx: _train(ctx, tmp, "model.encoder.embed_dim=2e6"),
        r"model\.encoder\.embed_dim",
        r"must be <= 65536, not 2000000",
    ),
    BadInput(
        "train-data.augment.speeds-1000-2000",
        lambda tmp, ctx: _train(ctx, tmp, "data.augment.speeds=[1000, 2000]"),
        r"data\.augment\.speeds",
        r"must be a non-empty list of factors in \[0\.5, 2\]",
    ),
    BadInput(
        "train-data.augment.speeds-one-factor",
        lambda tmp, ctx: _train(ctx, tmp, "data.augment.speeds=[0.9]"),
        r"data\.augment\.speeds",
        r"one factor \(0\.9\) is not applied",
    ),
    BadInput(
        "train-config-duplicate-key",
        lambda tmp, ctx: _train(ctx, tmp, config=_text(tmp, "optim:\n  lr: 0.1\n  weight_decay: 0\n  lr: 0.2\n")),
        r"{tmp}/c\.yaml:4",
        r"duplicate key 'lr' \(first given on line 2\)",
    ),
    BadInput(
        "init-check-pickle-weights",
        lambda tmp, ctx: ["init-check", "--init", str(_pickle_checkpoint(tmp))],
        r"{tmp}/vit/pytorch_model\.bin",
        r"pickle weights are never loaded, only safetensors",
    ),
    # model directories: the broken file is named
    BadInput(
        "decode-model.safetensors-truncated",
        lambda tmp, ctx: _decode(tmp, ctx, _model(tmp, ctx, lambda d: _truncate(d / "model.safetensors"))),
        r"{tmp}/model/model\.safetensors",
        r"cannot read the weights .*truncated",
    ),
    BadInput(
        "transcribe-model.safetensors-nan",
        lambda tmp, ctx: _transcribe(_model(tmp, ctx, _nan_weights), _clip(tmp / "a.wav")),
        r"{tmp}/model/model\.safetensors",
        r"tensor encoder\.embeddings\.position_embeddings holds NaN or infinite values",
    ),
    # training checkpoints given to average: the checkpoint is named, and what is wrong in it
    BadInput(
        "average-checkpoint-a-list",
        lambda tmp, ctx: _average(tmp, ctx, lambda state: list(state.values())),
        r"{tmp}/exp/ckpt/step-00000001\.pt",
        r"not a training checkpoint \(a list",
    ),
    BadInput(
        "average-checkpoint-wrong-shapes",
        lambda tmp, ctx: _average(tmp, ctx, lambda state: _reshaped(state, POS, (1, 5, 32))),
        r"{tmp}/exp/ckpt/step-00000001\.pt",
        r"do not fit the run's config: encoder\.embeddings\.position_embeddings is \[1, 5, 32\], "
        r"the model's \[1, \d+, 32\]",
    ),
    BadInput(
        "average-checkpoint-nan",
        lambda tmp, ctx: _average(tmp, ctx, _nan_in),
        r"{tmp}/exp/ckpt/step-00000001\.pt",
        r"model/encoder\.embeddings\.position_embeddings holds NaN or infinite values",
        lambda tmp: _no_model_written(tmp),
    ),
    BadInput(
        "transcribe-config.json-invalid",
        lambda tmp, ctx: _transcribe(
            _model(tmp, ctx, lambda d: (d / "config.json").write_text("{not json")), _clip(tmp / "a.wav")
        ),
        r"{tmp}/model/config\.json",
        r"invalid JSON at line 1",
    ),
    BadInput(
        "transcribe-features.json-missing",
        lambda tmp, ctx: _transcribe(_model(tmp, ctx, lambda d: (d / "features.json").unlink()), _clip(tmp / "a.wav")),
        r"{tmp}/model/features\.json",
        r"missing: the model directory does not say which features",
    ),
    BadInput(
        "transcribe-features.json-num_mel_bins-0",
        lambda tmp, ctx: _transcribe(
            _model(tmp, ctx, lambda d: (d / "features.json").write_text('{"num_mel_bins": 0}')), _clip(tmp / "a.wav")
        ),
        r"{tmp}/model/features\.json",
        r"num_mel_bins must be >= 4",
    ),
    BadInput(
        "transcribe-hub-revision-a-path",
        lambda tmp, ctx: _transcribe("hf://org/x@../../path", _clip(tmp / "a.wav")),
        r"hf://org/x@\.\./\.\./path",
        r"revision '\.\./\.\./path' is not a branch, tag or commit name",
    ),
    BadInput(
        "transcribe-no-model-directory",
        lambda tmp, ctx: _transcribe(tmp / "nomodel", _clip(tmp / "a.wav")),
        r"{tmp}/nomodel",
        r"not a model directory",
    ),
    # language models
    BadInput(
        "decode-lm-random-bytes",
        lambda tmp, ctx: _decode(tmp, ctx, ctx["model"], "--method", "beam", "--lm", str(_junk(tmp / "junk.bin"))),
        r"{tmp}/junk\.bin",
        r"not a KenLM model",
    ),
    BadInput(
        "transcribe-lm-random-bytes",
        lambda tmp, ctx: _transcribe(ctx["model"], _clip(tmp / "a.wav"), extra=("--lm", str(_junk(tmp / "junk.bin")))),
        r"{tmp}/junk\.bin",
        r"not a KenLM model",
    ),
    # manifests
    BadInput(
        "shards-manifest-not-utf8-line",
        lambda tmp, ctx: _shards(_not_utf8_manifest(tmp)),
        r"{tmp}/m\.jsonl:2",
        r"not UTF-8 text",
    ),
    BadInput(
        "shards-manifest-invalid-json-line",
        lambda tmp, ctx: _shards(_text(tmp, json.dumps(_row("a.wav")) + "\n{not json\n", "m.jsonl")),
        r"{tmp}/m\.jsonl:2",
        r"invalid JSON",
    ),
    BadInput(
        "shards-manifest-row-without-audio",
        lambda tmp, ctx: _shards(_text(tmp, '{"id": "a", "duration": 1.0}\n', "m.jsonl")),
        r"{tmp}/m\.jsonl:1",
        r"field 'audio' is missing",
    ),
    BadInput(
        "shards-manifest-row-with-empty-audio",
        lambda tmp, ctx: _shards(_text(tmp, '{"id": "a", "audio": "", "duration": 1.0}\n', "m.jsonl")),
        r"{tmp}/m\.jsonl:1",
        r"field 'audio' must be a non-empty string",
    ),
    BadInput(
        "shards-manifest-row-without-duration",
        lambda tmp, ctx: _shards(_text(tmp, '{"id": "a", "audio": "a.wav"}\n', "m.jsonl")),
        r"{tmp}/m\.jsonl:1",
        r"field 'duration' is missing",
    ),
    BadInput(
        "shards-manifest-empty",
        lambda tmp, ctx: _shards(_text(tmp, "", "m.jsonl")),
        r"{tmp}/m\.jsonl",
        r"no utterances in the manifest; nothing written",
    ),
    BadInput(
        "manifest-every-transcript-empty",
        lambda tmp, ctx: (
            ["manifest", "--in", str(_manifest(tmp, [_row(_clip(tmp / "a.wav"), text=" ... ")]))]
            + ["--out", str(tmp / "out.jsonl")]
        ),
        r"{tmp}/m\.jsonl",
        r"no usable utterances .*u1: empty transcript",
        _no_manifest_written,
    ),
    BadInput(
        "tokenizer-every-transcript-empty",
        lambda tmp, ctx: (
            ["tokenizer", "--manifest", str(_manifest(tmp, [_row("a.wav", text="?!")]))] + ["--out", str(tmp / "lang")]
        ),
        r"{tmp}/m\.jsonl",
        r"no transcripts to train a tokenizer on",
    ),
    # score: each reference line that cannot be read is named by file and line; nothing to score is an error
    BadInput(
        "score-jsonl-text-null",
        lambda tmp, ctx: _score(tmp, '{"id": "u1", "text": "hello there"}\n{"id": "u2", "text": null}\n'),
        r"{tmp}/ref\.jsonl:2",
        r"field 'text' must be a string, not null",
    ),
    BadInput(
        "score-jsonl-text-a-number",
        lambda tmp, ctx: _score(tmp, '{"id": "u1", "text": 42}\n'),
        r"{tmp}/ref\.jsonl:1",
        r"field 'text' must be a string, not 42",
    ),
    BadInput(
        "score-jsonl-row-without-id",
        lambda tmp, ctx: _score(tmp, '{"id": "u1", "text": "hello there"}\n\n{"text": "hi"}\n'),
        r"{tmp}/ref\.jsonl:3",
        r"field 'id' is missing",
    ),
    BadInput(
        "score-jsonl-invalid-json-line",
        lambda tmp, ctx: _score(tmp, '{"id": "u1", "text": "hello there"}\n{"id": "u2", "text": \n'),
        r"{tmp}/ref\.jsonl:2",
        r"invalid JSON",
    ),
    BadInput(
        "score-latin-1-reference",
        lambda tmp, ctx: _score(tmp, "u1 hello there\nu2 caf\u00e9 au lait\n".encode("latin-1"), name="ref.txt"),
        r"{tmp}/ref\.txt:2",
        r"not UTF-8 text \(byte 0xe9\)",
    ),
    BadInput(
        "score-empty-reference-file",
        lambda tmp, ctx: _score(tmp, "", name="ref.txt"),
        r"{tmp}/ref\.txt",
        r"no reference utterances: nothing to score",
    ),
    BadInput(
        "score-punctuation-only-references",
        lambda tmp, ctx: _score(tmp, "u1 ...\nu2 ?!\n", name="ref.txt"),
        r"{tmp}/ref\.txt",
        r"none of its 2 reference\(s\) has a word once normalised .*nothing to score",
    ),
    # audio: every bad kind given to shards, manifest (when its header shows it) and transcribe
    *[_shards_of_bad_clip(kind) for kind in AUDIO],
    *[_manifest_of_bad_clip(kind) for kind in AUDIO if AUDIO[kind][2] is not None],
    *[_transcribe_bad_clip(kind) for kind in AUDIO],
    BadInput(
        "transcribe-1-sample-clip",
        lambda tmp, ctx: _transcribe(ctx["model"], _one_sample(tmp / "one.wav")),
        r"{tmp}/one\.wav",
        r"1 sample .* is shorter than one 25 ms analysis window",
    ),
    # shard sets read whole or not at all: what decode loses is an error after it wrote the rest
    BadInput(
        "decode-a-shard-missing",
        lambda tmp, ctx: _decode_shards(ctx, _broken_shards(tmp, ctx, lambda shard: shard.unlink())),
        r"{tmp}/shards",
        r"\d+ of 12 utterances scored; \d+ utterance\(s\) lost \(missing \d+, shard_error 1\).*--allow-missing",
        lambda tmp: _decoded_some(tmp),
    ),
    BadInput(
        "decode-a-corrupt-tar-header",
        lambda tmp, ctx: _decode_shards(ctx, _broken_shards(tmp, ctx, _corrupt_second_header)),
        r"{tmp}/shards",
        r"\d+ of 12 utterances scored; \d+ utterance\(s\) lost \(missing \d+, shard_error 1\)",
        lambda tmp: _decoded_some(tmp),
    ),
    # a hostile archive (tests/archive_attack.py): refused, nothing written outside, set aside
    BadInput(
        "download-archive-escaping-through-a-symlink-chain",
        lambda tmp, ctx: _attack_download(tmp),
        r"{tmp}/dl/evil\.tar\.gz: member 'a'",
        r"is a symbolic link .*refusing to extract it.*moved to .*evil\.tar\.gz\.bad",
        lambda tmp: _nothing_outside(tmp),
    ),
]


def _one_sample(path: Path) -> Path:
    sf.write(path, np.full(1, 0.1, "float32"), 16000)
    return path


def _broken_shards(tmp: Path, ctx: dict, breaks: Callable[[Path], None]) -> Path:
    """The tiny corpus' shards with its first shard broken by `breaks`."""
    shards = tmp / "shards"
    shutil.copytree(ctx["corpus"]["shards"], shards)
    breaks(shards / json.loads((shards / "index.json").read_text())["shards"][0]["name"])
    return shards


def _corrupt_second_header(shard: Path) -> None:
    import tarfile

    with tarfile.open(shard) as t:
        offset = t.getmembers()[2].offset  # the second utterance's first member
    with open(shard, "r+b") as f:
        f.seek(offset)
        f.write(b"\x7f" * 512)  # Python's tar reader ends the archive here, without an error


def _decode_shards(ctx: dict, shards: Path) -> list[str]:
    return ["decode", "--model", str(ctx["model"]), "--data", str(shards), "--out", str(shards.parent / "dec")]


def _attack_download(tmp: Path) -> list[str]:
    from astctc.corpora.download import file_digests
    from tests.archive_attack import build_symlink_chain_tar

    (tmp / "outside").mkdir()
    evil = build_symlink_chain_tar(tmp / "evil.tar.gz", tmp / "outside" / "pwned.txt")
    sums = _text(tmp, f"{file_digests(evil, ('sha256',))['sha256']}  evil.tar.gz\n", "sha256sum.txt")
    argv = ["download", "speechcommands", "--out", str(tmp / "dl"), "--url", str(evil), "--test-url", ""]
    return argv + ["--checksums", str(sums)]


def _nothing_outside(tmp: Path) -> None:
    assert list((tmp / "outside").iterdir()) == [] and (tmp / "dl" / "evil.tar.gz.bad").exists()


def _no_model_written(tmp: Path) -> None:
    assert not (tmp / "exp" / "model").exists()


def _decoded_some(tmp: Path) -> None:
    assert (tmp / "dec" / "hyp.trn").read_text().strip() and (tmp / "dec" / "dropped.tsv").exists()


# ---- the test -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_corpus, tmp_path_factory) -> Path:
    """conftest's tiny model, untrained, saved as a model directory with the corpus' tokenizer."""
    import torch

    from astctc.features import FeatureConfig
    from astctc.models.encoder import EncoderConfig
    from astctc.models.heads import CTCHeadConfig
    from astctc.models.model import ASTModel, ModelConfig
    from astctc.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_corpus["lang"])
    enc = EncoderConfig(
        patch_freq=128,
        stride_freq=128,
        patch_time=4,
        stride_time=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_cls_tokens=1,
        max_frames=512,
    )
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("bad_input") / "model"
    ASTModel(ModelConfig(enc, CTCHeadConfig(vocab_size=tok.vocab_size))).save(d, FeatureConfig(), tok)
    return d


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.id for b in BAD_INPUTS])
def test_bad_input_is_one_clear_error_line(bad: BadInput, tmp_path, capsys, tiny_corpus, tiny_model):
    argv = bad.make(tmp_path, {"corpus": tiny_corpus, "model": tiny_model})
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    name = bad.name.replace("{tmp}", re.escape(str(tmp_path)))
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert re.fullmatch(rf"astctc {argv[0]}: error: .*{name}.*{bad.problem}.*", lines[0]), lines[0]
    if bad.after is not None:
        bad.after(tmp_path)
