"""Manifests and shards: round trip, exact rank/worker split, batching, damaged data."""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import tarfile
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from astctc.audio import load_audio
from astctc.data.manifest import read_manifest, write_manifest
from astctc.data.shards import BatchedShardDataset, ShardDataset, id_to_key, key_to_id, write_shards

N_CLIPS = 40
Q = 1 / 32768  # one int16 step


def _write_clip(path, seconds, sr, channels, rng):
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) + 0.1 * rng.standard_normal(n)
    x = np.stack([x, 0.5 * x], axis=1) if channels == 2 else x
    sf.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")


def _make_corpus(root, n=N_CLIPS, bad=()):
    """n clips in mixed formats (8k/16k, mono/stereo, wav/flac) + a manifest with relative paths."""
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True)
    formats = [(16000, 1, "flac"), (16000, 1, "wav"), (8000, 1, "wav"), (16000, 2, "flac"), (22050, 2, "wav")]
    rows = []
    for i in range(n):
        sr, ch, ext = formats[i % len(formats)]
        utt = f"spk{i % 3}/utt.{i:03d}" if i % 4 == 0 else f"utt-{i:03d}"  # '.' and '/' in ids
        rel = f"wav/{i:03d}.{ext}"
        _write_clip(root / rel, rng.uniform(0.3, 2.0), sr, ch, rng)
        rows.append({"id": utt, "audio": rel, "duration": 0.0, "text": f"text {i}", "speaker": f"spk{i % 3}"})
    for j, kind in enumerate(bad):
        rel = f"wav/bad{j}.wav"
        if kind == "garbage":
            (root / rel).write_bytes(b"this is not audio at all" * 10)
        rows.append({"id": f"bad-{j}", "audio": rel, "duration": 1.0})
    with open(root / "manifest.jsonl", "w") as f:  # relative audio paths, written by hand
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    manifest = _make_corpus(root, bad=("garbage", "missing"))
    index = write_shards(manifest, root / "shards", max_shard_count=8, progress=False)
    one = write_shards(manifest, root / "one_shard", progress=False)
    good = [r for r in read_manifest(manifest) if not r["id"].startswith("bad")]
    return {"root": root, "manifest": manifest, "index": index, "one": one, "rows": good}


def _ids_over_slots(shards, world_size, workers, **kw):
    """Ids yielded by each of `world_size` ranks, each with a DataLoader of `workers` workers."""
    per_rank = []
    for rank in range(world_size):
        ds = ShardDataset(shards, rank=rank, world_size=world_size, **kw)
        loader = DataLoader(ds, batch_size=None, num_workers=workers)
        per_rank.append([s["id"] for s in loader])
    return per_rank


def _collate_ids(samples):
    return [(s["id"], s["duration"]) for s in samples]


# ---------------------------------------------------------------------------- manifests


def test_manifest_defaults_paths_and_errors(tmp_path):
    m = tmp_path / "sub" / "m.jsonl"
    m.parent.mkdir()
    m.write_text(
        '{"id": "a", "audio": "x/a.wav", "duration": 1.5}\n\n'
        '{"id": "b", "audio": "/abs/b.wav", "duration": 2, "text": "hi", "extra": 1}\n'
    )
    a, b = read_manifest(m)
    assert a["audio"] == str(tmp_path / "sub" / "x" / "a.wav")
    assert (a["text"], a["speaker"], a["language"], a["labels"]) == ("", None, None, {})
    assert b["audio"] == "/abs/b.wav" and b["text"] == "hi" and b["extra"] == 1
    out = tmp_path / "sub" / "copy.jsonl"
    write_manifest([a, b], out)
    assert json.loads(out.read_text().splitlines()[0])["audio"] == "x/a.wav"  # relative again
    assert read_manifest(out) == [a, b]
    assert not [p for p in out.parent.iterdir() if "tmp" in p.name]
    for bad, why in [
        ('{"id": "c", "audio": "c.wav"', "invalid JSON"),
        ('{"id": "c", "duration": 1}', "audio"),
        ('{"id": "c", "audio": "c.wav", "duration": "long"}', "duration"),
        ('{"id": "a", "audio": "c.wav", "duration": 1}', "duplicate"),
        ("[1, 2]", "object"),
    ]:
        m.write_text('{"id": "a", "audio": "a.wav", "duration": 1}\n' + bad + "\n")
        with pytest.raises(ValueError, match=rf"m\.jsonl:2: .*{why}"):
            read_manifest(m)


def test_key_encoding_round_trips():
    for utt in ["plain-id_1", "a.b.c", "spk/utt.1", "100%.x", "naïve utt", "__meta__"]:
        key = id_to_key(utt)
        assert "." not in key and "/" not in key
        assert key_to_id(key) == utt


# ------------------------------------------------------------------------------ writing


def test_write_shards_index_and_round_trip(corpus):
    index, rows = corpus["index"], corpus["rows"]
    assert index["skipped"] == 2 and index["count"] == len(rows) == N_CLIPS
    assert len(index["shards"]) == math.ceil(N_CLIPS / 8)
    assert all(s["count"] <= 8 for s in index["shards"])
    on_disk = json.loads((corpus["root"] / "shards" / "index.json").read_text())
    assert on_disk == index
    ds = ShardDataset(corpus["root"] / "shards", shuffle=False)
    assert ds.num_samples == N_CLIPS
    got = {s["id"]: s for s in ds}
    assert list(got) == [r["id"] for r in rows]  # unshuffled: manifest order
    seconds = 0.0
    for r in rows:
        s = got[r["id"]]
        ref = load_audio(r["audio"])
        assert (s["text"], s["speaker"], s["labels"]) == (r["text"], r["speaker"], {})
        assert "audio" not in s and s["wav"].dtype == torch.float32 and s["wav"].ndim == 1
        assert s["duration"] == pytest.approx(ref.numel() / 16000) and s["wav"].numel() == ref.numel()
        assert torch.allclose(s["wav"], ref, atol=2 * Q, rtol=0)
        seconds += s["duration"]
    assert index["seconds"] == pytest.approx(seconds, abs=0.01)
    with tarfile.open(corpus["root"] / "shards" / "000000.tar") as tar:  # one dot per member
        assert all(name.count(".") == 1 for name in tar.getnames())


def test_unreadable_clip_is_logged_and_counted(tmp_path, caplog):
    manifest = _make_corpus(tmp_path / "c", n=3, bad=("garbage",))
    with caplog.at_level(logging.WARNING, logger="astctc.data.shards"):
        index = write_shards(manifest, tmp_path / "s", progress=False)
    assert index["count"] == 3 and index["skipped"] == 1
    assert json.loads((tmp_path / "s" / "index.json").read_text())["skipped"] == 1
    assert "bad0.wav" in caplog.text
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["000000.tar", "index.json"]


def test_max_shard_mb_and_stale_shards(tmp_path):
    manifest = _make_corpus(tmp_path / "c", n=6)
    many = write_shards(manifest, tmp_path / "s", max_shard_mb=0.001, progress=False)
    assert [s["count"] for s in many["shards"]] == [1] * 6  # each clip alone is over the limit
    few = write_shards(manifest, tmp_path / "s", max_shard_count=4, progress=False)
    assert [s["count"] for s in few["shards"]] == [4, 2]
    assert sorted(p.name for p in (tmp_path / "s").glob("*.tar")) == ["000000.tar", "000001.tar"]


# ------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("which", ["shards", "one_shard"])
def test_two_ranks_two_workers_exactly_once(corpus, which):
    shards = corpus["root"] / which
    per_rank = _ids_over_slots(shards, world_size=2, workers=2, seed=3)
    assert Counter(sum(per_rank, [])) == Counter(r["id"] for r in corpus["rows"])
    if which == "one_shard":  # 1 shard, 4 slots: split by sample, so every rank gets its half
        assert [len(ids) for ids in per_rank] == [N_CLIPS // 2] * 2


def test_exactly_once_for_any_world_size(corpus):
    # 5 shards: world sizes below, equal to and above the shard count (both split modes)
    expected = Counter(r["id"] for r in corpus["rows"])
    for world in range(1, 8):
        per_rank = []
        for rank in range(world):
            ds = ShardDataset(corpus["root"] / "shards", rank=rank, world_size=world, seed=world)
            ds.set_epoch(world)
            per_rank.append([s["id"] for s in ds])
        assert Counter(sum(per_rank, [])) == expected, world
        if world > len(corpus["index"]["shards"]):  # split by sample: balanced
            sizes = [len(ids) for ids in per_rank]
            assert max(sizes) - min(sizes) <= 1, (world, sizes)


def test_order_is_deterministic_per_seed_and_epoch(corpus):
    def order(seed, epoch, rank=0, world_size=2):
        ds = ShardDataset(corpus["root"] / "shards", seed=seed, rank=rank, world_size=world_size, shuffle_buffer=8)
        ds.set_epoch(epoch)
        return [s["id"] for s in ds]

    first = order(0, 0)
    assert order(0, 0) == first
    assert order(0, 1) != first
    assert order(1, 0) != first
    unshuffled = [s["id"] for s in ShardDataset(corpus["root"] / "shards", shuffle=False)]
    everything = order(0, 0, world_size=1)
    assert sorted(everything) == sorted(unshuffled) and everything != unshuffled

    # the same through DataLoader workers
    def loader_order(epoch):
        ds = ShardDataset(corpus["root"] / "shards", seed=5, rank=1, world_size=2)
        ds.set_epoch(epoch)
        return [s["id"] for s in DataLoader(ds, batch_size=None, num_workers=2)]

    assert loader_order(2) == loader_order(2) != loader_order(3)


def test_transform_is_applied(corpus):
    ds = ShardDataset(corpus["root"] / "one_shard", transform=lambda s: (s["id"], s["wav"].numel()))
    out = list(ds)
    assert len(out) == N_CLIPS and all(isinstance(x, tuple) for x in out)


def _rewrite_member(src, dst, name_suffix, data):
    """Copy tar `src` to `dst`, replacing the first member ending in `name_suffix` by `data`."""
    done = None
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin.getmembers():
            payload = tin.extractfile(m).read()
            if done is None and m.name.endswith(name_suffix):
                done, payload = m.name, data
                m = tarfile.TarInfo(m.name)
            m.size = len(payload)
            tout.addfile(m, io.BytesIO(payload))
    return done.rsplit(".", 1)[0]


def test_corrupt_sample_and_truncated_tar_are_skipped(corpus, tmp_path, caplog):
    src = corpus["root"] / "shards"
    names = [s["name"] for s in corpus["index"]["shards"]]
    counts = {s["name"]: s["count"] for s in corpus["index"]["shards"]}
    bad_flac = _rewrite_member(src / names[0], tmp_path / "a.tar", ".flac", b"\x00garbage" * 100)
    bad_json = _rewrite_member(src / names[1], tmp_path / "b.tar", ".json", b"{not json")
    raw = (src / names[2]).read_bytes()
    (tmp_path / "c.tar").write_bytes(raw[: len(raw) // 2])  # cut in the middle
    shutil.copy(src / names[3], tmp_path / "d.tar")
    ds = ShardDataset(sorted(str(p) for p in tmp_path.glob("*.tar")), shuffle=False)
    with caplog.at_level(logging.WARNING, logger="astctc.data.shards"):
        ids = [s["id"] for s in ds]
    assert len(ids) == len(set(ids))
    assert key_to_id(bad_flac) not in ids and key_to_id(bad_json) not in ids
    full = counts[names[0]] - 1 + counts[names[1]] - 1 + counts[names[3]]
    assert full < len(ids) < full + counts[names[2]]  # part of the truncated tar is read
    assert ds.skipped >= 3
    assert f"a.tar:{bad_flac}" in caplog.text and f"b.tar:{bad_json}" in caplog.text
    assert "c.tar" in caplog.text


# ----------------------------------------------------------------------------- batching


def _batched(shards, rank, world, budget, **kw):
    src = ShardDataset(shards, rank=rank, world_size=world, seed=1, shuffle_buffer=16)
    return BatchedShardDataset(
        src, _collate_ids, max_batch_seconds=budget, bucket_buffer=12, num_buckets=3, seed=1, **kw
    )


@pytest.mark.parametrize("which", ["shards", "one_shard"])
def test_batched_exactly_once_and_within_budget(corpus, which):
    budget = 3.0
    batches = []
    for rank in range(2):
        loader = DataLoader(_batched(corpus["root"] / which, rank, 2, budget), batch_size=None, num_workers=2)
        batches += list(loader)
    ids = [utt for b in batches for utt, _ in b]
    assert Counter(ids) == Counter(r["id"] for r in corpus["rows"])
    assert len(batches) < len(ids)  # really batching
    for b in batches:
        longest = max(d for _, d in b)
        assert len(b) * longest <= budget + 1e-9 or len(b) == 1


def test_batched_long_utterance_alone_and_max_size(corpus):
    src = ShardDataset(corpus["root"] / "shards", seed=0)
    batches = list(BatchedShardDataset(src, _collate_ids, max_batch_seconds=0.5))
    assert all(len(b) == 1 for b in batches) and len(batches) == N_CLIPS  # every clip is > 0.3 s
    capped = list(BatchedShardDataset(src, _collate_ids, max_batch_seconds=1e6, max_batch_size=7, num_buckets=1))
    assert max(len(b) for b in capped) == 7 and sum(len(b) for b in capped) == N_CLIPS


def test_batched_deterministic_and_epoch_dependent(corpus):
    def run(epoch):
        ds = _batched(corpus["root"] / "shards", 0, 1, 4.0)
        ds.set_epoch(epoch)
        assert ds.source.epoch == epoch
        return [[utt for utt, _ in b] for b in ds]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_balanced_sampling_over_fewer_shards_than_slots(corpus, tmp_path):
    """Each slot then reads every shard, one of them reporting what a shard lacks; before, the
    balanced reader's `_read` did not take that flag and the epoch ended in a TypeError."""
    from astctc.data.manifest import write_manifest
    from astctc.data.sampling import BalanceConfig, BalancedShardDataset

    write_manifest([dict(r, labels={"k": "ab"[i % 2]}) for i, r in enumerate(corpus["rows"])], tmp_path / "m.jsonl")
    write_shards(tmp_path / "m.jsonl", tmp_path / "one", progress=False)  # one shard, two slots
    seen = []
    for rank in range(2):
        ds = BalancedShardDataset(tmp_path / "one", BalanceConfig("k", 0.0), rank=rank, world_size=2)
        seen += [s["id"] for s in ds]
    assert sorted(seen) == sorted(r["id"] for r in corpus["rows"])  # power 0: each once
