"""LJSpeech 1.1 (Ito & Johnson 2017, public domain): 13,100 clips, 24 h, one reader of
non-fiction books, 22.05 kHz. Its archive unpacks to `LJSpeech-1.1/` with

    wavs/LJ001-0001.wav ...        metadata.csv: id|raw transcription|normalised transcription
    README

The id is `LJ<chapter>-<clip>`: 50 chapters (LJ001 ... LJ050), clips numbered within a chapter.
The normalised column (numbers, ordinals and units written out as words) is the target.

Splits are whole chapters or ranges of clips, never a random draw, so no sentence of a held-out
passage is trained on. A split names its members as chapters (`LJ049`) or inclusive id ranges
(`LJ001-0151..LJ001-0168`); the rest is the training set. The full-corpus defaults hold out
the last two chapters (LJ049 dev, LJ050 test; about 2.6 % of the corpus each).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from ..audio import audio_duration
from ..data.manifest import write_manifest

log = logging.getLogger(__name__)

URL = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"
# The published archive's sha256 (2,748,572,632 bytes), as pytorch/audio's
# torchaudio/datasets/ljspeech.py (_RELEASE_CONFIGS) and Homebrew's formula list it.
SHA256 = "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"
DEV = ("LJ049",)
TEST = ("LJ050",)
_ID = re.compile(r"LJ\d{3}-\d{4}")
_CHAPTER = re.compile(r"LJ\d{3}")


def find_root(path: str | Path) -> Path:
    """The directory holding metadata.csv: `path` itself or its LJSpeech-1.1/."""
    path = Path(path)
    for cand in (path, path / "LJSpeech-1.1"):
        if (cand / "metadata.csv").exists():
            return cand
    raise FileNotFoundError(f"{path}: no metadata.csv (expected LJSpeech's layout: metadata.csv and wavs/)")


def parse_split(items: str | list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """'LJ049 LJ001-0151..LJ001-0168' (spaces or commas) -> inclusive (first, last) id ranges."""
    if isinstance(items, str):
        items = items.replace(",", " ").split()
    ranges = []
    for item in items:
        if _CHAPTER.fullmatch(item):
            ranges.append((f"{item}-0000", f"{item}-9999"))
        elif ".." in item and all(_ID.fullmatch(x) for x in item.split("..", 1)):
            first, last = item.split("..", 1)
            if first > last:
                raise ValueError(f"split item {item!r}: the range is empty ({first} sorts after {last})")
            ranges.append((first, last))
        else:
            raise ValueError(f"split item {item!r}: expected a chapter (LJ049) or a range (LJ001-0151..LJ001-0168)")
    return ranges


def _in(uid: str, ranges: list[tuple[str, str]]) -> bool:
    return any(first <= uid <= last for first, last in ranges)


def read_metadata(root: Path) -> list[tuple[str, str]]:
    """(id, normalised transcription) for every line of metadata.csv."""
    rows = []
    with open(root / "metadata.csv", encoding="utf-8", newline="") as f:
        # QUOTE_NONE: transcriptions hold unbalanced quote marks
        for lineno, rec in enumerate(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), 1):
            if not rec:
                continue
            if len(rec) != 3 or not _ID.fullmatch(rec[0]):
                raise ValueError(f"{root}/metadata.csv:{lineno}: expected 'LJnnn-nnnn|raw text|normalised text'")
            rows.append((rec[0], rec[2].strip()))
    if not rows:
        raise ValueError(f"{root}/metadata.csv: no utterances")
    return rows


def _audio(root: Path, uid: str) -> Path | None:
    for ext in (".wav", ".flac"):  # upstream has .wav; a resampled copy may be .flac
        p = root / "wavs" / f"{uid}{ext}"
        if p.exists():
            return p
    return None


def prepare(
    root: str | Path, out_dir: str | Path, dev: str | list[str] = DEV, test: str | list[str] = TEST
) -> dict[str, int]:
    """Write out_dir/{train,dev,test}/manifest.jsonl: `dev` and `test` (parse_split) held out,
    the rest for training. A clip listed without audio is an error naming how many and the first."""
    root = find_root(root)
    dev_r, test_r = parse_split(dev), parse_split(test)
    meta = read_metadata(root)
    both = [uid for uid, _ in meta if _in(uid, dev_r) and _in(uid, test_r)]
    if both:
        raise ValueError(f"dev and test overlap: {len(both)} clips, the first {both[0]}")
    sets: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    missing = []
    for uid, text in meta:
        audio = _audio(root, uid)
        if audio is None:
            missing.append(uid)
            continue
        part = "dev" if _in(uid, dev_r) else "test" if _in(uid, test_r) else "train"
        row = {"id": uid, "audio": str(audio.resolve()), "duration": round(audio_duration(audio), 4), "text": text}
        sets[part].append({**row, "speaker": "LJ", "language": "en"})
    if missing:
        raise FileNotFoundError(
            f"{root}/wavs: {len(missing)} clip(s) of metadata.csv have no audio (.wav or .flac), the first {missing[0]}"
        )
    for part, rows in sets.items():
        if not rows:
            raise ValueError(f"{root}: the {part} set is empty (dev {dev!r}, test {test!r})")
        write_manifest(rows, Path(out_dir) / part / "manifest.jsonl")
        log.info("%s: %d clips, %.2f h", part, len(rows), sum(r["duration"] for r in rows) / 3600)
    return {part: len(rows) for part, rows in sets.items()}


def download(out_dir: str | Path, url: str = URL, sha256: str | None = None, md5: str | None = None) -> Path:
    """Fetch (resumable, checked against the published sha256 at the published URL; another
    `url` against `sha256`/`md5` when given, else only for completeness and reported as
    unverified) and unpack the archive; return the LJSpeech-1.1 root."""
    from .download import extract, fetch

    out = Path(out_dir)
    expected = {"sha256": sha256, "md5": md5} if sha256 or md5 else {"sha256": SHA256} if url == URL else {}
    archive = fetch(url, out / "LJSpeech-1.1.tar.bz2", **{k: v for k, v in expected.items() if v})
    return find_root(extract(archive, out))
