"""Beam search with KenLM n-grams: hand-made posteriors where greedy misspells and the LM fixes
it, alpha/beta tuning, word times, the process pool, clear errors, and LM training (lmplz)."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import astctc.decode.beam as beam
from astctc.cli import main as cli
from astctc.decode import BeamConfig, BeamSearch, greedy_decode, tune
from astctc.lm import LMConfig, find_tool, import_arpa, resolve_lm, train_lm, tuned_path
from astctc.tokenizer import CharTokenizer, SentencePieceTokenizer
from astctc.words import greedy_words
from astctc.writers import to_json, to_srt

FS = 0.04  # seconds per frame in these tests
TOK = CharTokenizer.train(["the cat sat on a mat", "kids quietly jump over big fox"])


def write_arpa(path: Path, unigrams: dict[str, float], bigrams: dict[str, float] | None = None) -> Path:
    """A small ARPA file by hand: log10 probabilities, zero back-off weights (KenLM wants 2-grams)."""
    uni = {"<unk>": -3.0, "<s>": 0.0, "</s>": -1.0, **unigrams}
    bigrams = bigrams or {f"<s> {next(iter(unigrams))}": -0.5}
    lines = ["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bigrams)}"]
    lines += ["", "\\1-grams:"] + [
        f"{p}\t{w}\t0" if w not in ("</s>", "<unk>") else f"{p}\t{w}" for w, p in uni.items()
    ]
    lines += ["", "\\2-grams:"] + [f"{p}\t{w}" for w, p in bigrams.items()]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


WORDS = {w: -1.0 for w in "the cat sat on a mat".split()}


def posteriors(frames: list[dict[str, float]], tok=TOK) -> np.ndarray:
    """(T, V) log-probabilities: each frame's named labels get their probability and the rest
    of the mass is spread over the other tokens."""
    labels = tok.labels()
    out = np.empty((len(frames), tok.vocab_size), dtype=np.float32)
    for t, f in enumerate(frames):
        rest = (1.0 - sum(f.values())) / (tok.vocab_size - len(f))
        p = np.full(tok.vocab_size, rest)
        for label, prob in f.items():
            p[labels.index(label)] = prob
        out[t] = np.log(p)
    return out


def spell(text: str, confusions: dict[int, dict[str, float]] | None = None) -> np.ndarray:
    """One confident frame per character, a blank frame after each; `confusions` replaces the
    frame of character i with an ambiguous one."""
    confusions = confusions or {}
    frames = []
    for i, ch in enumerate(text):
        frames += [confusions.get(i, {ch: 0.97}), {"": 0.97}]
    return posteriors(frames)


def greedy(lp: np.ndarray) -> str:
    return greedy_decode(torch.from_numpy(lp)[None], torch.tensor([lp.shape[0]]), TOK)[0]


@pytest.fixture
def lm(tmp_path) -> Path:
    return write_arpa(tmp_path / "2gram.arpa", WORDS)


def test_lm_fixes_a_greedy_misspelling_with_word_times(lm):
    lp = spell("the cat sat", {4: {"k": 0.6, "c": 0.38}})  # "c" of "cat" sounds more like "k"
    assert greedy(lp) == "the kat sat"
    with BeamSearch(TOK, lm, BeamConfig(beam_width=16), frame_seconds=FS) as search:
        hyp = search.decode_one(lp)
        assert hyp.text == "the cat sat"
        # word times: "cat" is characters 4..6, frames 8..13, its "t" read in frame 12
        assert [(w.word, w.start, w.end) for w in hyp.words] == [
            ("the", 0.0, 0.2),
            ("cat", 8 * FS, 13 * FS),
            ("sat", 16 * FS, 21 * FS),
        ]
        no_lm = BeamSearch(TOK, None, BeamConfig(beam_width=16), frame_seconds=FS)
        assert no_lm.decode_one(lp).text == "the kat sat"  # it is the LM that fixes it


def test_collapsing_runs_changes_nothing(lm, monkeypatch):
    """Dropping frames that repeat one certain token is exact: same text, times, scores."""
    rng = np.random.default_rng(0)
    lps = []
    for text in ["the cat sat on a mat", "a cat sat", "the mat"]:
        frames = []
        for ch in text:
            frames += [{ch: float(rng.choice([0.999, 0.9, 0.6]))}] * int(rng.integers(1, 4))
            frames += [{"": float(rng.choice([0.9999, 0.95]))}] * int(rng.integers(1, 5))
        lps.append(posteriors(frames))
    assert sum(len(beam.collapse_runs(lp, -5.0)[0]) for lp in lps) < 0.6 * sum(len(lp) for lp in lps)
    with BeamSearch(TOK, lm, frame_seconds=FS) as search:
        fast = search.decode(lps)
        monkeypatch.setattr(beam, "collapse_runs", lambda lp, t: (np.arange(len(lp)), np.arange(len(lp))))
        slow = search.decode(lps)
    assert [(h.text, h.words) for h in fast] == [(h.text, h.words) for h in slow]
    assert np.allclose([h.score for h in fast], [h.score for h in slow], atol=1e-3)
    assert fast[0].text == "the cat sat on a mat"


def test_pool_is_reused_and_gets_each_calls_alpha(tmp_path):
    """One pool for all calls; alpha travels with the task (forked workers hold stale copies)."""
    lm = write_arpa(tmp_path / "2gram.arpa", WORDS, {"the cat": -0.05, "the mat": -3.0, "<s> the": -0.1})
    lps = [spell("the mat sat", {4: {"m": 0.9, "c": 0.08}})] * 4
    with BeamSearch(TOK, lm, BeamConfig(beam_width=16), frame_seconds=FS, num_workers=2) as search:
        strong = search.decode(lps, alpha=1.0, beta=0.0)
        pool = search._pool
        weak = search.decode(lps, alpha=0.1, beta=0.0)
        assert search._pool is pool and pool is not None
        assert [h.text for h in strong] == ["the cat sat"] * 4  # the LM overrules the audio
        assert [h.text for h in weak] == ["the mat sat"] * 4
        assert [h.text for h in weak] == [search.decode_one(lp, 0.1, 0.0).text for lp in lps]
        search.alpha, search.beta = 1.0, 0.0  # as tuning does, after the pool was forked
        assert [h.text for h in search.decode(lps)] == ["the cat sat"] * 4
    assert search._pool is None


def test_tuning_finds_a_better_pair_than_the_defaults(tmp_path):
    """The LM strongly prefers "the cat": alpha 0.5 overrules a clear "mat", alpha 0 cannot fix
    an unclear "cat"; only a weight in between gets both utterances right."""
    lm = write_arpa(tmp_path / "2gram.arpa", WORDS, {"the cat": -0.05, "the mat": -3.0, "<s> the": -0.1})
    lps = [spell("the mat sat", {4: {"m": 0.9, "c": 0.08}}), spell("the cat sat", {4: {"m": 0.6, "c": 0.38}})]
    refs = {"u1": "the mat sat", "u2": "the cat sat"}
    with BeamSearch(TOK, lm, BeamConfig(beam_width=16), frame_seconds=FS) as search:
        default = [h.text for h in search.decode(lps)]
        result = tune(search, lps, refs, alphas=[0.0, 0.25, 0.5, 1.0], betas=[0.0, 1.5])
    assert default != list(refs.values())
    assert result.wer == 0.0 and result.alpha == 0.25
    assert min(g["wer"] for g in result.grid if g["alpha"] == 0.5 and g["beta"] == 1.5) > 0


def test_recorded_pair_is_the_later_default(lm):
    tuned_path(lm).write_text(json.dumps({"alpha": 0.75, "beta": -0.5}))
    assert (BeamSearch(TOK, lm).alpha, BeamSearch(TOK, lm).beta) == (0.75, -0.5)
    explicit = BeamSearch(TOK, lm, BeamConfig(alpha=0.1))
    assert (explicit.alpha, explicit.beta) == (0.1, -0.5)


def test_hotwords_pull_an_unknown_word_in(lm):
    lp = spell("the fox sat", {4: {"b": 0.6, "f": 0.38}})
    with BeamSearch(TOK, lm, BeamConfig(beam_width=16, hotwords=["fox"]), frame_seconds=FS) as search:
        assert search.decode_one(lp).text == "the fox sat"


def test_sentencepiece_pieces_make_words(lm):
    tok = SentencePieceTokenizer.train(["the cat sat on a mat"] * 20 + ["a mat sat on the cat"] * 20, vocab_size=20)
    ids = tok.encode("the cat sat on a mat")
    labels = tok.labels()
    lp = posteriors([f for i in ids for f in ({labels[i]: 0.97}, {"": 0.97})], tok)
    hyp = BeamSearch(tok, lm, frame_seconds=FS).decode_one(lp)
    assert hyp.text == "the cat sat on a mat"
    assert [w.word for w in hyp.words] == hyp.text.split()
    assert all(a.end <= b.start for a, b in zip(hyp.words, hyp.words[1:]))


def test_greedy_words_agree_with_greedy_text():
    lp = spell("the kat sat")
    hyp = greedy_words(lp, TOK, FS)
    assert hyp.text == greedy(lp) == "the kat sat"
    assert [(w.word, w.start, w.end) for w in hyp.words][1] == ("kat", 8 * FS, 13 * FS)
    srt = to_srt(hyp)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:00,840\nthe kat sat\n")
    row = json.loads(to_json(hyp, "a.wav"))
    sat = row["words"][2]
    assert (sat["word"], sat["start"], sat["end"]) == ("sat", 0.64, 0.84) and 0 < sat["confidence"] <= 1


# ---- clear errors ------------------------------------------------------------------------


def test_missing_lm_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bin: language model not found"):
        BeamSearch(TOK, tmp_path / "nope.bin")


def test_lm_for_another_alphabet_is_refused(tmp_path):
    upper = write_arpa(tmp_path / "upper.arpa", {w.upper(): -1.0 for w in WORDS})
    with pytest.raises(ValueError, match=r"'A' 'C' .*different alphabet"):
        BeamSearch(TOK, upper)


def test_a_few_foreign_characters_are_named(tmp_path, caplog):
    mixed = write_arpa(tmp_path / "mixed.arpa", {**WORDS, "café": -1.0})
    with caplog.at_level(logging.WARNING):
        BeamSearch(TOK, mixed)
    assert "'é'" in caplog.text and "café" in caplog.text


def test_a_directory_needs_exactly_one_lm(tmp_path, lm):
    assert resolve_lm(tmp_path).model == lm
    write_arpa(tmp_path / "3gram.arpa", WORDS)
    with pytest.raises(ValueError, match="expected one LM"):
        resolve_lm(tmp_path)


def test_missing_tool_says_how_to_build_it():
    with pytest.raises(FileNotFoundError, match="make lm-tools"):
        find_tool("lmplz-that-does-not-exist")


def test_empty_text_and_bad_cli_use(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n ... \n")
    with pytest.raises(ValueError, match="no text"):
        train_lm([tmp_path / "empty.txt"], tmp_path / "lm")
    assert cli(["lm", "--text", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "lm")]) == 1
    assert "astctc lm: error:" in capsys.readouterr().err
    assert cli(["decode", "--model", "m", "--data", "d", "--out", "o", "--lm", "x.bin"]) == 1
    assert "need --method beam" in capsys.readouterr().err


# ---- KenLM programs (built by `make lm-tools`) -------------------------------------------


def _need(tool: str) -> None:
    try:
        find_tool(tool)
    except FileNotFoundError:
        pytest.skip(f"{tool} not built (make lm-tools)")


def test_train_lm_with_lmplz(tmp_path):
    _need("lmplz")
    text = tmp_path / "train.jsonl"
    text.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["The cat sat on a mat.", "A cat sat."] * 5))
    with pytest.raises(RuntimeError, match="--discount-fallback"):
        train_lm([text], tmp_path / "lm", LMConfig(order=3))
    files = train_lm([text], tmp_path / "lm", LMConfig(order=3, discount_fallback=True, prune=[0, 0, 1]))
    assert files.model == tmp_path / "lm" / "3gram.bin" and files.arpa.exists()
    assert sorted(files.unigrams.read_text().split()) == ["a", "cat", "mat", "on", "sat", "the"]
    lp = spell("the cat sat", {4: {"k": 0.6, "c": 0.38}})
    assert BeamSearch(TOK, files.model, frame_seconds=FS).decode_one(lp).text == "the cat sat"


def test_import_upper_case_arpa(tmp_path):
    _need("build_binary")
    src = write_arpa(tmp_path / "src.arpa", {w.upper(): -1.0 for w in WORDS})
    with open(src, "rb") as f, gzip.open(tmp_path / "4-gram.arpa.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    files = import_arpa(tmp_path / "4-gram.arpa.gz", tmp_path / "lm")
    assert files.model.name == "2gram.bin" and "cat" in files.unigrams.read_text().split()
    lp = spell("the cat sat", {4: {"k": 0.6, "c": 0.38}})
    assert BeamSearch(TOK, tmp_path / "lm", frame_seconds=FS).decode_one(lp).text == "the cat sat"
    clash = write_arpa(tmp_path / "clash.arpa", {"Cat": -1.0, "cat": -1.0})
    with pytest.raises(ValueError, match="differ only in case"):
        import_arpa(clash, tmp_path / "lm2")
