"""Training: exact resume after a real kill, weight averaging, decoding, transcription."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from astctc.config import load_config
from astctc.device import use_bf16
from astctc.train import TrainConfig, Trainer, average_checkpoints, checkpoints, load_checkpoint
from tests.conftest import tiny_train_config

STEPS = 30


def _train_cmd(corpus, exp):
    sets = tiny_train_config(corpus, exp, max_steps=STEPS, checkpoint_every=3, **{"data.max_batch_seconds": 6})
    cmd = [sys.executable, "-m", "astctc.cli", "train"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _final_params(exp: Path) -> dict:
    last = checkpoints(exp)[-1]
    state = load_checkpoint(last)
    assert state["step"] == STEPS, last
    return state["model"]


def test_resume_after_kill_matches_straight_run(tiny_corpus, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(tiny_corpus, straight), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(tiny_corpus, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 1800  # a hang guard only
    while not checkpoints(killed) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    at_kill = load_checkpoint(checkpoints(killed)[-1])["step"]
    assert 0 < at_kill < STEPS

    subprocess.run(_train_cmd(tiny_corpus, killed), check=True, env=env, capture_output=True)
    log = (killed / "log.txt").read_text()
    assert "resumed from" in log and f"step {at_kill}" in log
    a, b = _final_params(straight), _final_params(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and training did something: parameters moved away from the initialisation
    init = Trainer(load_config(TrainConfig, None, tiny_train_config(tiny_corpus, tmp_path / "init"))).model.state_dict()
    assert not torch.equal(init["encoder.layernorm.weight"], a["encoder.layernorm.weight"])


def test_loader_worker_running_ahead_changes_nothing(tiny_corpus, tmp_path):
    """A worker process with a deep queue, whose next epoch starts before the checkpoint and
    validation, trains to the same parameters as loading in the training process."""
    runs = {}
    for workers in (0, 1):
        sets = tiny_train_config(
            tiny_corpus,
            tmp_path / f"w{workers}",
            max_steps=16,
            **{"data.max_batch_seconds": 6, "data.num_workers": workers, "data.prefetch": 32},
        )
        trainer = Trainer(load_config(TrainConfig, None, sets))
        trainer.run()
        assert trainer.epoch >= 2  # epoch ends crossed
        runs[workers] = trainer.model.state_dict()
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


def test_prefetch_is_a_total_over_workers(tiny_corpus):
    from astctc.data.pipeline import DataConfig, Featurizer, make_loader
    from astctc.features import FeatureConfig

    featurizer = Featurizer(FeatureConfig(), None, None, 0)
    depth = {}
    for workers in (1, 12, 40):
        cfg = DataConfig(train=str(tiny_corpus["shards"]), num_workers=workers, prefetch=32)
        depth[workers] = make_loader(cfg.train, featurizer, cfg, train=True).prefetch_factor
    assert depth == {1: 32, 12: 3, 40: 2}


def test_train_average_decode_transcribe(tiny_corpus, tmp_path):
    from astctc.cli import main
    from astctc.transcribe import transcribe

    exp = tmp_path / "exp"
    sets = tiny_train_config(tiny_corpus, exp, max_steps=6, checkpoint_every=2)
    cfg = load_config(TrainConfig, None, sets)
    summary = Trainer(cfg).run()
    assert {"wer", "cer", "loss"} <= set(summary)
    assert (exp / "curves.png").stat().st_size > 1000
    assert (exp / "config.yaml").exists() and list((exp / "tensorboard").iterdir())
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "train" for r in rows) and any(r["split"] == "valid" for r in rows)

    ckpts = checkpoints(exp)[-2:]
    model_dir = average_checkpoints(exp, last=2, out_dir=tmp_path / "model")
    from safetensors.torch import load_file

    avg = load_file(str(model_dir / "model.safetensors"))
    s1, s2 = (load_checkpoint(p)["model"] for p in ckpts)
    k = "encoder.embeddings.position_embeddings"
    assert torch.allclose(avg[k], (s1[k] + s2[k]) / 2, atol=1e-7)

    out = tmp_path / "decode"
    assert main(["decode", "--model", str(model_dir), "--data", str(tiny_corpus["shards"]), "--out", str(out)]) == 0
    for name in ("hyp.trn", "ref.trn", "wer.txt", "per_utt.tsv", "speed.json", "posteriors_0.png"):
        assert (out / name).exists(), name
    assert len((out / "hyp.trn").read_text().splitlines()) == 12

    texts = transcribe([str(p) for p in sorted((tiny_corpus["root"] / "audio").glob("*.flac"))[:3]], model_dir)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def test_bad_config_key_is_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(TrainConfig, None, ["optim.learning_rate=1"])
    p = tmp_path / "c.yaml"
    p.write_text("max_steps: many\n")
    with pytest.raises(ValueError, match=f"{p}.*max_steps"):
        load_config(TrainConfig, p)


def test_precision_auto_is_bf16_on_cuda_and_fp32_on_every_cpu(monkeypatch, tmp_path):
    """The same transcripts on any CPU: auto never picks bf16 there, AMX or not; the log line
    says so, and says when bf16 would be faster."""
    from astctc.device import precision_line

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_bf16(cpu, "bf16") and not use_bf16(cuda, "fp32")
    assert use_bf16(cuda, "auto")
    for amx in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        assert use_bf16(cpu, "auto") is False
        line = precision_line(cpu, "auto")
        assert line.startswith("precision: fp32 (auto: bf16 on CUDA, fp32 on CPUs")
        assert ("this CPU has AMX" in line) is amx
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32, not 'amx'"):
        Trainer(load_config(TrainConfig, None, [f"exp_dir={tmp_path}", "precision=amx"]))
