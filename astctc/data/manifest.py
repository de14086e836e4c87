"""Manifests: one utterance a line of JSON, the interface between corpus preparation and shards.

    {"id": "1089-134686-0000", "audio": "wav/1089-134686-0000.flac", "duration": 10.43,
     "text": "he hoped ...", "speaker": "1089", "language": "en", "labels": {}}

`id`, `audio` and `duration` are required; `text`, `speaker`, `language` and `labels` default to
"", null, null and {}. Other fields are kept as they are. Relative `audio` paths are relative to
the manifest's directory, so a data directory can be moved or copied as a whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

DEFAULTS = {"text": "", "speaker": None, "language": None, "labels": {}}


def _check(row, where: str) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("id", "audio", "duration"):
        if key not in row:
            raise ValueError(f"{where}: field {key!r} is missing (rows need id, audio and duration)")
    for key in ("id", "audio"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise ValueError(f"{where}: field {key!r} must be a non-empty string")
    dur = row.get("duration")
    if isinstance(dur, bool) or not isinstance(dur, (int, float)) or not dur >= 0:
        raise ValueError(f"{where}: field 'duration' must be a number >= 0, got {dur!r}")
    for key, default in DEFAULTS.items():
        if row.get(key) is None:
            row[key] = {} if key == "labels" else default
    if not isinstance(row["text"], str):
        raise ValueError(f"{where}: field 'text' must be a string")
    for key in ("speaker", "language"):
        if row[key] is not None and not isinstance(row[key], str):
            raise ValueError(f"{where}: field {key!r} must be a string or null")
    if not isinstance(row["labels"], dict):
        raise ValueError(f"{where}: field 'labels' must be an object")
    return row


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL manifest; `audio` comes back as an absolute path.

    Raises ValueError naming `file:line` for a line that is not UTF-8 or not a valid row, and
    for an id seen twice (shards and scoring key everything by id).
    """
    path = Path(path)
    base = path.resolve().parent
    rows, seen = [], {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{where}: not UTF-8 text (byte {e.start + 1} of the line is {raw[e.start]:#04x})"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e})") from None
            row = _check(row, where)
            if row["id"] in seen:
                raise ValueError(f"{where}: duplicate id {row['id']!r} (first on line {seen[row['id']]})")
            seen[row["id"]] = lineno
            row["audio"] = os.path.normpath(os.path.join(base, os.path.expanduser(row["audio"])))
            rows.append(row)
    return rows


def write_manifest(rows: Iterable[dict], path: str | os.PathLike) -> None:
    """Write rows as JSONL, atomically (a reader never sees half a file).

    Audio paths inside the manifest's directory are written relative to it (portable data
    directories); others are written as given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                row = dict(row)
                audio = row.get("audio")
                if isinstance(audio, str) and os.path.isabs(audio):
                    rel = os.path.relpath(audio, base)
                    if not rel.startswith(".."):
                        row["audio"] = rel
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
