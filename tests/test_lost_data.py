"""Nothing is lost silently: a shard cut short, a corrupt tar header or a missing shard is
counted against the index; decode and validation fail (after writing what they could) unless a
partial set is allowed; a corrupt latest checkpoint is set aside and the one before resumed."""

from __future__ import annotations

import json
import logging
import re
import shutil
import tarfile

import pytest

from astctc.cli import main
from astctc.config import load_config
from astctc.data.shards import IncompleteSetError, ShardDataset
from astctc.train import TrainConfig, Trainer, checkpoints, load_checkpoint
from tests.conftest import tiny_train_config


def _copy_shards(corpus, dst):
    shutil.copytree(corpus["shards"], dst)
    return dst


def _corrupt_header(tar_path, member: int) -> int:
    """Overwrite the header of the member-th tar member: Python's tar reader then ends the
    archive there without an error. Returns how many members came before it."""
    with tarfile.open(tar_path) as t:
        offset = t.getmembers()[member].offset
    with open(tar_path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x7f" * 512)
    return member


@pytest.fixture(scope="module")
def model_dir(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("lost")
    trainer = Trainer(load_config(TrainConfig, None, tiny_train_config(tiny_corpus, root / "exp", max_steps=1)))
    trainer.run()
    return trainer.model.save(root / "model", trainer.cfg.features, trainer.tokenizer)


def test_a_corrupt_tar_header_is_counted_not_silent(tiny_corpus, tmp_path):
    shards = _copy_shards(tiny_corpus, tmp_path / "shards")
    index = json.loads((shards / "index.json").read_text())
    first = shards / index["shards"][0]["name"]
    _corrupt_header(first, 4)  # members: flac, json per utterance -> 2 utterances read
    ds = ShardDataset(shards, shuffle=False)
    ids = [s["id"] for s in ds]
    assert len(ids) == index["count"] - (index["shards"][0]["count"] - 2)
    lost = ds.take_dropped()
    assert [(u, k) for u, k, _ in lost] == [(str(first), "missing")]
    assert lost[0][2].startswith(f"{index['shards'][0]['count'] - 2} of the {index['shards'][0]['count']} samples")


def test_decode_of_an_incomplete_set_fails_after_writing_unless_allowed(model_dir, tiny_corpus, tmp_path, capsys):
    shards = _copy_shards(tiny_corpus, tmp_path / "shards")
    index = json.loads((shards / "index.json").read_text())
    (shards / index["shards"][1]["name"]).unlink()  # a shard gone: its whole count is lost
    out = tmp_path / "dec"
    assert main(["decode", "--model", str(model_dir), "--data", str(shards), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("astctc decode: error: ")
    n = index["count"] - index["shards"][1]["count"]
    assert f"{n} of {index['count']} utterances scored" in err[0] and "--allow-missing" in err[0]
    assert len((out / "hyp.trn").read_text().splitlines()) == n  # what could be decoded is written
    assert "missing" in (out / "dropped.tsv").read_text()
    assert main(["decode", "--model", str(model_dir), "--data", str(shards), "--out", str(out), "--allow-missing"]) == 0


def test_validation_on_an_incomplete_set_fails_after_the_checkpoint(tiny_corpus, tmp_path, caplog):
    valid = _copy_shards(tiny_corpus, tmp_path / "valid")
    _corrupt_header(valid / json.loads((valid / "index.json").read_text())["shards"][0]["name"], 2)
    exp = tmp_path / "exp"
    sets = tiny_train_config(tiny_corpus, exp, max_steps=2, **{"data.valid": str(valid)})
    with pytest.raises(IncompleteSetError, match="validation set .*utterances scored.*data.allow_missing"):
        Trainer(load_config(TrainConfig, None, sets)).run()
    assert checkpoints(exp) and load_checkpoint(checkpoints(exp)[-1])["step"] == 2  # nothing lost
    allowed = tiny_train_config(tiny_corpus, exp, max_steps=3, **{"data.valid": str(valid), "data.allow_missing": True})
    with caplog.at_level(logging.WARNING, logger="astctc.train"):
        row = Trainer(load_config(TrainConfig, None, allowed)).run()
    assert row["dropped"] > 0 and "data.allow_missing" in caplog.text


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tiny_corpus, tmp_path, caplog):
    exp = tmp_path / "exp"
    Trainer(load_config(TrainConfig, None, tiny_train_config(tiny_corpus, exp, max_steps=4, checkpoint_every=2))).run()
    newest = checkpoints(exp)[-1]
    assert load_checkpoint(newest)["step"] == 4
    newest.write_bytes(b"")  # a disk that filled up while it was written
    caplog.set_level(logging.INFO, logger="astctc.train")
    trainer = Trainer(load_config(TrainConfig, None, tiny_train_config(tiny_corpus, exp, max_steps=6)))
    trainer.run()
    assert f"{newest}: cannot load checkpoint" in caplog.text and "0 bytes" in caplog.text
    resumed = re.search(r"resumed from \S+/step-(\d+)\.pt", caplog.text)
    assert resumed and int(resumed[1]) < 4 and trainer.step == 6  # the newest good one, not scratch
    assert (exp / "ckpt" / (newest.name + ".bad")).exists()


def test_an_epoch_without_a_batch_stops_the_run(tiny_corpus, tmp_path):
    """Every transcript empty: each epoch gives nothing to train on. Before: the loop went on
    forever, rewriting checkpoint step 0."""
    from astctc.data.manifest import read_manifest, write_manifest
    from astctc.data.shards import write_shards

    rows = [{**r, "text": "  ...  "} for r in read_manifest(tiny_corpus["manifest"])[:3]]
    write_manifest(rows, tmp_path / "m.jsonl")
    write_shards(tmp_path / "m.jsonl", tmp_path / "shards", progress=False)
    corpus = {**tiny_corpus, "shards": tmp_path / "shards"}
    sets = tiny_train_config(corpus, tmp_path / "exp", max_steps=5, validate=False)
    with pytest.raises(ValueError, match="epoch 0 gave no batch to train on: 3 utterance.s. dropped .no_target 3"):
        Trainer(load_config(TrainConfig, None, sets)).run()
