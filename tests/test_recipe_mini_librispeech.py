"""The Mini LibriSpeech recipe, download -> report on CPU, against OpenSLR-shaped archives (31:
train-clean-5, dev-clean-2; 12: test-clean; 11: a 4-gram) served from 127.0.0.1 and built from
real clips of ../shared/data (its Opus re-encoded to FLAC, as published); cpu.sh's route on the
shared copy (Opus, no dev-clean-2); and the splits of `prepare_mini`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from astctc.corpora import librispeech as ls
from tests.range_server import RangeServer
from tests.recipe_run import copy_recipe, run_recipe
from tests.test_recipe_librispeech import _arpa_gz, _tar_gz

# real clips of the shared train-clean-5: two speakers train, a third stands in for dev-clean-2
CLIPS = {
    "train-clean-5": ["1088-134315-0055", "1088-134315-0023", "118-47824-0035", "118-47824-0026"],
    "dev-clean-2": ["163-122947-0098", "163-122947-0006"],
}
TOY = (
    "max_steps=4 checkpoint_every=2 log_every=1 progress=false precision=fp32 device=cpu "
    "model.encoder.depth=1 model.encoder.embed_dim=32 model.encoder.num_heads=2 "
    "data.num_workers=0 optim.warmup_steps=2 optim.freeze_encoder_steps=0"
)
BEAM = "--workers 1 --alpha-grid 0.3 --beta-grid 0"


def _run(recipe: Path, *args, script="run.sh", check=True, **env):
    return run_recipe(recipe, *args, script=script, check=check, timeout=600, OMP_NUM_THREADS=1, **env)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _texts(tree: Path) -> dict[str, str]:
    return dict(
        line.split(" ", 1) for t in tree.rglob("*.trans.txt") for line in t.read_text().splitlines() if line.strip()
    )


@pytest.fixture()
def openslr(tmp_path, shared_data):
    """resources/31/{train-clean-5,dev-clean-2}.tar.gz, resources/12/test-clean.tar.gz and
    resources/11/4-gram.arpa.gz in the published layout, and an md5sum file for them."""
    mini = shared_data / "mini_librispeech" / "LibriSpeech"
    texts = _texts(mini / "train-clean-5")
    build, www = tmp_path / "build", tmp_path / "www"
    for subset, ids in CLIPS.items():
        members = {f"LibriSpeech/{f}": mini / f for f in ("README.TXT", "SPEAKERS.TXT", "CHAPTERS.TXT", "LICENSE.TXT")}
        for uid in ids:
            spk, chapter, _ = uid.split("-")
            rel = f"{subset}/{spk}/{chapter}"
            (build / rel).mkdir(parents=True, exist_ok=True)
            pcm, rate = sf.read(mini / "train-clean-5" / spk / chapter / f"{uid}.opus", dtype="int16")
            sf.write(build / rel / f"{uid}.flac", pcm, rate, subtype="PCM_16")
            with open(build / rel / f"{spk}-{chapter}.trans.txt", "a") as f:
                f.write(f"{uid} {texts[uid]}\n")
        for p in (build / subset).rglob("*.*"):
            members[f"LibriSpeech/{p.relative_to(build).as_posix()}"] = p
        _tar_gz(www / "resources/31" / f"{subset}.tar.gz", members)
    sample = shared_data / "librispeech_sample" / "LibriSpeech" / "test-clean"
    test = {f"LibriSpeech/test-clean/{p.relative_to(sample).as_posix()}": p for p in sample.rglob("*.*")}
    _tar_gz(www / "resources/12/test-clean.tar.gz", test)
    # the LM of the training sentences: a model trained on four knows too few letters for more
    _arpa_gz(www / "resources/11/4-gram.arpa.gz", [texts[u] for u in CLIPS["train-clean-5"]])
    sums = tmp_path / "md5sum.txt"
    sums.write_text(
        "".join(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(www.rglob("*.gz")))
    )
    with RangeServer(www) as server:
        yield {"server": server, "sums": sums, "texts": {**texts, **_texts(sample)}}


@pytest.fixture()
def recipe(tmp_path):
    return copy_recipe("mini_librispeech", tmp_path)


def test_recipe_download_to_report(recipe, openslr):
    server = openslr["server"]
    url = f"{server.url}/resources"
    opts = ["--mirror", f"{url}/31", "--ls-mirror", f"{url}/12", "--lm-mirror", f"{url}/11"]
    opts += ["--checksums", str(openslr["sums"]), "--init", "none", "--train-opts", TOY]
    opts += ["--average", "2", "--beam-opts", BEAM]
    first = _run(recipe, *opts)

    from astctc.corpora.download import read_record

    for name in ("train-clean-5.tar.gz", "dev-clean-2.tar.gz", "test-clean.tar.gz", "lm/4-gram.arpa.gz"):
        assert read_record(recipe / "downloads" / name).checked == ("md5",), name
    # train-clean-5 trains, dev-clean-2 is dev (no speaker held out), test-clean tests
    sets = {s: _rows(recipe / f"data/{s}/manifest.jsonl") for s in ("train", "dev", "test")}
    assert [r["id"] for r in sets["train"]] == sorted(CLIPS["train-clean-5"])
    assert [r["id"] for r in sets["dev"]] == sorted(CLIPS["dev-clean-2"]) and sets["dev"][0]["subset"] == "dev-clean-2"
    assert {r["speaker"] for r in sets["test"]} == {"1089"} and len(sets["test"]) == 4
    for r in sets["train"] + sets["dev"] + sets["test"]:
        assert r["text"] == openslr["texts"][r["id"]] and r["audio"].endswith(".flac")
    # OpenSLR 11's LM, lower-cased on import
    arpa = (recipe / "data/lm/4gram.arpa").read_text()
    first_words = " ".join(openslr["texts"][CLIPS["train-clean-5"][0]].split()[:2])
    assert first_words.lower() in arpa and first_words not in arpa
    results = (recipe / "exp/whisper/results.md").read_text()
    assert "| trained | greedy |" in results and "| trained | beam |" in results
    assert "dev: dev-clean-2; test: downloads/LibriSpeech/test-clean" in results and results in first.stdout
    assert list((recipe / "exp/whisper/lm").glob("*.tuned.json"))

    # a second run does nothing, not even a request
    n = len(server.log)
    again = _run(recipe, *opts)
    assert "start" not in again.stderr and len(server.log) == n


def test_cpu_sh_prepares_the_shared_opus_copy(recipe, shared_data):
    """cpu.sh on ../shared/data: train-clean-5 as Opus, two speakers held out whole for dev, the
    13 clips of librispeech_sample as test, the LM text less the dev sentences."""
    r = _run(recipe, "--stop-stage", "1", script="cpu.sh", ASTCTC_SHARED_DATA=shared_data)
    assert "stage 0" not in r.stderr
    data = recipe / "data/shared"
    sets = {s: _rows(data / f"{s}/manifest.jsonl") for s in ("train", "dev", "test")}
    assert {s: len(v) for s, v in sets.items()} == {"train": 1432, "dev": 87, "test": 13}
    assert {r["speaker"] for r in sets["dev"]} == set(ls.MINI_DEV_SPEAKERS)
    assert all(r["audio"].endswith(".opus") for r in sets["train"] + sets["dev"])
    lm_text = set((data / "lm_text.txt").read_text().splitlines())
    assert len(lm_text) > 15000 and not lm_text & {r["text"] for r in sets["dev"]}


def test_prepare_mini_holds_out_whole_speakers_and_reads_opus(shared_data, tmp_path):
    root = shared_data / "mini_librispeech"
    info = ls.prepare_mini(root, tmp_path, [shared_data / "librispeech_sample"])
    assert info["dev_from"] == "speakers 6272 3242 of train-clean-5"
    assert [info[s]["utterances"] for s in ("train", "dev", "test")] == [1432, 87, 13]
    sets = {s: _rows(tmp_path / f"{s}/manifest.jsonl") for s in ("train", "dev", "test")}
    assert {r["speaker"] for r in sets["dev"]} == {"6272", "3242"}
    assert not {"6272", "3242"} & {r["speaker"] for r in sets["train"]}  # whole speakers, not utterances
    # durations of the Opus clips: their decoded length
    for r in sets["dev"][:3]:
        audio, rate = sf.read(r["audio"])
        assert r["audio"].endswith(".opus") and r["duration"] == len(audio) / rate
    assert {r["subset"] for r in sets["test"]} == {"test-clean", "dev-clean"}
    with pytest.raises(ValueError, match=r"dev speaker\(s\) 9999 not in train-clean-5"):
        ls.prepare_mini(root, tmp_path / "x", [shared_data / "librispeech_sample"], ["9999"])
    with pytest.raises(ValueError, match="test speaker 1088 is also in train-clean-5"):
        ls.prepare_mini(root, tmp_path / "x", [root / "LibriSpeech/train-clean-5/1088"])


def test_test_src_takes_what_is_present_and_names_bad_chapters(shared_data, tmp_path, caplog):
    chapter = tmp_path / "test-clean" / "1089" / "134686"
    shutil.copytree(shared_data / "librispeech_sample/LibriSpeech/test-clean/1089/134686", chapter)
    trans = chapter / "1089-134686.trans.txt"
    trans.write_text(trans.read_text().rstrip("\n") + "\n1089-134686-0002 A LINE WHOSE CLIP IS NOT HERE\n")
    rows = ls.tree_rows(tmp_path)
    assert [r["id"] for r in rows] == ["1089-134686-0000", "1089-134686-0001"]
    assert "1 transcript lines have no audio file" in caplog.text
    sf.write(chapter / "1089-134686-0000.wav", sf.read(chapter / "1089-134686-0000.flac")[0], 16000)
    with pytest.raises(ValueError, match="two audio files for utterance 1089-134686-0000"):
        ls.tree_rows(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere: no such directory"):
        ls.tree_rows(tmp_path / "nowhere")


def test_help_lists_stages_and_options(recipe, shared_data):
    for script in ("run.sh", "cpu.sh"):
        out = _run(recipe, "--help", script=script).stdout
        for word in ("download", "prepare", "tokenizer", "lm", "train", "beam", "report", "--src", "--test-src"):
            assert word in out, (script, word)
        for word in ("--dev-speakers", "--lm-text", "--lm-file", "--token-type", "--init", "ast_scratch"):
            assert word in out, (script, word)
    bad = _run(recipe, "--src", "x", check=False)
    assert (
        bad.returncode != 0 and "--init auto: no Whisper encoder in ../../../shared/data/whisper_tiny_en" in bad.stderr
    )
    bad = _run(recipe, "--src", "x", check=False, ASTCTC_SHARED_DATA=shared_data)
    assert bad.returncode != 0 and "--src needs --test-src" in bad.stderr
    bad = _run(recipe, "--token-type", "words", check=False)
    assert bad.returncode != 0 and "--token-type must be char, unigram or bpe" in bad.stderr
