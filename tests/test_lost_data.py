"""Nothing is lost silently: a shard cut short, a corrupt tar header or a missing shard is
counted against the index; decode and validation fail (after writing what they could) unless a
partial set is allowed; a corrupt latest checkpoint is set aside and the one before resumed."""

from __future__ import annotations

import io
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
    assert [(u, k) for u, k, _ in lost] == [(str(first), "shard_error"), (str(first), "missing")]
    assert re.match(r"a corrupt tar header at byte \d+; the rest of the shard was not read", lost[0][2])
    assert lost[1][2].startswith(f"{index['shards'][0]['count'] - 2} of the {index['shards'][0]['count']} samples")


def _cut(tar_path, how: str) -> None:
    """Cut a tar: at the start of its third member (a member boundary), inside that member's
    header, inside its end-of-archive marker, or make it two tars joined with cat."""
    data = tar_path.read_bytes()
    with tarfile.open(tar_path) as t:
        members = t.getmembers()
    end = members[-1].offset_data + -(-members[-1].size // 512) * 512  # where the marker starts
    cuts = {"boundary": members[2].offset, "header": members[2].offset + 100, "marker": end + 700}
    tar_path.write_bytes(data + data if how == "cat" else data[: cuts[how]])


@pytest.mark.parametrize("how", ["boundary", "header", "marker", "cat"])
def test_a_tar_cut_short_is_a_shard_error_without_an_index(tiny_corpus, tmp_path, how):
    """Before: Python's tar reader ended a tar cut at a member boundary without an error, so
    without an index (nothing to count against) the rest of the shard was lost silently."""
    shards = _copy_shards(tiny_corpus, tmp_path / "shards")
    (shards / "index.json").unlink()
    first = shards / "000000.tar"
    _cut(first, how)
    ds = ShardDataset(shards, shuffle=False)
    assert len([s["id"] for s in ds]) == (8 if how in ("boundary", "header") else 12)  # shards of 5, 5, 2
    [(where, kind, why)] = ds.take_dropped()
    assert (where, kind) == (str(first), "shard_error")
    assert re.match(
        {
            "boundary": r"truncated: the tar ends without its end-of-archive marker, after 1 sample\(s\)$",
            "header": r"truncated: the tar ends inside a header at byte \d+$",
            "marker": r"truncated: the tar ends inside its end-of-archive marker",
            "cat": r"data after the end-of-archive marker at byte \d+ \(tars joined with cat\?\) was not read",
        }[how],
        why,
    ), why
    whole = ShardDataset(tiny_corpus["shards"], shuffle=False)
    assert len(list(whole)) == 12 and whole.take_dropped() == []  # a whole tar ends well


def test_decode_of_a_tar_cut_at_a_member_boundary_fails_unless_allowed(model_dir, tiny_corpus, tmp_path, capsys):
    """Issue 31: a shard cut at a member boundary, no index.json: decode scored 5 of 10, exit 0."""
    shards = _copy_shards(tiny_corpus, tmp_path / "shards")
    (shards / "index.json").unlink()
    _cut(shards / "000000.tar", "boundary")
    out = tmp_path / "dec"
    assert main(["decode", "--model", str(model_dir), "--data", str(shards), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "8 of an unknown number of utterances scored" in err, err
    assert f"{shards / '000000.tar'} (shard_error: truncated: the tar ends without its end-of-archive marker" in err
    assert main(["decode", "--model", str(model_dir), "--data", str(shards), "--out", str(out), "--allow-missing"]) == 0


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


@pytest.mark.parametrize("indexed", [False, True])
def test_two_shards_with_the_same_keys_are_an_error_naming_both(model_dir, tiny_corpus, tmp_path, capsys, indexed):
    """Before: the second copy's reference silently replaced the first's (without an index),
    or the set was reported as having utterances "never read" (with one)."""
    shards = _copy_shards(tiny_corpus, tmp_path / "shards")
    shutil.copy(shards / "000000.tar", shards / "000003.tar")
    index = json.loads((shards / "index.json").read_text())
    if indexed:
        index["shards"].append(dict(index["shards"][0], name="000003.tar"))
        index["count"] += index["shards"][0]["count"]
        (shards / "index.json").write_text(json.dumps(index))
    else:
        (shards / "index.json").unlink()
    out = tmp_path / "dec"
    assert main(["decode", "--model", str(model_dir), "--data", str(shards), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    m = re.fullmatch(
        r"astctc decode: error: (\S+): sample '(\S+)' is in (\S+) and again in (\S+); ids must be unique.*", err
    )
    assert m, err
    with tarfile.open(shards / "000000.tar") as t:
        first_ids = {json.loads(t.extractfile(f).read())["id"] for f in t if f.name.endswith(".json")}
    assert m[1] == str(shards) and m[2] in first_ids
    assert {m[3], m[4]} == {str(shards / "000000.tar"), str(shards / "000003.tar")}


def _rewrite(tar_path, change) -> list[str]:
    """Rewrite a tar with `change(index, ext, data) -> data` applied to each member; its keys."""
    with tarfile.open(tar_path) as t:
        members = [(m, t.extractfile(m).read()) for m in t]
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as t:
        for i, (m, data) in enumerate(members):
            data = change(i // 2, m.name.split(".", 1)[1], data)
            m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    return [m.name.split(".", 1)[0] for m, _ in members[::2]]


def test_one_bad_sample_is_dropped_and_named_the_rest_of_its_batch_go_on(tiny_corpus, tmp_path):
    """Undecodable audio and a transcript that is not text: each drops its sample alone, named
    by shard and key; before, a transform's error (the transcript) ended the whole pass."""
    from astctc.data.pipeline import DataConfig, Featurizer, make_loader
    from astctc.features import FeatureConfig
    from tests.conftest import tiny_ctc_model

    shards = _copy_shards(tiny_corpus, tmp_path / "shards")
    first = shards / "000000.tar"

    def change(i, ext, data):
        if i == 0 and ext == "flac":
            return b"not audio at all" * 64
        if i == 1 and ext == "json":
            return json.dumps({**json.loads(data), "text": 123}).encode()
        return data

    keys = _rewrite(first, change)
    _, tok = tiny_ctc_model()
    loader = make_loader(str(shards), Featurizer(FeatureConfig(), tok), DataConfig(num_workers=0), train=False)
    batches = list(loader)
    ids = [i for b in batches for i in b.get("ids", [])]
    dropped = sorted(d for b in batches for d in b["dropped"])
    assert len(ids) == 10 and len(batches[0]["ids"]) == 10  # the rest in one batch, as without them
    assert [(u, k) for u, k, _ in dropped] == [(f"{first}:{keys[0]}", "unreadable"), (f"{first}:{keys[1]}", "unusable")]
    assert "cannot decode audio" in dropped[0][2] and dropped[1][2].startswith("TypeError: ")
