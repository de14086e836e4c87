"""CMU AN4 (alphanumeric census utterances, ~1991; free for any use): people spelling names and
addresses, saying digits and a few commands, on a close-talking microphone, 16 kHz. Its archive
`an4_sphere.tar.gz` unpacks to `an4/` with

    wav/an4_clstk/<spk>/<file id>.sph        training: 948 utterances, 74 speakers, 42 min
    wav/an4test_clstk/<spk>/<file id>.sph    test: 130 utterances, 10 speakers, 6 min
    etc/an4_{train,test}.transcription       sphinx lines `<s> TEXT </s> (<file id>)`
    etc/an4_{train,test}.fileids, an4.dic    README, LICENSE

A file id is `<prefix>-<spk>-<b>` (`an251-fash-b`). The test transcription has no `<s>` marks,
and its fileids list has 117 of the 130 utterances, so the transcriptions, not the fileids, are
the index (as in ESPnet). Audio is NIST SPHERE, 16-bit PCM (libsndfile reads it); a copy with
`.flac` (or `.wav`) files in the same places is read the same way.

Splits are ESPnet's (egs2/an4/asr1/local/data.sh and data_prep.py), so results compare with its
published ones: utterance ids are `<spk>-<prefix>-<b>`, speaker first, sorted; the first 100 of
the sorted training list are dev (`train_dev`: eight speakers, whole, as it happens), the other
848 train (`train_nodev`), the 130 test utterances test.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..data.manifest import write_manifest

log = logging.getLogger(__name__)

# CMU's own location (plain HTTP); CMU publishes no checksum for it, so a download is unverified
URL = "http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz"
ARCHIVE = "an4_sphere.tar.gz"
NUM_DEV = 100  # ESPnet's ndev_utt
AUDIO_DIRS = {"train": "an4_clstk", "test": "an4test_clstk"}
AUDIO_SUFFIXES = (".sph", ".flac", ".wav")  # as published; a lossless copy
# `[<s>] TEXT [</s>] (file id)`; the text may be empty between the marks
_LINE = re.compile(r"^(?:<s>\s*)?(.*?)\s*(?:</s>)?\s*\(([^()\s]+)\)$")
_FILE_ID = re.compile(r"^([^-\s]+)-([^-\s]+)-([^-\s]+)$")


def find_root(path: str | Path) -> Path:
    """The directory holding etc/an4_train.transcription: `path` itself or its an4/."""
    path = Path(path)
    for cand in (path, path / "an4"):
        if (cand / "etc" / "an4_train.transcription").is_file():
            return cand
    raise FileNotFoundError(f"{path}: no etc/an4_train.transcription (expected AN4's layout: etc/ and wav/)")


def utt_id(file_id: str) -> str:
    """ESPnet's utterance id: the speaker first (`an251-fash-b` -> `fash-an251-b`)."""
    m = _FILE_ID.match(file_id)
    if not m:
        raise ValueError(f"file id {file_id!r}: expected <prefix>-<speaker>-<b>")
    return f"{m[2]}-{m[1]}-{m[3]}"


def read_transcription(path: str | Path) -> list[tuple[str, str]]:
    """(file id, text) of every line of a sphinx transcription file, `<s>`/`</s>` dropped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            m = _LINE.match(line)
            if not m or not _FILE_ID.match(m[2]):
                raise ValueError(f"{path}:{lineno}: expected '<s> TEXT </s> (prefix-speaker-b)', got {line[:60]!r}")
            rows.append((m[2], m[1]))
    if not rows:
        raise ValueError(f"{path}: no utterances")
    return rows


def _audio(root: Path, part: str, spk: str, file_id: str) -> Path | None:
    for suffix in AUDIO_SUFFIXES:
        p = root / "wav" / AUDIO_DIRS[part] / spk / f"{file_id}{suffix}"
        if p.is_file():
            return p
    return None


def part_rows(root: str | Path, part: str) -> list[dict]:
    """Manifest rows of `train` or `test`, sorted by utterance id (ESPnet's order). A listed
    utterance without audio is an error naming how many and the first."""
    from ..audio import audio_duration  # here: it imports torch, which a download does not need

    root = find_root(root)
    trans = root / "etc" / f"an4_{part}.transcription"
    rows, missing, seen = [], [], set()
    for file_id, text in read_transcription(trans):
        uid = utt_id(file_id)
        if uid in seen:
            raise ValueError(f"{trans}: {file_id} is listed twice")
        seen.add(uid)
        spk = uid.split("-", 1)[0]
        audio = _audio(root, part, spk, file_id)
        if audio is None:
            missing.append(f"wav/{AUDIO_DIRS[part]}/{spk}/{file_id}")
            continue
        row = {"id": uid, "audio": str(audio.resolve()), "duration": round(audio_duration(audio), 4), "text": text}
        rows.append({**row, "speaker": spk, "language": "en", "labels": {}, "file_id": file_id})
    if missing:
        raise FileNotFoundError(
            f"{trans}: {len(missing)} utterance(s) have no audio ({'/'.join(AUDIO_SUFFIXES)}), the first {missing[0]}"
        )
    return sorted(rows, key=lambda r: r["id"])


def prepare(root: str | Path, out_dir: str | Path, num_dev: int = NUM_DEV) -> dict[str, int]:
    """Write out_dir/{train,dev,test}/manifest.jsonl by ESPnet's split: the first `num_dev` of
    the sorted training utterances are dev, the rest train; the test list is test."""
    train = part_rows(root, "train")
    if not 0 < num_dev < len(train):
        raise ValueError(f"{find_root(root)}: cannot hold out {num_dev} of {len(train)} training utterances for dev")
    sets = {"train": train[num_dev:], "dev": train[:num_dev], "test": part_rows(root, "test")}
    for part, rows in sets.items():
        write_manifest(rows, Path(out_dir) / part / "manifest.jsonl")
        speakers = len({r["speaker"] for r in rows})
        log.info(
            "%s: %d utterances, %d speakers, %.1f min", part, len(rows), speakers, sum(r["duration"] for r in rows) / 60
        )
    return {part: len(rows) for part, rows in sets.items()}


def download(out_dir: str | Path, url: str = URL, sha256: str | None = None, md5: str | None = None) -> Path:
    """Fetch (resumable; checked against `sha256`/`md5` when given, else only for completeness
    and reported as unverified: CMU publishes no checksum) and unpack the archive; return the
    an4 root."""
    from .download import extract, fetch

    out = Path(out_dir)
    expected = {k: v for k, v in (("sha256", sha256), ("md5", md5)) if v}
    archive = fetch(url, out / ARCHIVE, **expected)
    return find_root(extract(archive, out))
