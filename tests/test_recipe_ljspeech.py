"""The LJSpeech recipe, download -> report on CPU, against an archive in LJSpeech 1.1's layout
served from 127.0.0.1 and built from the genuine LJ001 clips in ../shared/data/ljspeech_lj001;
and the corpus module's splits."""

from __future__ import annotations

import csv
import hashlib
import json
import tarfile
from pathlib import Path

import pytest
import soundfile as sf

from astctc.corpora import ljspeech
from tests.range_server import RangeServer
from tests.recipe_run import copy_recipe, run_recipe

# fixture ids: eight training clips, then one held-out chapter each for dev and test (the defaults)
IDS = [f"LJ001-{i:04d}" for i in range(1, 9)] + ["LJ049-0001", "LJ049-0002", "LJ050-0001", "LJ050-0002"]


def _run(recipe: Path, *args, check=True):
    return run_recipe(recipe, *args, check=check, timeout=600, OMP_NUM_THREADS=1)


def _metadata(shared_data) -> list[list[str]]:
    with open(shared_data / "ljspeech_lj001" / "metadata.csv", encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE))


@pytest.fixture()
def archive(tmp_path, shared_data):
    """www/LJSpeech-1.1.tar.bz2 as published (LJSpeech-1.1/{README, metadata.csv, wavs/*.wav}),
    12 real clips renamed to IDS, and a sha256sum file for it."""
    src = shared_data / "ljspeech_lj001"
    rows = _metadata(shared_data)[: len(IDS)]
    build = tmp_path / "build" / "LJSpeech-1.1"
    (build / "wavs").mkdir(parents=True)
    lines = []
    for uid, (orig, raw, norm) in zip(IDS, rows):
        x, sr = sf.read(src / "wavs" / f"{orig}.flac", dtype="int16")
        sf.write(build / "wavs" / f"{uid}.wav", x, sr, subtype="PCM_16")
        lines.append(f"{uid}|{raw}|{norm}\n")
    (build / "metadata.csv").write_text("".join(lines), encoding="utf-8")
    (build / "README").write_text("LJ Speech Dataset (test fixture)\n")
    www = tmp_path / "www"
    www.mkdir()
    arc = www / "LJSpeech-1.1.tar.bz2"
    with tarfile.open(arc, "w:bz2") as t:
        t.add(build, arcname="LJSpeech-1.1")
    sums = tmp_path / "sha256sum.txt"
    sums.write_text(f"{hashlib.sha256(arc.read_bytes()).hexdigest()}  {arc.name}\n")
    with RangeServer(www) as server:
        yield {"server": server, "sums": sums, "norm": {uid: r[2] for uid, r in zip(IDS, rows)}}


@pytest.fixture()
def recipe(tmp_path):
    dst = copy_recipe("ljspeech", tmp_path)
    (dst / "conf" / "tiny_cpu.yaml").write_text("""\
exp_dir: exp/tiny
seed: 0
precision: fp32
device: cpu
max_steps: 4
checkpoint_every: 2
log_every: 1
progress: false
model:
  encoder: {patch_freq: 128, stride_freq: 128, patch_time: 4, stride_time: 4, embed_dim: 32, depth: 2,
            num_heads: 2, num_cls_tokens: 1, max_frames: 2048}
data: {max_batch_seconds: 25, num_workers: 0}
optim: {warmup_steps: 2}
""")
    return dst


def test_recipe_download_to_report_then_fine_tune_from_it(recipe, archive):
    server = archive["server"]
    opts = ["--url", f"{server.url}/LJSpeech-1.1.tar.bz2", "--checksums", str(archive["sums"])]
    opts += ["--config", "conf/tiny_cpu.yaml", "--average", "2", "--lm-order", "3"]
    opts += ["--beam-opts", "--workers 1 --alpha-grid 0.3,0.6 --beta-grid 0,1"]
    first = _run(recipe, *opts)

    # the archive was checked against the given sha256 and unpacked in the upstream layout
    from astctc.corpora.download import read_record

    assert read_record(recipe / "downloads/LJSpeech-1.1.tar.bz2").checked == ("sha256",)
    # whole chapters held out; the normalised transcription is the text
    sets = {}
    for s in ("train", "dev", "test"):
        rows = [json.loads(x) for x in (recipe / f"data/{s}/manifest.jsonl").read_text().splitlines()]
        sets[s] = {r["id"]: r["text"] for r in rows}
    assert sorted(sets["dev"]) == ["LJ049-0001", "LJ049-0002"] and sorted(sets["test"]) == ["LJ050-0001", "LJ050-0002"]
    assert len(sets["train"]) == 8 and {**sets["train"], **sets["dev"], **sets["test"]} == archive["norm"]
    results = (recipe / "exp/tiny_cpu/results.md").read_text()
    assert "| fine-tuned | greedy |" in results and "| fine-tuned | beam |" in results and "zeroshot" not in results
    assert results in first.stdout
    assert list((recipe / "exp/tiny_cpu/lm").glob("*.tuned.json"))  # tuned on dev, for this model

    # a second run does nothing, not even a request
    n = len(server.log)
    again = _run(recipe, *opts)
    assert "start" not in again.stderr and len(server.log) == n

    # the CPU route: start from a trained model (here the one just made), its tokenizer kept,
    # scored zero-shot first; --src reads an unpacked corpus, no download
    ft = ["--src", "downloads/LJSpeech-1.1", "--data", "data_ft", "--init", "exp/tiny_cpu/model", "--exp", "exp/ft"]
    ft += ["--config", "conf/tiny_cpu.yaml", "--average", "2", "--lm-order", "3"]
    ft += ["--beam-opts", "--workers 1 --alpha-grid 0.3 --beta-grid 0"]
    tuned = _run(recipe, *ft)
    assert "stage 0" not in tuned.stderr and len(server.log) == n
    assert (recipe / "data_ft/lang/chars.txt").read_text() == (recipe / "exp/tiny_cpu/model/chars.txt").read_text()
    results = (recipe / "exp/ft/results.md").read_text()
    for row in ("| zeroshot | greedy |", "| zeroshot | beam |", "| fine-tuned | greedy |", "| fine-tuned | beam |"):
        assert row in results, results


def test_bad_init_is_one_clear_error(recipe, tmp_path):
    r = _run(recipe, "--init", str(tmp_path / "nowhere"), "--src", str(tmp_path), check=False)
    assert r.returncode != 0 and f"--init {tmp_path / 'nowhere'}: not a model directory" in r.stderr


def test_splits_are_chapters_or_ranges_and_never_overlap(shared_data, tmp_path):
    root = shared_data / "ljspeech_lj001"
    info = ljspeech.prepare(root, tmp_path, ["LJ001-0151..LJ001-0168"], "LJ001-0169..LJ001-0186")
    assert info == {"train": 150, "dev": 18, "test": 18}
    assert ljspeech.parse_split("LJ049, LJ001-0001..LJ001-0003") == [
        ("LJ049-0000", "LJ049-9999"),
        ("LJ001-0001", "LJ001-0003"),
    ]
    with pytest.raises(ValueError, match="'LJ1'.*expected a chapter"):
        ljspeech.parse_split("LJ1")
    with pytest.raises(ValueError, match="the range is empty"):
        ljspeech.parse_split("LJ001-0009..LJ001-0001")
    with pytest.raises(ValueError, match="dev and test overlap: 2 clips, the first LJ001-0010"):
        ljspeech.prepare(root, tmp_path / "x", "LJ001-0001..LJ001-0011", "LJ001-0010..LJ001-0020")
    with pytest.raises(ValueError, match="the test set is empty"):
        ljspeech.prepare(root, tmp_path / "y", "LJ001-0001..LJ001-0011", "LJ050")


def test_metadata_without_audio_or_malformed_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "wavs").mkdir()
    (tmp_path / "metadata.csv").write_text('LJ001-0001|"Quoted|"quoted\nLJ001-0002|b|b\n')
    with pytest.raises(FileNotFoundError, match=r"wavs: 2 clip\(s\) of metadata.csv have no audio .* LJ001-0001"):
        ljspeech.prepare(tmp_path, tmp_path / "out", "LJ001-0001..LJ001-0001", "LJ001-0002..LJ001-0002")
    (tmp_path / "metadata.csv").write_text("LJ001-0001|only two fields\n")
    with pytest.raises(ValueError, match=r"metadata.csv:1: expected 'LJnnn-nnnn\|raw text\|normalised text'"):
        ljspeech.prepare(tmp_path, tmp_path / "out", "LJ049", "LJ050")


def test_help_lists_stages_and_cpu_sh_passes_it_on(recipe):
    for script in ("run.sh", "cpu.sh"):
        out = run_recipe(recipe, "--help", script=script, timeout=60).stdout
        for word in ("download", "prepare", "zeroshot", "train", "beam", "report", "--src", "--init", "--dev"):
            assert word in out, (script, word)
    assert not (recipe.parent / "mini").exists()  # --help trained nothing
