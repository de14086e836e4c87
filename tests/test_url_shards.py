"""Shards by URL (http through curl, pipe: commands) and brace lists, served from 127.0.0.1:
resolution and counts, exactly-once epochs over ranks and workers, training and decoding."""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter

import pytest
from torch.utils.data import DataLoader

from astctc.data.combine import combine_shards
from astctc.data.manifest import read_manifest, write_manifest
from astctc.data.sampling import class_counts
from astctc.data.shards import BatchedShardDataset, ShardDataset, _resolve_shards, write_shards
from astctc.data.sources import is_url, open_shard, resolve_shards
from tests.conftest import tiny_train_config
from tests.range_server import RangeServer


@pytest.fixture(scope="module")
def served(tiny_corpus, tmp_path_factory):
    """Over http://127.0.0.1: shards/ (the tiny corpus: 3 shards, index.json), many/ (the same
    12 clips, labelled, in 6 shards of 2 + index.json) and noindex/ (many/'s tars alone)."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_corpus["shards"], root / "shards")
    rows = read_manifest(tiny_corpus["manifest"])
    for i, r in enumerate(rows):
        r["labels"] = {"parity": "even" if i % 2 == 0 else "odd"}
    write_manifest(rows, root / "labelled.jsonl")
    write_shards(root / "labelled.jsonl", root / "many", max_shard_count=2, progress=False)
    (root / "noindex").mkdir()
    for t in (root / "many").glob("*.tar"):
        shutil.copy(t, root / "noindex" / t.name)
    with RangeServer(root) as server:
        yield {"url": server.url, "root": root, "server": server, "ids": Counter(r["id"] for r in rows)}


def _urls(base: str, names) -> list[str]:
    return [f"{base}/{n:06d}.tar" for n in names]


# ------------------------------------------------------------------------------- resolving


def test_resolve_urls_brace_lists_and_counts(served, caplog):
    u, root = served["url"], served["root"]
    three = (_urls(f"{u}/shards", range(3)), 12)
    assert resolve_shards(f"{u}/shards/index.json") == three
    assert resolve_shards(f"{u}/shards/") == three  # a directory URL: its index
    assert _resolve_shards(f"{u}/shards/index.json") == three  # shards.py's name delegates
    assert resolve_shards(f"{u}/many/{{000000..000005}}.tar") == (_urls(f"{u}/many", range(6)), 12)
    assert resolve_shards(f"{u}/many/{{000001..000003}}.tar") == (_urls(f"{u}/many", [1, 2, 3]), 6)  # listed ones
    two_dirs = _urls(f"{u}/shards", [0, 1]) + _urls(f"{u}/many", [0, 1])
    assert resolve_shards(f"{u}/{{shards,many}}/{{000000..000001}}.tar") == (two_dirs, 5 + 5 + 2 + 2)  # an index each
    with caplog.at_level(logging.INFO, logger="astctc.data.sources"):
        assert resolve_shards(f"{u}/noindex/{{000000..000005}}.tar") == (_urls(f"{u}/noindex", range(6)), None)
    assert f"{u}/noindex/index.json" in caplog.text and "count unknown" in caplog.text

    # pipe: commands, the index's name replacing the shard's inside the command
    cat = f"pipe:cat {root}/many/"
    assert resolve_shards(cat + "{000000..000002}.tar") == ([f"{cat}{n:06d}.tar" for n in range(3)], 6)
    assert resolve_shards(f"pipe:cat '{root}/many/{{000004..000005}}.tar' | cat") == (
        [f"pipe:cat '{root}/many/{n:06d}.tar' | cat" for n in (4, 5)],
        4,
    )
    assert resolve_shards(f"pipe:cat {root}/shards/index.json") == (
        [f"pipe:cat {root}/shards/{n:06d}.tar" for n in range(3)],
        12,
    )

    # local: brace lists with and without an index beside; everything else as before
    assert resolve_shards(f"{root}/many/{{000000..000005}}.tar") == (_urls(f"{root}/many", range(6)), 12)
    assert resolve_shards(f"{root}/noindex/{{000004..000005}}.tar") == (_urls(f"{root}/noindex", [4, 5]), None)
    assert resolve_shards(root / "shards") == (_urls(str(root / "shards"), range(3)), 12)
    assert resolve_shards(root / "noindex") == (_urls(str(root / "noindex"), range(6)), None)
    assert resolve_shards(str(root / "shards" / "000001.tar")) == ([str(root / "shards" / "000001.tar")], None)
    assert resolve_shards(["x/a.tar", f"{u}/b.tar"]) == (["x/a.tar", f"{u}/b.tar"], None)  # a list: as it is
    assert resolve_shards(f"{u}/shards/000000.tar") == ([f"{u}/shards/000000.tar"], None)
    combine_shards([root / "shards", root / "many"], root / "both")  # names like ../many/000000.tar
    both = _urls(f"{root}/both/../shards", range(3)) + _urls(f"{root}/both/../many", range(6))
    assert resolve_shards(root / "both") == (both, 24)  # locally, '..' reaches the sets combined
    with pytest.raises(ValueError, match=rf"^{u}/both/index\.json: shard name '\.\./shards/000000\.tar' climbs out"):
        resolve_shards(f"{u}/both/index.json")  # by URL, an index names nothing outside its directory

    assert is_url(u) and is_url("pipe:cat x.tar") and not is_url(str(root)) and not is_url(root)


def test_missing_index_url_is_one_clear_error(served):
    u = served["url"]
    for spec in (f"{u}/nowhere/index.json", f"{u}/nowhere/"):
        with pytest.raises(OSError, match=rf"^{u}/nowhere/index\.json: cannot read the shard index: .*404") as e:
            resolve_shards(spec)
        assert "\n" not in str(e.value)
    with pytest.raises(OSError, match=r"pipe:cat /nonexistent/index\.json: cannot read the shard index: command exit"):
        resolve_shards("pipe:cat /nonexistent/index.json")
    with pytest.raises(ValueError, match=r"^s3://b/\{0\.\.3\}\.tar: .*no reader for s3: .*pipe:aws s3 cp"):
        resolve_shards("s3://b/{0..3}.tar")  # gopen has no s3 reader: say so before training starts
    with pytest.raises(OSError, match=rf"^{u}/noindex/index\.json: cannot read"):  # a remote directory needs one
        ShardDataset(f"{u}/noindex/")


# --------------------------------------------------------------------------------- reading


def test_open_shard_reads_urls_and_names_failures(served):
    u, root = served["url"], served["root"]
    local = (root / "shards" / "000000.tar").read_bytes()
    for shard in (f"{u}/shards/000000.tar", f"pipe:cat {root}/shards/000000.tar", str(root / "shards" / "000000.tar")):
        with open_shard(shard) as f:
            assert f.read() == local
    with pytest.raises(OSError, match=rf"^{u}/shards/000009\.tar: curl exit 22 .*404"):
        open_shard(f"{u}/shards/000009.tar")  # fails at open: the caller's `except OSError` sees it
    with pytest.raises(OSError, match="^pipe:false: command exit 1"):
        open_shard("pipe:false")
    with open_shard(f"{u}/shards/000001.tar") as f:  # closing early is quiet
        assert len(f.read(1000)) == 1000


def test_missing_and_truncated_url_shards_are_skipped_and_named(served, caplog):
    u, server = served["url"], served["server"]
    ds = ShardDataset(f"{u}/many/{{000005..000006}}.tar", shuffle=False)  # 000006 does not exist
    with caplog.at_level(logging.WARNING, logger="astctc.data.shards"):
        ids = [s["id"] for s in ds]
    assert len(ids) == 2 and ds.skipped == 1
    assert f"{u}/many/000006.tar: curl exit 22" in caplog.text
    caplog.clear()
    server.faults["/many/000002.tar"] = ["drop:30000"]  # the connection drops mid-shard
    ds = ShardDataset([f"{u}/many/000002.tar", f"{u}/many/000003.tar"], shuffle=False)
    with caplog.at_level(logging.WARNING, logger="astctc.data.shards"):
        ids = [s["id"] for s in ds]
    assert len(ids) in (2, 3) and ds.skipped >= 1  # shard 3 whole; of shard 2 what came
    assert f"{u}/many/000002.tar: curl exit 18" in caplog.text


def test_a_stalled_server_or_command_is_an_error_naming_it(served, monkeypatch):
    """Headers, then silence: before, curl (a connect timeout only) waited for ever."""
    u, server = served["url"], served["server"]
    monkeypatch.setenv("ASTCTC_READ_TIMEOUT", "2")
    assert resolve_shards(f"{u}/many/index.json")[1] == 12  # imports done: the times below are the reads'
    for fault in ("stall:0", "hang"):  # headers then nothing; nothing at all
        server.faults["/many/index.json"] = [fault]
        start = time.monotonic()
        with pytest.raises(OSError, match=rf"^{u}/many/index\.json: cannot read the shard index: curl exit 28 .*2 s"):
            resolve_shards(f"{u}/many/index.json")
        assert time.monotonic() - start < 10
    server.faults["/many/000002.tar"] = ["stall:30000"]  # part of a shard, then nothing
    ds = ShardDataset([f"{u}/many/000002.tar", f"{u}/many/000003.tar"], shuffle=False)
    start = time.monotonic()
    ids = [s["id"] for s in ds]
    assert time.monotonic() - start < 10 and 2 <= len(ids) <= 3  # the next shard is read
    (where, kind, why), *_ = ds.take_dropped()
    assert (where, kind) == (f"{u}/many/000002.tar", "shard_error") and "timed out: nothing came for 2 s" in why
    start = time.monotonic()
    with pytest.raises(OSError, match=r"^pipe:sleep 30 \| cat: timed out: nothing came for 2 s \(ASTCTC_READ_TIMEOUT"):
        open_shard("pipe:sleep 30 | cat")  # a command gets the same limit; its pipeline is killed
    assert time.monotonic() - start < 10
    monkeypatch.setenv("ASTCTC_READ_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"^ASTCTC_READ_TIMEOUT='soon': not a number of seconds"):
        open_shard(f"{u}/many/000000.tar")


def _collate_ids(samples):
    return [(s["id"], s["duration"]) for s in samples]


@pytest.mark.parametrize(
    "spec",
    [
        "{url}/shards/index.json",  # 3 shards for 4 slots: split by sample
        "{url}/many/{{000000..000005}}.tar",  # 6 shards for 4 slots: whole shards
        "pipe:cat {root}/many/{{000000..000005}}.tar",
    ],
)
def test_url_shards_exactly_once_over_ranks_and_workers(served, spec):
    spec = spec.format(url=served["url"], root=served["root"])
    server = served["server"]
    server.log.clear()
    batches = []
    for rank in range(2):
        src = ShardDataset(spec, rank=rank, world_size=2, seed=1, shuffle_buffer=4)
        ds = BatchedShardDataset(src, _collate_ids, max_batch_seconds=5.0, bucket_buffer=4, num_buckets=2, seed=1)
        batches += list(DataLoader(ds, batch_size=None, num_workers=2))
    ids = [utt for b in batches for utt, _ in b]
    assert Counter(ids) == served["ids"]
    assert len(batches) < len(ids)
    if "many" in spec and spec.startswith("http"):  # whole shards: each fetched once in the epoch
        gets = Counter(path for method, path, _ in server.log if method == "GET" and path.endswith(".tar"))
        assert gets == {f"/many/{n:06d}.tar": 1 for n in range(6)}


def test_class_counts_stream_url_shards(served):
    u, root = served["url"], served["root"]
    local = class_counts(root / "many", "parity")
    assert local == {"even": 6, "odd": 6}
    assert class_counts(f"{u}/many/index.json", "parity") == local
    assert class_counts(f"{u}/many/{{000000..000005}}.tar", "parity") == local


# ------------------------------------------------------------------------ train and decode


def test_train_and_decode_on_url_shards(served, tiny_corpus, tmp_path, capsys):
    from astctc.cli import main
    from astctc.config import load_config
    from astctc.train import TrainConfig, Trainer, average_checkpoints

    u = served["url"]
    exp = tmp_path / "exp"
    sets = tiny_train_config(
        tiny_corpus,
        exp,
        max_steps=2,
        checkpoint_every=2,
        **{"data.train": f"{u}/many/{{000000..000005}}.tar", "data.valid": f"{u}/shards/"},
    )
    summary = Trainer(load_config(TrainConfig, None, sets)).run()
    assert {"wer", "loss"} <= set(summary)
    model = average_checkpoints(exp, last=1, out_dir=tmp_path / "model")

    def decode(data, name):
        assert main(["decode", "--model", str(model), "--data", data, "--out", str(tmp_path / name)]) == 0
        return sorted((tmp_path / name / "hyp.trn").read_text().splitlines())

    local = decode(str(tiny_corpus["shards"]), "local")
    assert len(local) == 12
    assert decode(f"{u}/shards/index.json", "url") == local

    capsys.readouterr()
    assert main(["decode", "--model", str(model), "--data", f"{u}/gone/index.json", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"astctc decode: error: {u}/gone/index.json: cannot read the shard index")
    assert "\n" not in err
