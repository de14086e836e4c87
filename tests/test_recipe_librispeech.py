"""The LibriSpeech recipe, download -> score on CPU, against OpenSLR-shaped archives served from
127.0.0.1 and built from the genuine LibriSpeech clips in ../shared/data/librispeech_sample."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from tests.range_server import RangeServer
from tests.recipe_run import copy_recipe, run_recipe

SPEAKER = Path("1089")


def _run(recipe: Path, *args, check=True):
    return run_recipe(recipe, *args, check=check, timeout=600, OMP_NUM_THREADS=1)


def _tar_gz(path: Path, members: dict[str, Path]) -> Path:
    """A .tar.gz like OpenSLR's: directories, then files, under LibriSpeech/<subset>/..."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as t:
        dirs = sorted({str(Path(n).parents[i]) for n in members for i in range(len(Path(n).parts) - 1)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
        for name, src in sorted(members.items()):
            t.add(src, arcname=name, recursive=False)
    return path


def _arpa_gz(path: Path, sentences: list[str], order: int = 4) -> Path:
    """A valid upper-case ARPA n-gram (maximum-likelihood estimates, constant back-off) of the
    sentences: every n-gram's prefix and suffix occur, as KenLM requires."""
    counts = [Counter() for _ in range(order)]
    for s in sentences:
        words = ["<s>"] + s.split() + ["</s>"]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                counts[n - 1][tuple(words[i : i + n])] += 1
    lines = ["", "\\data\\"] + [f"ngram {n + 1}={len(c)}" for n, c in enumerate(counts)] + [""]
    for n, c in enumerate(counts, 1):
        lines.append(f"\\{n}-grams:")
        total = sum(c.values())
        for gram, k in sorted(c.items()):
            logp = -99.0 if gram == ("<s>",) else math.log10(k / total)
            lines.append(f"{logp:.4f}\t{' '.join(gram)}" + ("\t-0.3010" if n < order else ""))
        lines.append("")
    lines.append("\\end\\")
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def openslr(tmp_path, shared_data):
    """resources/12/{train-clean-100,dev-clean,test-clean}.tar.gz and resources/11/4-gram.arpa.gz,
    plus an md5sum file for them (the published sums are for the real archives)."""
    sample = shared_data / "librispeech_sample" / "LibriSpeech" / "test-clean"
    files = sorted(p for p in (sample / SPEAKER).rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".flac"]) == 4, "librispeech_sample incomplete"
    www = tmp_path / "www"
    res12, res11 = www / "resources" / "12", www / "resources" / "11"
    chapters = {"test-clean": None, "train-clean-100": None, "dev-clean": "134686"}
    for subset, chapter in chapters.items():
        members = {
            f"LibriSpeech/{subset}/{f.relative_to(sample).as_posix()}": f
            for f in files
            if chapter is None or f.parent.name == chapter
        }
        _tar_gz(res12 / f"{subset}.tar.gz", members)
    texts = [
        line.split(" ", 1)[1]
        for f in files
        if f.suffix == ".txt"
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    _arpa_gz(res11 / "4-gram.arpa.gz", texts)
    sums = tmp_path / "md5sum.txt"
    sums.write_text(
        "".join(
            f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.name}\n"
            for p in sorted([*res12.iterdir(), *res11.iterdir()])
        )
    )
    with RangeServer(www) as server:
        yield {"server": server, "www": www, "sums": sums, "sample": sample}


@pytest.fixture()
def recipe(tmp_path):
    dst = copy_recipe("librispeech", tmp_path)
    # a tiny frame-patch model that trains a step in well under a second on CPU
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
            num_heads: 2, num_cls_tokens: 1, max_frames: 3600}
data: {max_batch_seconds: 25, num_workers: 0}
optim: {warmup_steps: 2}
""")
    return dst


def test_help_lists_stages_and_options(recipe):
    out = _run(recipe, "--help").stdout
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
        "--train-set",
        "--mirror",
        "--lm-mirror",
        "--vocab-size",
        "--ngpu",
        "--eval-sets",
        "--checksums",
    ):
        assert word in out, word
    bad = _run(recipe, "--train-set", "50", check=False)
    assert bad.returncode != 0 and "--train-set must be 100, 460 or 960" in bad.stderr


def test_recipe_download_to_score(recipe, openslr):
    server, www = openslr["server"], openslr["www"]
    good_dev = (www / "resources/12/dev-clean.tar.gz").read_bytes()
    corrupt = bytearray(good_dev)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (www / "resources/12/dev-clean.tar.gz").write_bytes(bytes(corrupt))
    server.faults["/resources/12/test-clean.tar.gz"] = ["drop:20000"]
    opts = [
        "--mirror",
        f"{server.url}/resources/12",
        "--lm-mirror",
        f"{server.url}/resources/11",
        "--checksums",
        str(openslr["sums"]),
        "--eval-sets",
        "test-clean",
        "--valid-set",
        "dev-clean",
        "--tune-set",
        "dev-clean",
        "--vocab-size",
        "40",
        "--config",
        "conf/tiny_cpu.yaml",
        "--average",
        "2",
        "--beam-opts",
        "--workers 1 --alpha-grid 0.3,0.6 --beta-grid 0,1",
    ]

    # 1. a corrupted archive fails the md5 check with a clear error; an interrupted one resumes
    failed = _run(recipe, *opts, "--stop-stage", "0", check=False)
    assert failed.returncode != 0
    assert "dev-clean.tar.gz: md5 mismatch: expected" in failed.stderr and "run again" in failed.stderr
    assert [r[2] for r in server.requests("/resources/12/test-clean.tar.gz")] == [None, "bytes=20000-"]
    assert (recipe / "downloads/test-clean.tar.gz.sha256").exists()

    # 2. the mirror is fixed: only the bad archive is fetched again, then every stage runs
    (www / "resources/12/dev-clean.tar.gz").write_bytes(good_dev)
    n_before = {
        p: len(server.requests(p)) for p in ("/resources/12/test-clean.tar.gz", "/resources/12/train-clean-100.tar.gz")
    }
    first = _run(recipe, *opts)
    assert {p: len(server.requests(p)) for p in n_before} == n_before
    assert len(server.requests("/resources/12/dev-clean.tar.gz")) == 2

    # manifests: upstream transcripts verbatim, durations from the FLAC headers
    sample = openslr["sample"]
    rows = [json.loads(line) for line in (recipe / "data/test-clean/manifest.jsonl").read_text().splitlines()]
    upstream = {}
    for t in sample.rglob("*.trans.txt"):
        for line in t.read_text().splitlines():
            utt, text = line.split(" ", 1)
            upstream[utt] = text
    assert {r["id"]: r["text"] for r in rows} == upstream
    for r in rows:
        info = sf.info(sample / SPEAKER / r["chapter"] / f"{r['id']}.flac")
        assert r["duration"] == info.frames / info.samplerate and r["speaker"] == "1089"
    assert len((recipe / "data/train_100/manifest.jsonl").read_text().splitlines()) == 4
    assert len((recipe / "data/dev-clean/manifest.jsonl").read_text().splitlines()) == 2

    # the LM is OpenSLR's, lower-cased; alpha/beta were tuned for this experiment only
    arpa = (recipe / "data/lm/4gram.arpa").read_text()
    assert "he hoped there" in arpa and "HE HOPED" not in arpa
    assert list((recipe / "exp/tiny_cpu/lm").glob("*.tuned.json")) and not list(
        (recipe / "data/lm").glob("*.tuned.json")
    )
    assert (recipe / "exp/tiny_cpu/decode_dev-clean_beam/wer.txt").exists()  # the tuning set
    results = (recipe / "exp/tiny_cpu/results.md").read_text()
    assert "| test-clean |" in results and "dev-clean |" not in results and results in first.stdout
    for m in ("greedy", "beam"):
        assert (recipe / f"exp/tiny_cpu/score_test-clean_{m}/wer.txt").read_text().startswith("%WER")

    # 3. a second run of finished stages does nothing, not even a request to the mirror
    n = len(server.log)
    again = _run(recipe, *opts)
    assert again.stderr.count("skipping") == 10 and "start" not in again.stderr
    assert len(server.log) == n
    forced = _run(recipe, *opts, "--stage", "0", "--stop-stage", "0", "--force")
    assert "stage 0 (download_train100): start" in forced.stderr and len(server.log) == n  # verified: no fetch


def test_download_without_keeping_archives_is_still_done_once(openslr, tmp_path):
    from astctc.corpora import librispeech as ls

    server = openslr["server"]
    kw = dict(mirror=f"{server.url}/resources/12", checksums=openslr["sums"], keep_archives=False, progress=False)
    info = ls.download(["dev-clean", "test-clean"], tmp_path / "dl", **kw)
    assert sorted(p.name for p in (tmp_path / "dl/LibriSpeech").iterdir()) == ["dev-clean", "test-clean"]
    assert not list((tmp_path / "dl").glob("*.tar.gz")) and info["root"] == str(tmp_path / "dl/LibriSpeech")
    n = len(server.log)
    ls.download(["dev-clean", "test-clean"], tmp_path / "dl", **kw)
    assert len(server.log) == n
    with pytest.raises(ValueError, match="unknown LibriSpeech subset.*train-clean-101"):
        ls.download(["train-clean-101"], tmp_path / "dl", **kw)


def test_prepare_pairs_audio_with_transcripts(openslr, tmp_path, caplog):
    from astctc.corpora import librispeech as ls

    root = tmp_path / "LibriSpeech" / "dev-other"
    shutil.copytree(openslr["sample"], root)
    chapter = root / "1089" / "134686"
    trans = chapter / "1089-134686.trans.txt"
    first, second = trans.read_text().splitlines()
    trans.write_text(first + "\n1089-134686-0099 A LINE WITHOUT AUDIO\n")  # and -0001 loses its line
    out = tmp_path / "m.jsonl"
    info = ls.prepare(tmp_path, ["dev-other"], out)
    assert (info["utterances"], info["no_transcript"], info["no_audio"]) == (3, 1, 1)
    assert "no transcript for" in caplog.text and "1 transcript lines have no audio" in caplog.text
    (chapter / "1089-134686.trans.txt").write_text("1089_134686_0000 HE HOPED\n")
    with pytest.raises(ValueError, match=r"1089-134686.trans.txt:1: expected '<speaker>-<chapter>-<n> TRANSCRIPT'"):
        ls.prepare(tmp_path, ["dev-other"], out)
    with pytest.raises(FileNotFoundError, match="no LibriSpeech/test-other"):
        ls.prepare(tmp_path, ["test-other"], out)
