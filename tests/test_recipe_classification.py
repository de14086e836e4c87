"""The classification recipes end to end at toy size: FSDD (joint CTC + digit head), Speech
Commands (download from a local HTTP server, official lists, _silence_; and the shared subset),
ESC-50 (download, five folds, cross-validation). Real clips from ../shared/data."""

from __future__ import annotations

import csv
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from astctc.audio import audio_duration
from tests.range_server import RangeServer
from tests.recipe_run import copy_recipe, run_recipe

TOY = (
    "max_steps=4 checkpoint_every=2 model.encoder.depth=1 model.encoder.embed_dim=32 "
    "model.encoder.num_heads=2 progress=false data.num_workers=0 log_every=1"
)


@pytest.fixture()
def http_dir(tmp_path):
    """A directory served over http://127.0.0.1:<port>/ for the download stages."""
    root = tmp_path / "www"
    root.mkdir()
    with RangeServer(root) as server:
        yield root, server.url


def test_fsdd_recipe(tmp_path, shared_data):
    recipe = copy_recipe("fsdd", tmp_path)
    src = tmp_path / "recordings"
    src.mkdir()
    for d in (0, 1):
        for s in ("george", "theo"):
            for t in range(5):  # takes 0-2 -> dev, 3-4 -> train (george); theo -> test
                shutil.copy(shared_data / "fsdd" / "recordings" / f"{d}_{s}_{t}.wav", src)
    # one test clip with 0.25 s of near silence either side, to be trimmed
    wav, sr = sf.read(src / "1_theo_4.wav")
    pad = 1e-4 * np.random.default_rng(0).standard_normal(sr // 4)
    sf.write(src / "1_theo_4.wav", np.concatenate([pad, wav, pad]), sr)
    tiny = "model.encoder.depth=1 model.encoder.embed_dim=32 model.encoder.num_heads=2 progress=false"
    opts = [
        "--src",
        str(src),
        "--exp",
        "exp/toy",
        "--synth-voices",
        "2",
        "--train-opts",
        TOY,
        "--pretrain-sentences",
        "6",
        "--pretrain-steps",
        "2",
        "--pretrain-opts",
        tiny + " data.num_workers=0",
    ]
    out = run_recipe(recipe, *opts)
    assert "stage 0 (prepare): done" in out.stderr
    test = [json.loads(line) for line in (recipe / "data/test/manifest.jsonl").read_text().splitlines()]
    assert len(test) == 10 and {r["speaker"] for r in test} == {"theo"}
    raw = {r["id"]: audio_duration(src / (r["id"][5:] + ".wav")) for r in test}
    assert all(r["duration"] <= raw[r["id"]] + 1e-4 for r in test)  # durations rounded to 0.1 ms
    padded = next(r for r in test if r["id"] == "fsdd-1_theo_4")
    assert padded["duration"] < raw["fsdd-1_theo_4"] - 0.4  # the added silence trimmed
    synth = [json.loads(line) for line in (recipe / "data/synth/manifest.jsonl").read_text().splitlines()]
    assert len(synth) == 20 and {r["labels"]["digit"] for r in synth} == {str(d) for d in range(10)}
    index = json.loads((recipe / "data/train_all/index.json").read_text())
    assert index["count"] == 4 + 20  # george's takes 3-4 of two digits + the synthetic words
    pre = [json.loads(line) for line in (recipe / "data/pretrain/train/manifest.jsonl").read_text().splitlines()]
    assert len(pre) == 6 and all(r["text"] != r["words"] for r in pre)  # phonemes (IPA), not spelling
    assert (recipe / "data/pretrain/lang/chars.txt").exists()
    assert "stage 4 (pretrain): done" in out.stderr and (recipe / "exp/toy/pretrain/model/config.json").exists()
    log = (recipe / "exp/toy/log.txt").read_text()
    assert "init from exp/toy/pretrain/model (astctc)" in log and "0 adapted, 6 new" in log  # heads only
    # plain features, the same for the pretraining's sentences and the single words
    feats = {m: json.loads((recipe / f"exp/toy/{m}/features.json").read_text()) for m in ("pretrain/model", "model")}
    assert feats["pretrain/model"] == feats["model"] and "rate_norm_seconds" not in feats["model"]
    assert "CTC head (greedy): %WER" in out.stdout and "digit head: digit: accuracy" in out.stdout
    scores = json.loads((recipe / "exp/toy/evaluate_test/scores.json").read_text())
    assert scores["digit"]["count"] == 10
    assert (recipe / "exp/toy/decode_test_greedy/wer.txt").exists()
    assert (recipe / "exp/toy/evaluate_test/digit_confusion.png").exists()
    again = run_recipe(recipe, *opts, "--stop-stage", "8")
    assert again.stderr.count("skipping") == 9

    # leave-one-speaker-out: george held out, from the main run's pretrained encoder
    fold_opts = f"--src {src} --synth-voices 2 --train-opts '{TOY}'"
    cv = run_recipe(recipe, "--exp", "exp/toy", "--speakers", "george", "--run-opts", fold_opts, script="crossval.sh")
    fold = [json.loads(line) for line in (recipe / "data/cv/george/test/manifest.jsonl").read_text().splitlines()]
    assert len(fold) == 10 and {r["speaker"] for r in fold} == {"george"}
    assert not (recipe / "data/cv/george/pretrain").exists()  # no sentences: the encoder is given
    assert not (recipe / "data/cv/george/synth").exists()  # nor words: the main run's are shared
    index = json.loads((recipe / "data/cv/george/train_all/index.json").read_text())
    assert index["count"] == 4 + 20  # theo's takes 3-4 of two digits + the main run's synthetic words
    assert "stage 4 (pretrain): done" in cv.stderr and "--init exp/toy/pretrain/model" in cv.stderr
    log = (recipe / "exp/toy/cv/george/log.txt").read_text()
    assert "init from exp/toy/pretrain/model (astctc)" in log
    rows = (recipe / "exp/toy/cv/folds.txt").read_text().splitlines()
    acc = float(json.loads((recipe / "exp/toy/cv/george/evaluate_test/scores.json").read_text())["digit"]["accuracy"])
    assert rows[0].split()[0] == "george" and float(rows[0].split()[1].rstrip("%")) == pytest.approx(acc, abs=0.01)
    assert rows[-1].split()[0] == "mean" and rows[-1].split()[1:] == rows[0].split()[1:]


def _tiny_speechcommands(shared: Path, root: Path) -> None:
    """The full archive's layout from shared clips: word folders, _background_noise_, lists."""
    sub = shared / "speech_commands_v2_test12"
    lists = {"validation": [], "testing": []}
    for word in ("yes", "no"):
        for i, f in enumerate(sorted((sub / word).glob("*.flac"))[:6]):
            (root / word).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / word / f.name)
            if i == 4:
                lists["validation"].append(f"{word}/{f.name}")
            elif i == 5:
                lists["testing"].append(f"{word}/{f.name}")
    for f in sorted((sub / "_unknown_").glob("*.flac"))[:4]:  # {word}_{speaker}_nohash_{n}
        word, rest = f.name.split("_", 1)
        (root / word).mkdir(exist_ok=True)
        shutil.copy(f, root / word / rest)
    (root / "_background_noise_").mkdir()
    from astctc.audio import encode_flac, load_audio

    noise = load_audio(sorted((sub / "_silence_").glob("*.flac"))[0])
    (root / "_background_noise_" / "noise.flac").write_bytes(encode_flac(noise.repeat(3)))
    for name, files in lists.items():
        (root / f"{name}_list.txt").write_text("\n".join(files) + "\n")


def _tar(src: Path, out: Path) -> None:
    with tarfile.open(out, "w:gz") as t:
        for p in sorted(src.iterdir()):
            t.add(p, arcname=p.name)


def test_speechcommands_recipe_download_and_official_lists(tmp_path, shared_data, http_dir):
    recipe = copy_recipe("speechcommands", tmp_path)
    www, url = http_dir
    full, test = tmp_path / "full", tmp_path / "test"
    _tiny_speechcommands(shared_data, full)
    for c in ("yes", "_silence_", "_unknown_"):
        shutil.copytree(
            shared_data / "speech_commands_v2_test12" / c, test / c, ignore=lambda d, names: sorted(names)[3:]
        )
    _tar(full, www / "speech_commands_v0.02.tar.gz")
    _tar(test, www / "speech_commands_test_set_v0.02.tar.gz")
    out = run_recipe(
        recipe,
        "--url",
        f"{url}/speech_commands_v0.02.tar.gz",
        "--test-url",
        f"{url}/speech_commands_test_set_v0.02.tar.gz",
        "--train-opts",
        TOY,
    )
    assert (recipe / "downloads/speech_commands_v0.02.tar.gz.sha256").exists()
    rows = {
        s: [json.loads(line) for line in (recipe / f"data/sc12/{s}/manifest.jsonl").read_text().splitlines()]
        for s in ("train", "dev", "test")
    }
    assert {r["id"] for r in rows["dev"] if r["labels"]["command"] != "_silence_"} == {
        f"sc-{name[:-5]}" for name in (full / "validation_list.txt").read_text().split()
    }
    train_labels = {r["labels"]["command"] for r in rows["train"]}
    assert train_labels == {"yes", "no", "_unknown_", "_silence_"}  # other words -> _unknown_
    assert len(rows["test"]) == 9  # the test archive replaces the list's test clips
    assert "test (12 classes): command: accuracy" in out.stdout
    assert (recipe / "data/sc12/labels/command.txt").read_text().split() == [
        "yes",
        "no",
        "up",
        "down",
        "left",
        "right",
        "on",
        "off",
        "stop",
        "go",
        "_silence_",
        "_unknown_",
    ]


def test_speechcommands_recipe_on_the_shared_subset_with_init(tmp_path, shared_data):
    """The small-run path: a folder-per-class tree split by speaker hash, then a second model
    initialised from the first one's directory."""
    recipe = copy_recipe("speechcommands", tmp_path)
    src = tmp_path / "sub"
    for c in ("yes", "no", "_unknown_", "_silence_"):
        shutil.copytree(shared_data / "speech_commands_v2_test12" / c, src / c, ignore=lambda d, n: sorted(n)[25:])
    opts = ["--stage", "1", "--src", str(src), "--test-src", "", "--train-opts", TOY]
    first = run_recipe(recipe, *opts)
    rows = {
        s: [json.loads(line) for line in (recipe / f"data/sc12/{s}/manifest.jsonl").read_text().splitlines()]
        for s in ("train", "dev", "test")
    }
    speakers = {s: {r["speaker"] for r in rs if r["speaker"]} for s, rs in rows.items()}
    assert not speakers["train"] & speakers["test"] and not speakers["train"] & speakers["dev"]
    assert sum(len(r) for r in rows.values()) == 100
    assert "test (12 classes): command: accuracy" in first.stdout
    second = run_recipe(recipe, *opts, "--exp", "exp/init", "--init", "exp/sc12/model", "--stage", "3")
    assert (recipe / "exp/init/init.txt").exists()  # the per-tensor report of the initialisation
    assert "command: accuracy" in second.stdout


def _tiny_esc50(shared: Path, root: Path) -> None:
    """ESC-50-master/{audio,meta/esc50.csv}: 3 classes x 5 folds x 1 clip (FSDD digits as sounds)."""
    base = root / "ESC-50-master"
    (base / "audio").mkdir(parents=True)
    (base / "meta").mkdir()
    rows = []
    for target, cat in enumerate(["dog", "rain", "crying_baby"]):
        for fold in range(1, 6):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            shutil.copy(shared / "fsdd" / "recordings" / f"{target}_george_{fold}.wav", base / "audio" / name)
            rows.append([name, fold, target, cat, "False", str(100 + target), "A"])
    with open(base / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)


def test_esc50_recipe_download_and_cross_validation(tmp_path, shared_data, http_dir):
    recipe = copy_recipe("esc50", tmp_path)
    www, url = http_dir
    src = tmp_path / "esc"
    _tiny_esc50(shared_data, src)
    with zipfile.ZipFile(www / "master.zip", "w") as z:
        for p in sorted(src.rglob("*")):
            z.write(p, p.relative_to(src).as_posix())
    out = run_recipe(
        recipe, "--url", f"{url}/master.zip", "--folds", "1 2", "--train-opts", TOY + " model.encoder.max_frames=128"
    )
    assert (recipe / "data/labels/category.txt").read_text().split() == ["dog", "rain", "crying_baby"]
    for k in range(1, 6):
        index = json.loads((recipe / f"data/cv{k}/train/index.json").read_text())
        assert index["count"] == 12  # four folds of three clips, no copies
        assert all(f"fold{k}/" not in s["name"] for s in index["shards"])
    assert "fold 1: accuracy" in out.stdout and "fold 2: accuracy" in out.stdout
    assert "cross-validation (2 folds): mean accuracy" in out.stdout
    scores = json.loads((recipe / "exp/esc50/fold2/evaluate/scores.json").read_text())
    assert scores["category"]["count"] == 3
