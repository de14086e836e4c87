"""The synthetic corpus: valid manifests and audio, unseen test voices, unseen test sentences."""

import json
import shutil

import pytest
import soundfile as sf

from astctc.data import synth
from astctc.data.synth import SentenceGenerator, split_voices, synthesize_corpus
from astctc.text import normalize

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
SIZES = {"train": 8, "dev": 2, "test": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    # jobs=2 with >= 8 utterances goes through the process pool, as real runs do
    res = synthesize_corpus(out, SIZES["train"], SIZES["dev"], SIZES["test"], seed=0, jobs=2, progress=False)
    return out, res


def _rows(out, split):
    return [json.loads(line) for line in (out / split / "manifest.jsonl").read_text().splitlines()]


@needs_espeak
def test_manifests_and_audio(corpus):
    out, res = corpus
    for split, n in SIZES.items():
        assert res[split]["count"] == n and not res[split]["skipped"]
        rows = _rows(out, split)
        assert [r["id"] for r in rows] == [f"{split}-{i:06d}" for i in range(n)]
        for r in rows:
            assert set(r) == {"id", "audio", "duration", "text", "speaker", "language", "labels"}
            assert r["language"] == "en" and r["labels"] == {}
            assert r["text"] == normalize(r["text"]) and 4 <= len(r["text"].split()) <= 12
            assert not r["audio"].startswith("/")
            info = sf.info(str(out / split / r["audio"]))
            assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
            assert abs(info.frames / 16000 - r["duration"]) < 1e-3
            assert 0.5 < r["duration"] < 10
        assert abs(res[split]["hours"] * 3600 - sum(r["duration"] for r in rows)) < 1e-2


@needs_espeak
def test_test_voices_unseen_in_train(corpus):
    out, _ = corpus
    assert not set(split_voices("train")) & set(split_voices("test"))
    assert not set(split_voices("train")) & set(split_voices("dev"))
    train = {r["speaker"] for r in _rows(out, "train")}
    for split in ("dev", "test"):
        assert not train & {r["speaker"] for r in _rows(out, split)}


@needs_espeak
def test_rerun_skips_done_splits_and_redoes_changed_ones(corpus, tmp_path):
    out, _ = corpus
    before = (out / "test" / "manifest.jsonl").stat().st_mtime_ns
    res = synthesize_corpus(out, SIZES["train"], SIZES["dev"], SIZES["test"], seed=0, jobs=1, progress=False)
    assert all(r["skipped"] for r in res.values())
    assert (out / "test" / "manifest.jsonl").stat().st_mtime_ns == before
    assert synth.main(["--out", str(out), "--num-train", "8", "--num-dev", "2", "--num-test", "2"]) == 0

    small = tmp_path / "c"
    synthesize_corpus(small, 3, 1, 1, jobs=1, progress=False)
    res = synthesize_corpus(small, 4, 1, 1, jobs=1, progress=False)
    assert [res[s]["skipped"] for s in ("train", "dev", "test")] == [False, True, True]
    assert len(_rows(small, "train")) == 4
    assert len(list((small / "train" / "audio").iterdir())) == 4


@needs_espeak
def test_phoneme_transcripts_follow_each_voice(tmp_path):
    exe = synth.check_espeak()
    # the accent decides the vowel; stress marks go, word breaks stay
    assert synth.phonemes(exe, "en-us+m1", "two boxes") == "tuː bɑːksᵻz"
    assert synth.phonemes(exe, "en-gb-scotland", "two") == "tʉː"
    res = synthesize_corpus(tmp_path, 3, 1, 1, jobs=1, progress=False, transcript="phonemes")
    assert res["train"]["count"] == 3
    for r in _rows(tmp_path, "train"):
        assert r["text"] == synth.phonemes(exe, r["speaker"], r["words"]) == normalize(r["text"])
    # a word corpus in the same place is redone, not taken for the phoneme one
    res = synthesize_corpus(tmp_path, 3, 1, 1, jobs=1, progress=False)
    assert not any(r["skipped"] for r in res.values())
    assert "words" not in _rows(tmp_path, "train")[0]
    with pytest.raises(ValueError, match="transcript"):
        synthesize_corpus(tmp_path, 3, 1, 1, progress=False, transcript="ipa")


def test_split_sentences_disjoint():
    texts = synth._split_sentences(0, {"train": 2000, "dev": 100, "test": 200})
    train = set(texts["train"])
    assert len(train) == 2000 and len(set(texts["test"])) == 200
    assert not train & set(texts["test"]) and not train & set(texts["dev"])
    assert not set(texts["dev"]) & set(texts["test"])


def test_generator_deterministic_and_in_vocabulary():
    g1, g2 = SentenceGenerator(7), SentenceGenerator(7)
    a, b = [g1.sentence() for _ in range(200)], [g2.sentence() for _ in range(200)]
    assert a == b
    assert a != [SentenceGenerator(8).sentence() for _ in range(200)]
    vocab = SentenceGenerator.vocabulary()
    assert 150 <= len(vocab) <= 300
    for s in a:
        words = s.split()
        assert 4 <= len(words) <= 12 and s == normalize(s)
        assert set(words) <= vocab
    # grammar, not word salad: sentences open with a determiner or number, "a"/"an" agree
    openers = set(synth.DET_SG) | set(synth.DET_PL) | set(synth.NUMBERS) | {"an"}
    assert all(s.split()[0] in openers for s in a)
    bigrams = {(w1, w2) for s in a for w1, w2 in zip(s.split(), s.split()[1:])}
    assert not any(w1 == "a" and w2[0] in "aeiou" for w1, w2 in bigrams)
    assert not any(w1 == "an" and w2[0] not in "aeiou" for w1, w2 in bigrams)


def test_missing_espeak_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        synthesize_corpus(tmp_path, 1, 1, 1, progress=False)
