"""The AN4 recipe, download -> report on CPU, against an archive in CMU's layout (NIST SPHERE
audio) served from 127.0.0.1 and built from real AN4 clips in ../shared/data/an4; cpu.sh's route
on the shared copy (FLAC); and the corpus module: sphinx transcriptions, ESPnet's split."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from astctc.corpora import an4
from tests.range_server import RangeServer
from tests.recipe_run import copy_recipe, run_recipe

# a few real clips: two training speakers (ESPnet's sorted order puts fash first) and one test speaker
TRAIN = ["an251-fash-b", "an253-fash-b", "cen1-fash-b", "an86-fbbh-b", "an87-fbbh-b", "an88-fbbh-b"]
TEST = ["an406-fcaw-b", "an407-fcaw-b"]
# tiny Whisper-stem model, a few steps: the recipe's own config, shrunk
TOY = (
    "max_steps=4 checkpoint_every=2 log_every=1 progress=false precision=fp32 device=cpu "
    "model.encoder.depth=1 model.encoder.embed_dim=32 model.encoder.num_heads=2 "
    "data.num_workers=0 optim.warmup_steps=2 optim.freeze_encoder_steps=0"
)
BEAM = "--workers 1 --alpha-grid 0.3 --beta-grid 0"


def _run(recipe: Path, *args, script="run.sh", check=True, **env):
    return run_recipe(recipe, *args, script=script, check=check, timeout=600, OMP_NUM_THREADS=1, **env)


def write_sphere(path: Path, pcm: np.ndarray, rate: int = 16000) -> None:
    """16-bit PCM under a 1024-byte NIST header, big-endian as AN4 publishes it."""
    fields = {"sample_count": f"-i {len(pcm)}", "sample_rate": f"-i {rate}", "channel_count": "-i 1"}
    fields |= {"sample_n_bytes": "-i 2", "sample_byte_format": "-s2 10", "sample_coding": "-s3 pcm"}
    head = "NIST_1A\n   1024\n" + "".join(f"{k} {v}\n" for k, v in fields.items()) + "end_head\n"
    path.write_bytes(head.encode().ljust(1024, b" ") + pcm.astype(">i2").tobytes())


def _lines(path: Path, ids: list[str]) -> list[str]:
    by_id = {line.rsplit("(", 1)[1].strip(" )\n"): line for line in path.read_text().splitlines() if line.strip()}
    return [by_id[i] for i in ids]


@pytest.fixture()
def archive(tmp_path, shared_data):
    """www/an4_sphere.tar.gz as CMU publishes it (an4/{README, LICENSE, etc/*, wav/an4_clstk,
    wav/an4test_clstk}), eight real clips converted from the shared FLAC to SPHERE."""
    src = shared_data / "an4"
    build = tmp_path / "build" / "an4"
    (build / "etc").mkdir(parents=True)
    for part, ids in (("train", TRAIN), ("test", TEST)):
        etc = build / "etc"
        (etc / f"an4_{part}.transcription").write_text(
            "\n".join(_lines(src / f"etc/an4_{part}.transcription", ids)) + "\n"
        )
        (etc / f"an4_{part}.fileids").write_text(
            "".join(f"{an4.AUDIO_DIRS[part]}/{i.split('-')[1]}/{i}\n" for i in ids)
        )
        for i in ids:
            rel = Path("wav") / an4.AUDIO_DIRS[part] / i.split("-")[1] / i
            pcm, _ = sf.read(src / f"{rel}.flac", dtype="int16")
            (build / rel).parent.mkdir(parents=True, exist_ok=True)
            write_sphere(build / f"{rel}.sph", pcm)
    for f in ("README", "LICENSE", "etc/an4.dic"):
        shutil.copy(src / f, build / f)
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / an4.ARCHIVE, "w:gz") as t:
        t.add(build, arcname="an4")
    with RangeServer(www) as server:
        yield server


@pytest.fixture()
def recipe(tmp_path):
    return copy_recipe("an4", tmp_path)


def test_recipe_download_to_report(recipe, archive, shared_data):
    server = archive
    opts = ["--url", f"{server.url}/{an4.ARCHIVE}", "--num-dev", "2", "--init", "none", "--train-opts", TOY]
    opts += ["--average", "2", "--lm-order", "3", "--beam-opts", BEAM]
    server.faults[f"/{an4.ARCHIVE}"] = ["drop:3000"]  # a broken connection: resumed
    first = _run(recipe, *opts)

    # no checksum is published: the archive is accepted as complete, and said to be unverified
    from astctc.corpora.download import read_record

    assert [r[2] for r in server.requests(f"/{an4.ARCHIVE}")] == [None, "bytes=3000-"]
    assert "UNVERIFIED" in first.stderr
    assert read_record(recipe / "downloads" / an4.ARCHIVE).checked == ("size", "archive")
    # ESPnet's ids (speaker first) and split (the first --num-dev sorted training ids are dev)
    sets = {}
    for s in ("train", "dev", "test"):
        sets[s] = [json.loads(x) for x in (recipe / f"data/{s}/manifest.jsonl").read_text().splitlines()]
    ids = sorted(f"{i.split('-')[1]}-{i.split('-')[0]}-b" for i in TRAIN)
    assert [r["id"] for r in sets["dev"]] == ids[:2] and [r["id"] for r in sets["train"]] == ids[2:]
    assert [r["id"] for r in sets["test"]] == ["fcaw-an406-b", "fcaw-an407-b"]
    yes = sets["dev"][0]
    assert yes["text"] == "YES" and yes["audio"].endswith("an251-fash-b.sph") and yes["speaker"] == "fash"
    assert sets["test"][0]["text"] == "RUBOUT G M E F THREE NINE"  # the test file has no <s> marks
    assert yes["duration"] == sf.info(shared_data / "an4/wav/an4_clstk/fash/an251-fash-b.flac").duration
    results = (recipe / "exp/whisper/results.md").read_text()
    assert "| trained | greedy |" in results and "| trained | beam |" in results and "zeroshot" not in results
    assert results in first.stdout and list((recipe / "exp/whisper/lm").glob("*.tuned.json"))

    # a second run does nothing, not even a request
    n = len(server.log)
    again = _run(recipe, *opts)
    assert "start" not in again.stderr and len(server.log) == n


def test_cpu_sh_prepares_the_shared_copy_by_espnets_split(recipe, shared_data):
    r = _run(recipe, "--stop-stage", "1", script="cpu.sh", ASTCTC_SHARED_DATA=shared_data)
    assert "stage 0" not in r.stderr
    rows = {s: (recipe / f"data/shared/{s}/manifest.jsonl").read_text().splitlines() for s in ("train", "dev", "test")}
    assert {s: len(v) for s, v in rows.items()} == {"train": 848, "dev": 100, "test": 130}
    assert json.loads(rows["dev"][0])["audio"].endswith("wav/an4_clstk/fash/an251-fash-b.flac")


def test_espnet_split_on_the_real_lists(shared_data, tmp_path):
    """ESPnet egs2/an4/asr1: utterance ids <spk>-<prefix>-<b>, sorted; `subset_data_dir.sh --first`
    100 for train_dev, the rest train_nodev; as it happens, eight speakers held out whole."""
    assert an4.prepare(shared_data / "an4", tmp_path) == {"train": 848, "dev": 100, "test": 130}
    sets = {
        s: [json.loads(x) for x in (tmp_path / s / "manifest.jsonl").read_text().splitlines()]
        for s in ("train", "dev", "test")
    }
    train_ids = [r["id"] for r in sets["dev"] + sets["train"]]
    assert train_ids == sorted(train_ids) and sets["dev"][-1]["id"] == "fjmd-cen8-b"
    dev_spk = {r["speaker"] for r in sets["dev"]}
    assert dev_spk == {"fash", "fbbh", "fclc", "fejs", "ffmm", "fjam", "fjdn", "fjmd"}
    assert not dev_spk & {r["speaker"] for r in sets["train"]}
    assert len({r["speaker"] for r in sets["test"]}) == 10 and all("<s>" not in r["text"] for r in sets["test"])
    # the word and character counts of ESPnet's published scoring (egs2/an4/asr1/README.md)
    for s, words, chars in (("dev", 591, 1915), ("test", 773, 2565)):
        assert sum(len(r["text"].split()) for r in sets[s]) == words and sum(len(r["text"]) for r in sets[s]) == chars


def test_sphinx_lines_and_bad_input(tmp_path):
    t = tmp_path / "an4_train.transcription"
    t.write_text("<s> YES </s> (an251-fash-b)\nRUBOUT G M E F THREE NINE (an406-fcaw-b)\n\n<s> </s> (x-y-z)\n")
    assert an4.read_transcription(t) == [
        ("an251-fash-b", "YES"),
        ("an406-fcaw-b", "RUBOUT G M E F THREE NINE"),
        ("x-y-z", ""),
    ]
    assert an4.utt_id("cen1-fash-b") == "fash-cen1-b"
    t.write_text("<s> YES </s> (an251-fash-b)\n<s> NO </s>\n")
    with pytest.raises(ValueError, match=r"an4_train.transcription:2: expected '<s> TEXT </s> \(prefix-speaker-b\)'"):
        an4.read_transcription(t)
    root = tmp_path / "an4"
    (root / "etc").mkdir(parents=True)
    for part in ("train", "test"):
        (root / "etc" / f"an4_{part}.transcription").write_text("<s> YES </s> (an251-fash-b)\n")
    with pytest.raises(
        FileNotFoundError, match=r"1 utterance\(s\) have no audio .* the first wav/an4_clstk/fash/an251-fash-b"
    ):
        an4.prepare(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no etc/an4_train.transcription"):
        an4.prepare(tmp_path / "nowhere", tmp_path / "out")


def test_help_lists_stages_and_cpu_sh_passes_it_on(recipe):
    for script in ("run.sh", "cpu.sh"):
        out = _run(recipe, "--help", script=script).stdout
        for word in ("download", "prepare", "zeroshot", "train", "beam", "report", "--src", "--init", "--num-dev"):
            assert word in out, (script, word)
    bad = _run(recipe, "--init", "/nowhere", "--src", "x", check=False)
    assert bad.returncode != 0 and "--init /nowhere: not a model directory" in bad.stderr
