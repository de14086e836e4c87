"""Word and character error rates, scored the way NIST sclite scores them; and the
classification scores (accuracy, macro-F1, confusion matrix, mAP).

ESPnet reports its WER/CER with sclite, so our numbers have to come out of the same alignment
to be comparable. sclite does not minimise the plain edit distance: it weights an insertion or
a deletion 3 and a substitution 4, and breaks ties by its own backtrace. A unit-cost Levenshtein
aligner (jiwer, Kaldi's compute-wer) splits the errors into sub/del/ins differently in a few per
cent of utterances (ref "a b", hyp "b c": 2 sub there, 1 del + 1 ins in sclite) and, for a
shifted block of words, even finds fewer errors in total (ref "x x x a b", hyp "a b y y y": 5 sub
against sclite's 3 del + 3 ins). So the alignment here is sclite's dynamic programme, row by row
in numpy; tests/test_metrics.py checks it against the sclite binary.

CER follows ESPnet's asr.sh: the text is split into characters with the space kept as a token
(ESPnet writes it as "<space>"), so a missing or extra word boundary is one error.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astctc.text import normalize

log = logging.getLogger(__name__)

# sclite's default DP weights (sclite -o pralign prints the same alignments)
_INS, _DEL, _SUB = 3, 3, 4


@dataclass
class ErrorCounts:
    ref: int = 0
    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Error rate in percent; an empty reference with insertions is infinitely wrong."""
        if self.ref == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return 100.0 * self.errors / self.ref

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.ref + other.ref,
            self.hits + other.hits,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )


@dataclass
class UttScore:
    id: str
    ref: str
    hyp: str
    words: ErrorCounts
    chars: ErrorCounts


@dataclass
class Report:
    wer: float
    cer: float
    words: ErrorCounts
    chars: ErrorCounts
    utts: list[UttScore]
    num_utts: int
    missing: list[str] = field(default_factory=list)  # reference ids with no hypothesis

    def summary(self) -> str:
        """Kaldi compute-wer / ESPnet style lines, the ones people grep for."""
        w, c = self.words, self.chars
        wrong = sum(1 for u in self.utts if u.words.errors)
        ser = 100.0 * wrong / self.num_utts if self.num_utts else 0.0
        return (
            f"%WER {self.wer:.2f} [ {w.errors} / {w.ref}, {w.insertions} ins, "
            f"{w.deletions} del, {w.substitutions} sub ]\n"
            f"%CER {self.cer:.2f} [ {c.errors} / {c.ref}, {c.insertions} ins, "
            f"{c.deletions} del, {c.substitutions} sub ]\n"
            f"%SER {ser:.2f} [ {wrong} / {self.num_utts} ]\n"
            f"Scored {self.num_utts} sentences, {len(self.missing)} not present in hyp.\n"
        )


def align(ref: list[str], hyp: list[str]) -> ErrorCounts:
    """Count hits/sub/del/ins on sclite's alignment (ins = del = 3, sub = 4, same tie-breaks)."""
    n, m = len(ref), len(hyp)
    if ref == hyp:
        return ErrorCounts(n, hits=n)
    if n == 0 or m == 0:
        return ErrorCounts(n, deletions=n, insertions=m)
    vocab: dict[str, int] = {}
    r = np.array([vocab.setdefault(t, len(vocab)) for t in ref])
    h = np.array([vocab.setdefault(t, len(vocab)) for t in hyp])
    ins_ramp = _INS * np.arange(m + 1)
    cost = np.empty((n + 1, m + 1), dtype=np.int64)
    cost[0] = ins_ramp
    for i in range(1, n + 1):
        prev = cost[i - 1]
        best = np.empty(m + 1, dtype=np.int64)
        best[0] = prev[0] + _DEL
        best[1:] = np.minimum(prev[:-1] + _SUB * (h != r[i - 1]), prev[1:] + _DEL)
        # a run of insertions along the row is a running minimum of best[j] - 3j
        cost[i] = np.minimum.accumulate(best - ins_ramp) + ins_ramp
    out = ErrorCounts(n)
    i, j = n, m
    while i or j:  # sclite's preference when paths tie: diagonal, then insertion, then deletion
        if i and j and cost[i, j] == cost[i - 1, j - 1] + (0 if ref[i - 1] == hyp[j - 1] else _SUB):
            if ref[i - 1] == hyp[j - 1]:
                out.hits += 1
            else:
                out.substitutions += 1
            i, j = i - 1, j - 1
        elif j and cost[i, j] == cost[i, j - 1] + _INS:
            out.insertions += 1
            j -= 1
        else:
            out.deletions += 1
            i -= 1
    return out


def chars(text: str) -> list[str]:
    """Character tokens for CER, the space included (ESPnet's <space>)."""
    return list(" ".join(text.split()))


def score(refs: dict[str, str], hyps: dict[str, str], normalize_text: bool = True) -> Report:
    """Score every reference utterance; a missing hypothesis counts as all deletions."""
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ValueError(
            f"{len(extra)} hypothesis ids have no reference: {', '.join(extra[:10])}{' ...' if len(extra) > 10 else ''}"
        )
    missing = [k for k in refs if k not in hyps]
    if missing:
        log.warning(
            "%d of %d references have no hypothesis (scored as deletions): %s%s",
            len(missing),
            len(refs),
            ", ".join(missing[:10]),
            " ..." if len(missing) > 10 else "",
        )
    prep = normalize if normalize_text else (lambda s: " ".join(s.split()))
    utts = []
    words, chars_ = ErrorCounts(), ErrorCounts()
    for uid, ref_text in refs.items():
        ref, hyp = prep(ref_text), prep(hyps.get(uid, ""))
        u = UttScore(uid, ref, hyp, align(ref.split(), hyp.split()), align(chars(ref), chars(hyp)))
        words, chars_ = words + u.words, chars_ + u.chars
        utts.append(u)
    return Report(words.rate, chars_.rate, words, chars_, utts, len(utts), missing)


def write_trn(texts: dict[str, str], path) -> None:
    """sclite trn: `words (id)` a line. Score with `sclite -i rm`, which wants ids as spk-utt."""
    with open(path, "w", encoding="utf-8") as f:
        for uid, text in texts.items():
            f.write(f"{text} ({uid})\n" if text else f"({uid})\n")


def write_report(report: Report, out_dir) -> None:
    """hyp.trn/ref.trn (the scored, normalised text), wer.txt, per_utt.tsv worst first."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_trn({u.id: u.hyp for u in report.utts}, out / "hyp.trn")
    write_trn({u.id: u.ref for u in report.utts}, out / "ref.trn")
    (out / "wer.txt").write_text(report.summary(), encoding="utf-8")
    rows = sorted(report.utts, key=lambda u: (-u.words.rate, -u.words.errors, u.id))
    with open(out / "per_utt.tsv", "w", encoding="utf-8") as f:
        f.write("id\tref_words\terrors\twer\tref\thyp\n")
        for u in rows:
            f.write(f"{u.id}\t{u.words.ref}\t{u.words.errors}\t{u.words.rate:.2f}\t{u.ref}\t{u.hyp}\n")


_TRN_LINE = re.compile(r"^(.*?)\s*\(([^()\s]+)\)\s*$")


def _numbered_lines(path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the file's non-blank lines; ValueError naming the
    file and line for bytes that are not UTF-8 (a Latin-1 file, say)."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x}); save the file as UTF-8") from None
    return [(n, ln.strip()) for n, ln in enumerate(text.split("\n"), 1) if ln.strip()]


def _jsonl_row(path, n: int, line: str) -> tuple[str, str]:
    """(id, text) of one manifest line; ValueError naming the file and line for anything else."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: invalid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}:{n}: expected a JSON object with id and text, got {type(row).__name__}")
    if "id" not in row:
        raise ValueError(f"{path}:{n}: field 'id' is missing")
    uid, text = row["id"], row.get("text", "")
    if isinstance(uid, bool) or not isinstance(uid, (str, int)) or not str(uid).strip():
        raise ValueError(f"{path}:{n}: field 'id' must be a non-empty string, not {json.dumps(uid)}")
    if not isinstance(text, str):  # None or a number would reach normalize() as a TypeError
        raise ValueError(f"{path}:{n}: field 'text' must be a string, not {json.dumps(text)}")
    return str(uid), text


def read_text_file(path) -> dict[str, str]:
    """id -> text from a Kaldi `text` file, an sclite trn file or a JSONL manifest (sniffed).
    A line that cannot be read is a ValueError naming the file and the line."""
    lines = _numbered_lines(path)
    if lines and lines[0][1].startswith("{"):
        rows = [(n, *_jsonl_row(path, n, ln)) for n, ln in lines]
    elif lines and all(_TRN_LINE.match(ln) for _, ln in lines):
        rows = [(n, m.group(2), m.group(1)) for n, m in ((n, _TRN_LINE.match(ln)) for n, ln in lines)]
    else:
        rows = [
            (n, parts[0], parts[1] if len(parts) > 1 else "")
            for n, parts in ((n, ln.split(maxsplit=1)) for n, ln in lines)
        ]
    texts: dict[str, str] = {}
    first: dict[str, int] = {}
    for n, uid, text in rows:
        if uid in texts:
            raise ValueError(f"{path}:{n}: utterance id {uid} appears twice (first on line {first[uid]})")
        texts[uid], first[uid] = text, n
    return texts


def score_files(ref_path, hyp_path, out_dir=None) -> Report:
    """`astctc score`: read both files, score, and write the report files if out_dir is given.
    References without a word to score (none, or only punctuation) are an error naming the
    file: "%WER 0.00 [ 0 / 0 ]" would read as a perfect score."""
    refs = read_text_file(ref_path)
    if not refs:
        raise ValueError(f"{ref_path}: no reference utterances: nothing to score")
    report = score(refs, read_text_file(hyp_path))
    if report.words.ref == 0:
        raise ValueError(
            f"{ref_path}: none of its {len(refs)} reference(s) has a word once normalised "
            "(empty or punctuation only): nothing to score"
        )
    if out_dir is not None:
        write_report(report, out_dir)
    return report


# ---- classification -------------------------------------------------------------------------


def accuracy(ref: np.ndarray, hyp: np.ndarray) -> float:
    """Fraction of class ids that agree."""
    ref, hyp = np.asarray(ref), np.asarray(hyp)
    return float((ref == hyp).mean()) if ref.size else 0.0


def confusion_matrix(ref: np.ndarray, hyp: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, row = reference class, column = hypothesis."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(ref), np.asarray(hyp)), 1)
    return m


def macro_f1(ref: np.ndarray, hyp: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes that occur in ref or hyp (scikit-learn's average="macro")."""
    m = confusion_matrix(ref, hyp, num_classes)
    tp = np.diag(m).astype(float)
    present = (m.sum(0) + m.sum(1)) > 0
    denom = m.sum(0) + m.sum(1)  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the step precision-recall curve, ties grouped: scikit-learn's definition,
    sum_k (R_k - R_(k-1)) P_k over the distinct score thresholds."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="mergesort")
    y, score = y[order], score[order]
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]  # last index of each threshold
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    if tp[-1] == 0:
        return 0.0
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Macro mAP of (N, C) multi-hot targets and scores, over the classes with a positive.

    (scikit-learn counts a class without positives as AP 0; we leave it out, since no ranking
    can do better there.)"""
    targets = np.asarray(targets) > 0.5
    aps = [average_precision(targets[:, c], scores[:, c]) for c in range(targets.shape[1]) if targets[:, c].any()]
    return float(np.mean(aps)) if aps else 0.0
