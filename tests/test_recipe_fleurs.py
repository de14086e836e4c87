"""The FLEURS recipe, download -> score on CPU, against a fake Hugging Face hub on 127.0.0.1
serving google/fleurs-shaped files built from LJSpeech clips in ../shared/data."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import soundfile as sf

from astctc.audio import load_audio
from astctc.text import normalize
from tests.conftest import lj_rows
from tests.range_server import RangeServer
from tests.recipe_run import REPO, copy_recipe, recipe_env, run_recipe

HUB = "datasets/google/fleurs/resolve/main"
SPLITS = {"train": (0, 5), "dev": (5, 7), "test": (7, 9)}  # LJ001 rows per split


def _env(hf_home, **extra) -> dict:
    """Variables for a run against a private hub cache (and no HF_ENDPOINT from outside)."""
    return dict(OMP_NUM_THREADS=1, HF_HUB_DISABLE_TELEMETRY=1, HF_HOME=hf_home, HF_ENDPOINT=None, **extra)


def _run(recipe: Path, *args, check=True, **env):
    return run_recipe(recipe, *args, check=check, timeout=600, **_env(**env))


def _chars(text: str) -> str:
    """FLEURS' fifth column spells the transcription out: 'a b | c d' (unused by the recipe)."""
    return " | ".join(" ".join(w) for w in text.split()) + " |"


def build_fleurs(shared: Path, lang_dir: Path, seconds: float = 3.0) -> dict[str, list[list[str]]]:
    """`<split>.tsv` + `audio/<split>.tar.gz` (members `<split>/<file>.wav`) for one language,
    in the hub repo's layout. The first two train rows are one sentence read twice (FLEURS'
    sentence ids repeat across speakers); the last train row names audio the archive lacks."""
    rows = lj_rows(shared, 9)
    tsv_rows = {}
    for split, (a, b) in SPLITS.items():
        lines, members = [], {}
        for i, r in enumerate(rows[a:b]):
            wav = load_audio(r["audio"])[: int(seconds * 16000)]
            name = f"{1000 + a + i}{a + i:014d}.wav"
            buf = io.BytesIO()
            sf.write(buf, wav.numpy(), 16000, format="WAV", subtype="PCM_16")
            members[f"{split}/{name}"] = buf.getvalue()
            raw = r["text"]
            sentence_id = str(1500 + (a if split == "train" and i < 2 else a + i))
            lines.append(
                [
                    sentence_id,
                    name,
                    raw,
                    normalize(raw),
                    _chars(normalize(raw)),
                    str(wav.numel()),
                    "FEMALE" if i % 2 else "MALE",
                ]
            )
        if split == "train":
            lines.append(
                [
                    "1999",
                    "9999999999999999999.wav",
                    "Not in the archive.",
                    "not in the archive",
                    _chars("not in the archive"),
                    "32000",
                    "OTHER",
                ]
            )
        (lang_dir / f"{split}.tsv").parent.mkdir(parents=True, exist_ok=True)
        (lang_dir / f"{split}.tsv").write_text("".join("\t".join(x) + "\n" for x in lines), encoding="utf-8")
        (lang_dir / "audio").mkdir(exist_ok=True)
        with tarfile.open(lang_dir / "audio" / f"{split}.tar.gz", "w:gz") as t:
            info = tarfile.TarInfo(split)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        tsv_rows[split] = lines
    return tsv_rows


@pytest.fixture()
def hub(tmp_path, shared_data):
    www = tmp_path / "www"
    rows = build_fleurs(shared_data, www / HUB / "data" / "en_us")
    with RangeServer(www) as server:
        yield {"server": server, "www": www, "rows": rows, "lang_dir": www / HUB / "data" / "en_us"}


@pytest.fixture()
def recipe(tmp_path):
    dst = copy_recipe("fleurs", tmp_path)
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
            num_heads: 2, num_cls_tokens: 1, max_frames: 1000}
data: {max_batch_seconds: 12, num_workers: 0}
optim: {warmup_steps: 2}
""")
    return dst


def test_help_lists_stages_and_options(recipe, tmp_path):
    out = _run(recipe, "--help", hf_home=tmp_path / "hf").stdout
    for word in (
        "download",
        "prepare",
        "shards",
        "tokenizer",
        "lm",
        "train",
        "average",
        "greedy",
        "beam",
        "score",
        "--lang",
        "--mirror",
        "--hf-endpoint",
        "--vocab-size",
        "--lm-order",
        "--ngpu",
        "--eval-splits",
    ):
        assert word in out, word


def test_tsv_columns_are_checked(tmp_path):
    from astctc.corpora.fleurs import read_tsv

    (tmp_path / "train.tsv").write_text("1\ta.wav\tRaw.\traw\tr a w |\t16000\tMALE\n1\tb.wav\tSix\tcolumns\tonly\t1\n")
    with pytest.raises(ValueError, match=r"train.tsv:2: expected 7 tab-separated columns"):
        read_tsv(tmp_path / "train.tsv")


def test_offline_says_how_to_fetch_and_hand_placed_files_are_used(tmp_path, shared_data):
    lang_dir = tmp_path / "upstream" / "data" / "en_us"
    build_fleurs(shared_data, lang_dir)
    cmd = [str(REPO / ".venv/bin/astctc"), "download", "fleurs", "--out", str(tmp_path / "dl"), "--lang", "en_us"]
    env = recipe_env(**_env(hf_home=tmp_path / "hf", HF_HUB_OFFLINE="1"))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    msg = r.stderr
    assert "cannot download FLEURS from the Hugging Face hub (google/fleurs): offline" in msg
    assert "hf download google/fleurs --repo-type dataset --include 'data/en_us/*'" in msg
    assert f"{tmp_path / 'dl'}/data/en_us/audio/{{train,dev,test}}.tar.gz" in msg and "--mirror" in msg
    # following the advice: the files placed by hand are checked and unpacked, still offline
    shutil.copytree(lang_dir, tmp_path / "dl" / "data" / "en_us")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dl/data/en_us/audio/test").is_dir() and (tmp_path / "dl/data/en_us/test.tsv.sha256").exists()


def test_recipe_download_to_score(recipe, hub, tmp_path):
    server, lang_dir = hub["server"], hub["lang_dir"]
    test_tar = lang_dir / "audio" / "test.tar.gz"
    good = test_tar.read_bytes()
    server.lfs_sha256["data/en_us/audio/test.tar.gz"] = __import__("hashlib").sha256(good).hexdigest()
    test_tar.write_bytes(good[:-100] + bytes(100))  # the bytes served differ from the listed sha256
    train_url = f"/{HUB}/data/en_us/audio/train.tar.gz"
    server.faults[train_url] = ["drop:30000"]
    opts = [
        "--hf-endpoint",
        server.url,
        "--eval-splits",
        "test",
        "--vocab-size",
        "40",
        "--lm-order",
        "3",
        "--config",
        "conf/tiny_cpu.yaml",
        "--average",
        "2",
        "--beam-opts",
        "--workers 1 --alpha-grid 0.3,0.6 --beta-grid 0,1",
    ]
    hf = {"hf_home": tmp_path / "hf"}

    # 1. the hub's file does not have the sha256 the hub lists for it: a clear error
    failed = _run(recipe, *opts, "--stop-stage", "0", check=False, **hf)
    assert failed.returncode != 0
    assert "test.tar.gz: sha256 mismatch: expected" in failed.stderr and "run again" in failed.stderr
    assert len([r for r in server.requests(train_url) if r[0] == "GET"]) == 2  # dropped, then completed
    assert (recipe / "downloads/data/en_us/audio/train.tar.gz.sha256").exists()

    # 2. fixed upstream: only the bad file is fetched again; then every stage runs
    test_tar.write_bytes(good)
    first = _run(recipe, *opts, **hf)
    assert len([r for r in server.requests(train_url) if r[0] == "GET"]) == 2

    # manifests: the transcription column verbatim as text, the raw one beside it
    for split, tsv_rows in hub["rows"].items():
        rows = [json.loads(x) for x in (recipe / f"data/en_us/{split}/manifest.jsonl").read_text().splitlines()]
        listed = [t for t in tsv_rows if t[1] != "9999999999999999999.wav"]  # its audio is not in the archive
        assert [r["id"] for r in rows] == [f"en_us-{t[1][:-4]}" for t in listed]
        for r, t in zip(rows, listed):
            assert (r["sentence_id"], r["raw_text"], r["text"], r["gender"]) == (t[0], t[2], t[3], t[6])
            info = sf.info(recipe / f"downloads/data/en_us/audio/{split}/{t[1]}")
            assert r["duration"] == info.frames / info.samplerate and r["num_samples"] == int(t[5])
            assert r["language"] == "en_us" and r["labels"] == {"lang": "en_us"}
    train_rows = [json.loads(x) for x in (recipe / "data/en_us/train/manifest.jsonl").read_text().splitlines()]
    assert train_rows[0]["sentence_id"] == train_rows[1]["sentence_id"]  # one sentence, two readings

    assert (recipe / "exp/tiny_cpu_en_us/decode_en_us_dev_beam/wer.txt").exists()  # tuning split
    assert list((recipe / "exp/tiny_cpu_en_us/lm_en_us").glob("*.tuned.json"))
    results = (recipe / "exp/tiny_cpu_en_us/results.md").read_text()
    assert "| en_us | test |" in results and results in first.stdout and " - |" not in results

    # 3. a second run of finished stages does nothing, and asks the hub nothing
    n = len(server.log)
    again = _run(recipe, *opts, **hf)
    assert again.stderr.count("skipping") == 10 and "start" not in again.stderr
    assert len(server.log) == n


def test_several_languages_from_a_mirror(recipe, tmp_path, shared_data):
    """--lang "en_us fr_fr" from a plain HTTP mirror (our resumable downloader): per-language and
    combined manifests with language labels and the class list; the multilingual config loads
    with the class list the recipe passes."""
    www = tmp_path / "mirror"
    for lang in ("en_us", "fr_fr"):
        build_fleurs(shared_data, www / "data" / lang, seconds=1.0)
    with RangeServer(www) as server:
        server.faults["/data/fr_fr/audio/train.tar.gz"] = ["drop:5000"]
        _run(recipe, "--lang", "en_us fr_fr", "--mirror", server.url, "--stop-stage", "1", hf_home=tmp_path / "hf")
        assert [r[2] for r in server.requests("/data/fr_fr/audio/train.tar.gz")] == [None, "bytes=5000-"]
    multi = recipe / "data/multi_en_us+fr_fr"
    assert (multi / "train/languages.txt").read_text() == "en_us\nfr_fr\n"
    rows = [json.loads(x) for x in (multi / "train/manifest.jsonl").read_text().splitlines()]
    assert {r["labels"]["lang"] for r in rows} == {"en_us", "fr_fr"} and len(rows) == 10
    assert len((multi / "dev/manifest.jsonl").read_text().splitlines()) == 4

    from astctc.config import load_config
    from astctc.train import TrainConfig

    cfg = load_config(
        TrainConfig,
        recipe / "conf/ast_base_multilingual.yaml",
        [f"model.classifiers.lang.labels_file={multi / 'train/languages.txt'}"],
    )
    assert cfg.model.classifiers["lang"].resolve("lang").classes == ["en_us", "fr_fr"]
