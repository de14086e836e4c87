"""Scoring must agree with NIST sclite, which is what ESPnet's published WER/CER come from.

sclite is run as ESPnet runs it: `sclite -r ref.trn trn -h hyp.trn trn -i rm`. The rm id mode
takes the speaker from the id up to the first '-' or '_', so the ids here are `spk-utt`.
"""

import json
import logging
import os
import random
import re
import shutil
import subprocess

import pytest

from astctc.metrics import ErrorCounts, align, chars, read_text_file, score, score_files, write_report, write_trn

# id -> (reference, hypothesis, expected (hits, sub, del, ins) on sclite's alignment)
CASES = {
    "spka-01": ("the cat sat on the mat", "the cat sat on the mat", (6, 0, 0, 0)),
    "spka-02": ("a quick brown fox", "a quick brown box", (3, 1, 0, 0)),
    "spka-03": ("she sells sea shells", "she sells shells", (3, 0, 1, 0)),
    "spka-04": ("hello world", "hello big world", (2, 0, 0, 1)),
    "spkb-05": ("nothing was recognised here", "", (0, 0, 4, 0)),
    "spkb-06": ("", "uh um", (0, 0, 0, 2)),
    # unit-cost Levenshtein ties 2 sub with del+ins; sclite (sub 4, del/ins 3) takes del+ins
    "spkb-07": ("red apple", "apple pie", (1, 0, 1, 1)),
    # shifted block: Levenshtein finds 5 sub, sclite 3 del + 3 ins, one error more
    "spkb-08": ("one two three four five", "four five six seven eight", (2, 0, 3, 3)),
    # equal sclite cost (12) either way: sclite keeps the 3 substitutions
    "spkc-09": ("x x a", "a y y", (0, 3, 0, 0)),
    "spkc-10": (
        "The quick brown fox jumps over the lazy dog.",
        "the quik brown fox jumped over a lazy dog dog",
        (6, 3, 0, 1),
    ),
    "spkc-11": ("Hello, World!", "hello world", (2, 0, 0, 0)),
}


def sclite_bin() -> str:
    path = shutil.which("sclite") or "/usr/lib/sctk/bin/sclite"  # Debian keeps it off PATH
    if not os.access(path, os.X_OK):
        pytest.fail("NIST sclite not found: apt-get install sctk (make setup does)")
    return path


def run_sclite(ref_trn, hyp_trn):
    """sclite's Sum line (#Snt #Wrd Corr Sub Del Ins Err) and per-utterance (C, S, D, I)."""
    cmd = [
        sclite_bin(),
        "-r",
        str(ref_trn),
        "trn",
        "-h",
        str(hyp_trn),
        "trn",
        "-i",
        "rm",
        "-o",
        "rsum",
        "pralign",
        "stdout",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"\|\s*Sum\s*\|\s*(\d+)\s+(\d+)\s*\|\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out)
    assert m, out
    per_utt = {
        uid: tuple(map(int, v))
        for uid, *v in re.findall(r"id: \((\S+)\)\nScores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)", out)
    }
    return tuple(map(int, m.groups())), per_utt


def counts(e: ErrorCounts):
    return e.hits, e.substitutions, e.deletions, e.insertions


def test_word_counts_match_sclite(tmp_path):
    report = score({k: v[0] for k, v in CASES.items()}, {k: v[1] for k, v in CASES.items()})
    for u in report.utts:
        assert counts(u.words) == CASES[u.id][2], u.id
    write_report(report, tmp_path)
    (snt, wrd, corr, sub, dele, ins, err), per_utt = run_sclite(tmp_path / "ref.trn", tmp_path / "hyp.trn")
    w = report.words
    assert (snt, wrd, corr, sub, dele, ins, err) == (
        report.num_utts,
        w.ref,
        w.hits,
        w.substitutions,
        w.deletions,
        w.insertions,
        w.errors,
    )
    assert per_utt == {u.id: counts(u.words) for u in report.utts}
    assert report.wer == pytest.approx(100.0 * err / wrd)
    assert report.summary().startswith(
        f"%WER {100.0 * err / wrd:.2f} [ {err} / {wrd}, {ins} ins, {dele} del, {sub} sub ]"
    )


def test_random_alignments_match_sclite(tmp_path):
    """Small vocabularies make many equal-cost paths, so sclite's tie-breaks get exercised."""
    rng = random.Random(0)
    refs, hyps = {}, {}
    for k in range(400):
        ref = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        hyp = [t for t in ref if rng.random() > 0.2]
        hyp = [rng.choice("abcde") if rng.random() < 0.3 else t for t in hyp]
        hyp += [rng.choice("abcde") for _ in range(rng.randint(0, 2))]
        if k % 2:
            rng.shuffle(hyp)
        refs[f"spk-{k:04d}"], hyps[f"spk-{k:04d}"] = " ".join(ref), " ".join(hyp)
    write_trn(refs, tmp_path / "ref.trn")
    write_trn(hyps, tmp_path / "hyp.trn")
    _, per_utt = run_sclite(tmp_path / "ref.trn", tmp_path / "hyp.trn")
    assert len(per_utt) == len(refs)
    for uid in refs:
        assert counts(align(refs[uid].split(), hyps[uid].split())) == per_utt[uid], uid


def test_cer_hand_computed_and_matches_sclite(tmp_path):
    refs = {"spk-1": "hello world", "spk-2": "abc", "spk-3": "good day"}
    hyps = {"spk-1": "hello word", "spk-2": "abxcd", "spk-3": "goodday"}
    report = score(refs, hyps)
    # spk-1: "l" deleted (1/11); spk-2: "x" and "d" inserted (2/3); spk-3: space deleted (1/8)
    assert counts(report.chars) == (20, 0, 2, 2)
    assert report.chars.ref == 22
    assert report.cer == pytest.approx(100.0 * 4 / 22)
    assert "%CER 18.18 [ 4 / 22, 2 ins, 2 del, 0 sub ]" in report.summary()

    # ESPnet scores CER with sclite on character tokens, the space written as <space>
    def as_chars(texts):
        return {k: " ".join(c if c != " " else "<space>" for c in chars(v)) for k, v in texts.items()}

    write_trn(as_chars(refs), tmp_path / "ref.trn")
    write_trn(as_chars(hyps), tmp_path / "hyp.trn")
    (snt, wrd, corr, sub, dele, ins, err), _ = run_sclite(tmp_path / "ref.trn", tmp_path / "hyp.trn")
    c = report.chars
    assert (wrd, corr, sub, dele, ins) == (c.ref, c.hits, c.substitutions, c.deletions, c.insertions)


def test_missing_hypothesis_is_all_deletions_and_reported(caplog):
    with caplog.at_level(logging.WARNING):
        report = score({"s-1": "a b c", "s-2": "d e"}, {"s-1": "a b c"})
    assert report.missing == ["s-2"]
    assert "s-2" in caplog.text
    assert counts(report.words) == (3, 0, 2, 0)
    assert report.wer == pytest.approx(40.0)
    assert "Scored 2 sentences, 1 not present in hyp." in report.summary()


def test_hypothesis_without_reference_raises():
    with pytest.raises(ValueError, match="s-9"):
        score({"s-1": "a"}, {"s-1": "a", "s-9": "b"})


def test_empty_references_count_insertions():
    report = score({"s-1": "", "s-2": ""}, {"s-1": "a b", "s-2": ""})
    assert counts(report.words) == (0, 0, 0, 2)
    assert report.words.ref == 0 and report.wer == float("inf")
    assert report.utts[1].words.rate == 0.0


def test_read_text_file_formats(tmp_path):
    want = {"spk-1": "hello world", "spk-2": "", "spk-3": "it's fine"}
    kaldi = tmp_path / "text"
    kaldi.write_text("spk-1 hello world\nspk-2\nspk-3 it's fine\n")
    jsonl = tmp_path / "manifest.jsonl"
    jsonl.write_text("".join(json.dumps({"id": k, "audio": "x.flac", "text": v}) + "\n" for k, v in want.items()))
    trn = tmp_path / "hyp.trn"
    write_trn(want, trn)
    assert trn.read_text() == "hello world (spk-1)\n(spk-2)\nit's fine (spk-3)\n"
    for path in (kaldi, jsonl, trn):
        assert read_text_file(path) == want, path.name
    kaldi.write_text("a x\na y\n")
    with pytest.raises(ValueError, match="twice"):
        read_text_file(kaldi)


def test_score_files_writes_report(tmp_path):
    (tmp_path / "text").write_text("u-1 a b c d\nu-2 e f\nu-3 g\n")
    (tmp_path / "hyp.jsonl").write_text(
        '{"id": "u-1", "text": "a b c"}\n{"id": "u-2", "text": "x y"}\n{"id": "u-3", "text": "g"}\n'
    )
    report = score_files(tmp_path / "text", tmp_path / "hyp.jsonl", tmp_path / "score")
    out = tmp_path / "score"
    assert (out / "wer.txt").read_text() == report.summary()
    assert report.summary().startswith("%WER 42.86 [ 3 / 7, 0 ins, 1 del, 2 sub ]")
    rows = (out / "per_utt.tsv").read_text().splitlines()
    assert rows[0] == "id\tref_words\terrors\twer\tref\thyp"
    assert [r.split("\t")[0] for r in rows[1:]] == ["u-2", "u-1", "u-3"]
    assert rows[1] == "u-2\t2\t2\t100.00\te f\tx y"
    assert read_text_file(out / "ref.trn") == {"u-1": "a b c d", "u-2": "e f", "u-3": "g"}
