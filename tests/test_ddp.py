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

import torch
import torch.multiprocessing as mp

from astctc.config import load_config
from astctc.data.pipeline import Featurizer, make_loader
from astctc.train import TrainConfig, Trainer, checkpoints, load_checkpoint
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
    torch.save({"model": trainer.model.state_dict(), "step": trainer.step}, os.path.join(out, f"rank{rank}.pt"))


def _single_process_reference(sets: list[str]) -> dict:
    """One process, grad_accum over rank 0's and rank 1's batches, epochs ending as DDP's do."""
    trainer = Trainer(load_config(TrainConfig, None, sets))
    cfg = trainer.cfg
    featurizer = Featurizer(
        cfg.features, trainer.tokenizer, cfg.data.spec_augment, cfg.seed, cfg.data.max_duration, cfg.data.augment
    )
    step, epoch, per_epoch = 0, 0, []
    trainer.model.train()
    while step < STEPS:
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
            if step == STEPS:
                break
        epoch += 1
    return {"model": trainer.model.state_dict(), "batches": per_epoch}


def test_ddp_equals_single_process_accumulation(tiny_corpus, tmp_path):
    port = _free_port()
    mp.spawn(_rank, args=(2, port, _sets(tiny_corpus, tmp_path / "ddp"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["step"] == r1["step"] == STEPS
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks ran single-threaded: same kernels, same rounding
    try:
        ref = _single_process_reference(_sets(tiny_corpus, tmp_path / "ref"))
    finally:
        torch.set_num_threads(threads)
    assert any(a != b for a, b in ref["batches"]), "the ranks should get unequal batch counts"
    for k, v in ref["model"].items():
        assert torch.equal(r0["model"][k], v), (k, (r0["model"][k] - v).abs().max())
    init = Trainer(load_config(TrainConfig, None, _sets(tiny_corpus, tmp_path / "init"))).model.state_dict()
    assert not torch.equal(init["encoder.layernorm.weight"], ref["model"]["encoder.layernorm.weight"])

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
