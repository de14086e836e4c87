"""Data-parallel training: two gloo processes on 127.0.0.1 against one process.

The two ranks read disjoint halves of the tiny corpus and take one batch each per step; one
process accumulating the same two batches (rank 0's, then rank 1's) per step must reach the
same parameters, bit for bit: the loss of each batch is weighted by its share of the global
batch's target tokens, and DDP's average of the ranks' gradients undoes the world-size factor
exactly (scaling by 2 commutes with rounding). CTC dropout is off: the ranks draw their own
dropout masks, which one process cannot replay.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from astctc.config import load_config
from astctc.data.pipeline import make_loader
from astctc.train import TrainConfig, Trainer, checkpoints, load_checkpoint
from astctc.train.config import make_featurizer
from tests.conftest import tiny_train_config

STEPS = 5  # the shorter rank has 3 batches an epoch: two epochs, the second cut short


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(corpus, exp, **kw):
    kw = {
        "max_steps": STEPS,
        "validate": False,
        "checkpoint_every": 100,
        "data.max_batch_seconds": 4,
        "model.ctc.dropout": 0.0,
        **kw,
    }
    return tiny_train_config(corpus, exp, **kw)


def _rank(rank: int, world: int, port: int, sets: list[str], out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    trainer = Trainer(load_config(TrainConfig, None, sets))
    trainer.run()
    unused = trainer.ddp.find_unused_parameters
    torch.save(
        {"model": trainer.model.state_dict(), "step": trainer.step, "find_unused": unused},
        os.path.join(out, f"rank{rank}.pt"),
    )


def _single_process_reference(sets: list[str], steps: int = STEPS) -> dict:
    """One process, grad_accum over rank 0's and rank 1's batches, epochs ending as DDP's do."""
    trainer = Trainer(load_config(TrainConfig, None, sets))
    cfg = trainer.cfg
    featurizer = make_featurizer(cfg, trainer.tokenizer, train=True)
    step, epoch, per_epoch = 0, 0, []
    trainer.model.train()
    while step < steps:
        loaders = [
            make_loader(
                cfg.data.train, featurizer, cfg.data, train=True, seed=cfg.seed, epoch=epoch, rank=r, world_size=2
            )
            for r in range(2)
        ]
        per_epoch.append([len(list(loader)) for loader in loaders])
        for pair in zip(*loaders):  # stops when the shorter rank runs out
            trainer.train_step(list(pair))
            step += 1
            trainer.step = step  # the encoder is frozen while trainer.step < freeze_encoder_steps
            if step == steps:
                break
        epoch += 1
    return {"model": trainer.model.state_dict(), "batches": per_epoch}


@pytest.mark.parametrize("freeze", [0, 2])
def test_ddp_equals_single_process_accumulation(tiny_corpus, tmp_path, freeze):
    """Also with the encoder frozen for the first steps: the DDP wrapper is remade when it is
    unfrozen, so no step needs find_unused_parameters (before: on for the whole run)."""
    port = _free_port()
    sets = _sets(tiny_corpus, tmp_path / "ddp", **{"optim.freeze_encoder_steps": freeze})
    mp.spawn(_rank, args=(2, port, sets, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["step"] == r1["step"] == STEPS
    assert r0["find_unused"] is False
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks ran single-threaded: same kernels, same rounding
    try:
        ref = _single_process_reference(_sets(tiny_corpus, tmp_path / "ref", **{"optim.freeze_encoder_steps": freeze}))
    finally:
        torch.set_num_threads(threads)
    assert any(a != b for a, b in ref["batches"]), "the ranks should get unequal batch counts"
    for k, v in ref["model"].items():
        assert torch.equal(r0["model"][k], v), (k, (r0["model"][k] - v).abs().max())
    init = Trainer(load_config(TrainConfig, None, _sets(tiny_corpus, tmp_path / "init"))).model.state_dict()
    assert not torch.equal(init["encoder.layernorm.weight"], ref["model"]["encoder.layernorm.weight"])
    if freeze:  # the frozen steps really froze: the head moved, the encoder did not, then it did
        frozen_sets = _sets(
            tiny_corpus, tmp_path / "frozen", max_steps=freeze, **{"optim.freeze_encoder_steps": freeze}
        )
        frozen = _single_process_reference(frozen_sets, steps=freeze)
        assert torch.equal(init["encoder.layernorm.weight"], frozen["model"]["encoder.layernorm.weight"])
        assert not torch.equal(init["ctc.proj.weight"], frozen["model"]["ctc.proj.weight"])

    # rank 0 alone writes checkpoints and metrics
    exp = tmp_path / "ddp"
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == list(range(1, STEPS + 1))
    assert len(list((exp / "tensorboard").glob("events.*"))) == 1
    last = load_checkpoint(checkpoints(exp)[-1])
    assert last["step"] == STEPS and last["world_size"] == 2
    for k, v in last["model"].items():
        assert torch.equal(v, r0["model"][k]), k


def test_torchrun_cli_then_resume_on_one_process(tiny_corpus, tmp_path):
    """`torchrun --nproc_per_node 2 -m astctc.cli train` runs; a single process resumes its
    mid-epoch checkpoint (another world size: the epoch position is scaled, with a warning)."""
    exp = tmp_path / "exp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "astctc.cli",
        "train",
    ]
    for s in _sets(tiny_corpus, exp, max_steps=2, grad_accum=1):
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (exp / "log.txt").read_text()
    assert "DDP: rank 0 of 2" in log and "rank 1" not in log
    state = load_checkpoint(checkpoints(exp)[-1])
    assert (state["step"], state["world_size"]) == (2, 2) and state["batch_in_epoch"] > 0  # mid-epoch

    sets = _sets(tiny_corpus, exp, max_steps=4)
    cmd = [sys.executable, "-m", "astctc.cli", "train"] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (exp / "log.txt").read_text()
    assert "written by 2 processes, resumed on 1" in log and "resumed from" in log
    assert load_checkpoint(checkpoints(exp)[-1])["step"] == 4
