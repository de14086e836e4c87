"""Word n-gram language models for beam search: train one with KenLM, or import an ARPA file.

An LM is a few files side by side (`data/lm/` by convention), named after its order:

    4gram.arpa           ARPA text; words lower-cased and normalised like the model's targets
    4gram.bin            KenLM binary (build_binary): what the decoder loads, mmap-ed in
                         milliseconds where an ARPA takes seconds to parse
    4gram.unigrams.txt   the word list; pyctcdecode needs it to score partial words and cannot
                         read it back from a binary
    4gram.tuned.json     the best (alpha, beta) found by `astctc decode --tune`

Training text goes through `astctc.text.normalize`, the function that made the acoustic
model's targets, so the LM and the model spell words with one alphabet.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .text import normalize

log = logging.getLogger(__name__)

SPECIAL_WORDS = {"<s>", "</s>", "<unk>"}
LM_SUFFIXES = (".bin", ".binary", ".arpa")


@dataclass
class LMConfig:
    order: int = 4
    prune: list[int] = field(default_factory=list)  # lmplz --prune: per-order count thresholds
    discount_fallback: bool = False  # lmplz's fallback for tiny corpora (see train_lm)
    memory: str = "10%"  # lmplz -S: sorting memory (GNU sort units: 10%, 2G)
    binary_type: str = "probing"  # build_binary data structure: probing (fast) or trie (small)


@dataclass
class LMFiles:
    """The files of one LM; `model` is what the decoder loads (the binary when there is one)."""

    model: Path
    unigrams: Path
    arpa: Path | None = None

    @property
    def tuned(self) -> Path:
        return tuned_path(self.model)


def open_text(path: str | Path):
    p = Path(path)
    return gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8")


@contextmanager
def utf8_named(path: str | Path):
    """Turn a UnicodeDecodeError (or a broken gzip stream) inside the block into a ValueError
    naming the file. (Not the line: a text reader decodes blocks ahead of the line it returns.)"""
    try:
        yield
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason}: {e.object[e.start : e.start + 1]!r})") from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"{path}: broken gzip file ({e})") from None


def find_tool(name: str) -> str:
    """A KenLM program: the running venv's bin, then $VIRTUAL_ENV/bin, then PATH."""
    candidates = [Path(sys.executable).parent / name]
    if os.environ.get("VIRTUAL_ENV"):
        candidates.append(Path(os.environ["VIRTUAL_ENV"]) / "bin" / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"KenLM's {name} is not installed (looked in {candidates[0].parent} and PATH); "
        "build it with `make lm-tools` or `lm/build_kenlm.sh`"
    )


def read_sentences(paths: Iterable[str | Path]) -> Iterator[str]:
    """Normalised sentences from text files (one a line) or JSONL manifests (`text` field).

    The format is decided per file from its first non-empty line: `{` means JSONL.
    """
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file")
        with open_text(path) as f, utf8_named(path):
            jsonl = None
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if jsonl is None:
                    jsonl = line.lstrip().startswith("{")
                if jsonl:
                    try:
                        text = json.loads(line).get("text", "")
                    except (json.JSONDecodeError, AttributeError):
                        raise ValueError(f"{path}:{lineno}: not a JSON object") from None
                    if not isinstance(text, str):
                        raise ValueError(f"{path}:{lineno}: field 'text' must be a string")
                else:
                    text = line
                text = normalize(text)
                if text:
                    yield text


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    log.info("%s", " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith(("----", "****"))]
        tail = "\n".join(lines[-6:])  # lmplz's progress bars say nothing
        hint = ""
        if "discount" in r.stderr.lower():
            hint = (
                "\nThe corpus is too small or too uniform for Kneser-Ney discount estimation; "
                "rerun with --discount-fallback."
            )
        raise RuntimeError(f"{what} failed (exit {r.returncode}):\n{tail}{hint}")
    return r


def arpa_order(path: str | Path) -> int:
    """Highest n-gram order declared in an ARPA file's \\data\\ header."""
    order = 0
    with open_text(path) as f, utf8_named(path):
        for line in f:
            line = line.strip()
            if line.startswith("ngram ") and "=" in line:
                order = max(order, int(line[6:].split("=")[0]))
            elif line.startswith("\\1-grams:"):
                break
    if order == 0:
        raise ValueError(f"{path}: not an ARPA file (no \\data\\ header with 'ngram N=' lines)")
    return order


def arpa_unigrams(path: str | Path) -> list[str]:
    """The words of an ARPA file's 1-gram section, minus <s>, </s> and <unk>."""
    words, inside = [], False
    with open_text(path) as f, utf8_named(path):
        for line in f:
            if line.startswith("\\"):
                if inside:
                    break
                inside = line.strip() == "\\1-grams:"
                continue
            parts = line.rstrip("\n").split("\t")
            if inside and len(parts) >= 2 and parts[1] not in SPECIAL_WORDS:
                words.append(parts[1])
    if not words:
        raise ValueError(f"{path}: no unigrams in the ARPA file")
    return words


def write_unigrams(words: Iterable[str], path: Path) -> Path:
    path.write_text("".join(w + "\n" for w in words), encoding="utf-8")
    return path


def build_binary(arpa: Path, out: Path, binary_type: str = "probing") -> Path:
    if binary_type not in ("probing", "trie"):
        raise ValueError(f"binary type must be probing or trie, not {binary_type!r}")
    tmp = out.with_name(out.name + ".tmp")
    _run([find_tool("build_binary"), "-s", binary_type, str(arpa), str(tmp)], "build_binary")
    tmp.replace(out)
    return out


def train_lm(texts: list[str | Path], out_dir: str | Path, cfg: LMConfig = LMConfig()) -> LMFiles:
    """Estimate a modified Kneser-Ney n-gram (lmplz) on normalised text; write ARPA, binary, words."""
    if cfg.order < 1:
        raise ValueError(f"n-gram order must be at least 1, not {cfg.order}")
    if cfg.prune and (len(cfg.prune) > cfg.order or any(b < a for a, b in zip(cfg.prune, cfg.prune[1:]))):
        raise ValueError(
            f"--prune {' '.join(map(str, cfg.prune))}: at most one threshold per order "
            f"({cfg.order}), not decreasing (lmplz's rule)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{cfg.order}gram"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        n = 0
        with open(corpus, "w", encoding="utf-8") as f:
            for sentence in read_sentences(texts):
                f.write(sentence + "\n")
                n += 1
        if n == 0:
            raise ValueError(
                f"{', '.join(map(str, texts))}: no text to train a language model on (empty after normalisation)"
            )
        arpa = stem.with_suffix(".arpa")
        cmd = [
            find_tool("lmplz"),
            "-o",
            str(cfg.order),
            "-S",
            cfg.memory,
            "-T",
            tmp,
            "--text",
            str(corpus),
            "--arpa",
            str(Path(tmp) / "lm.arpa"),
        ]
        if cfg.prune:
            cmd += ["--prune", *map(str, cfg.prune)]
        if cfg.discount_fallback:
            cmd.append("--discount_fallback")
        _run(cmd, "lmplz")
        shutil.move(str(Path(tmp) / "lm.arpa"), arpa)
    log.info("%s: %d-gram on %d sentences", arpa, cfg.order, n)
    return _finish(arpa, stem, cfg.binary_type)


def _finish(arpa: Path, stem: Path, binary_type: str) -> LMFiles:
    unigrams = write_unigrams(arpa_unigrams(arpa), stem.with_suffix(".unigrams.txt"))
    binary = build_binary(arpa, stem.with_suffix(".bin"), binary_type)
    stale = tuned_path(binary)
    if stale.exists():  # alpha/beta tuned for the old LM do not hold for the new one
        stale.unlink()
    return LMFiles(binary, unigrams, arpa)


def import_arpa(arpa_in: str | Path, out_dir: str | Path, binary_type: str = "probing") -> LMFiles:
    """Copy an ARPA (plain or .gz, e.g. OpenSLR 11's 4-gram.arpa.gz) lower-cased, then binarise.

    pyctcdecode looks words up as the decoder spells them, and our models emit lower case;
    LibriSpeech's LMs are upper case. Lower-casing a whole ARPA is safe (numbers and section
    headers do not change) unless two words differ only in case: their n-grams would collide,
    which is refused rather than silently merged with wrong probabilities.
    """
    src = Path(arpa_in)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such ARPA file")
    order = arpa_order(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{order}gram"
    arpa = stem.with_suffix(".arpa")
    if arpa.resolve() == src.resolve():
        raise ValueError(f"{src}: the output would overwrite the input; choose another --out")
    tmp = arpa.with_name(arpa.name + ".tmp")
    seen: dict[str, str] = {}
    section = ""
    with open_text(src) as f, open(tmp, "w", encoding="utf-8") as g, utf8_named(src):
        for line in f:
            low = line.lower()
            if line.startswith("\\"):
                section = line.strip()
            elif section == "\\1-grams:":
                parts = line.split("\t")
                if len(parts) >= 2:
                    word = parts[1].strip()
                    key = word.lower()
                    if key in seen and seen[key] != word:
                        tmp.unlink()
                        raise ValueError(
                            f"{src}: words {seen[key]!r} and {word!r} differ only in case; "
                            "lower-casing would merge their n-grams. Train an LM on normalised "
                            "text instead (astctc lm --text ...)"
                        )
                    seen[key] = word
            g.write(low)
            if section.startswith("\\2-grams"):
                break
        while chunk := f.read(1 << 24):  # past the words: lower-case the rest in bulk (GBs for 4-grams)
            g.write(chunk.lower())
    tmp.replace(arpa)
    log.info("%s: %d-gram, %d words (lower-cased from %s)", arpa, order, len(set(seen) - SPECIAL_WORDS), src)
    return _finish(arpa, stem, binary_type)


def tuned_path(model: str | Path) -> Path:
    """Where `decode --tune` records alpha/beta for an LM: beside it, `<stem>.tuned.json`."""
    p = Path(model)
    name = p.name
    for suffix in (".gz",) + LM_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return p.with_name(name + ".tuned.json")


KENLM_MAGIC = b"mmap lm http://kheafield.com/code"  # how every KenLM binary begins (binary_format.cc)


def check_kenlm_file(path: str | Path) -> None:
    """ValueError naming the file unless it begins as KenLM's loader expects: a KenLM binary's
    header, or an ARPA file's `\\data\\` line (after blank and `#` lines, as KenLM allows).
    Checked before anything is decoded, so a wrong file fails in milliseconds, by name."""
    p = Path(path)
    with open(p, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith(KENLM_MAGIC):
        return
    if head[:2] == b"\x1f\x8b":
        raise ValueError(f"{p}: a gzip file, not a KenLM model; import it first (astctc lm --arpa {p} --out DIR)")
    for line in head.split(b"\n"):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        if line == b"\\data\\":
            return
        break
    raise ValueError(
        f"{p}: not a KenLM model (neither a KenLM binary nor an ARPA file starting with \\data\\); "
        "train one with `astctc lm` or import an ARPA with `astctc lm --arpa`"
    )


def resolve_lm(path: str | Path) -> LMFiles:
    """An LM file (.bin/.arpa) or a directory holding exactly one, with its word list.

    The word list is `<stem>.unigrams.txt` beside the model; an ARPA can stand in for it.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: language model not found (train one with `astctc lm`)")
    if p.is_dir():
        found = sorted(q for q in p.iterdir() if q.suffix in (".bin", ".binary"))
        found = found or sorted(p.glob("*.arpa"))
        if len(found) != 1:
            names = ", ".join(q.name for q in found) or "none"
            raise ValueError(f"{p}: expected one LM (.bin or .arpa) in the directory, found {names}; name the file")
        p = found[0]
    if p.name.endswith(".gz"):
        raise ValueError(f"{p}: KenLM cannot load a compressed ARPA; import it first (astctc lm --arpa {p} --out DIR)")
    check_kenlm_file(p)
    stem = tuned_path(p).name[: -len(".tuned.json")]
    unigrams = p.with_name(stem + ".unigrams.txt")
    arpa = p.with_name(stem + ".arpa")
    if not unigrams.exists():
        if p.suffix == ".arpa":
            return LMFiles(p, p, p)
        if arpa.exists():
            return LMFiles(p, arpa, arpa)
        raise FileNotFoundError(
            f"{p}: no word list beside it ({unigrams.name}); rebuild the LM "
            "with `astctc lm` or write one word a line there"
        )
    return LMFiles(p, unigrams, arpa if arpa.exists() else None)


def load_unigrams(files: LMFiles) -> list[str]:
    if files.unigrams.suffix == ".arpa" or files.unigrams.name.endswith(".arpa.gz"):
        return arpa_unigrams(files.unigrams)
    with utf8_named(files.unigrams):
        words = [w for w in files.unigrams.read_text(encoding="utf-8").split() if w not in SPECIAL_WORDS]
    if not words:
        raise ValueError(f"{files.unigrams}: empty word list")
    return words
