"""Free Spoken Digit Dataset: manifests for a joint model, digit classification + CTC.

FSDD (Jakobovski et al., CC BY-SA 4.0) holds 8 kHz recordings named
`{digit}_{speaker}_{index}.wav`: 6 speakers x 10 digits x 50 takes. Each row carries the
digit both ways, so one model learns both heads from the same clip:

    {"id": "fsdd-7_jackson_32", "text": "seven", "speaker": "jackson", "labels": {"digit": "7"}}

Split by speaker: the test speakers (default `theo`) are never trained on, so the test set
measures generalisation to an unseen voice; dev is takes 0..dev_takes-1 of each training
speaker (seen voices, unseen takes), for monitoring only.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from ..audio import audio_duration
from .manifest import write_manifest

log = logging.getLogger(__name__)

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
HEAD = "digit"
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def fsdd_rows(recordings: str | Path) -> list[dict]:
    """Manifest rows of every `{digit}_{speaker}_{index}.wav` under `recordings`, sorted."""
    root = Path(recordings)
    files = sorted(root.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"{root}: no FSDD recordings (*.wav)")
    rows = []
    for f in files:
        m = _NAME.match(f.name)
        if not m:
            log.warning("%s: not an FSDD file name ({digit}_{speaker}_{index}.wav); skipped", f)
            continue
        digit, speaker, take = int(m[1]), m[2], int(m[3])
        rows.append({
            "id": f"fsdd-{f.stem}", "audio": str(f.resolve()), "duration": round(audio_duration(f), 4),
            "text": WORDS[digit], "speaker": speaker, "language": "en",
            "labels": {HEAD: str(digit)}, "take": take,
        })
    return rows


def prepare_fsdd(recordings: str | Path, out_dir: str | Path, test_speakers=("theo",), dev_takes: int = 3) -> dict:
    """Write out_dir/{train,dev,test}/manifest.jsonl and out_dir/labels/digit.txt.

    Returns {set: number of rows}."""
    rows = fsdd_rows(recordings)
    test_speakers = set(test_speakers)
    missing = test_speakers - {r["speaker"] for r in rows}
    if missing:
        raise ValueError(f"{recordings}: no recordings of test speaker(s) {sorted(missing)}")
    sets = {
        "test": [r for r in rows if r["speaker"] in test_speakers],
        "dev": [r for r in rows if r["speaker"] not in test_speakers and r["take"] < dev_takes],
        "train": [r for r in rows if r["speaker"] not in test_speakers and r["take"] >= dev_takes],
    }
    out = Path(out_dir)
    for name, part in sets.items():
        write_manifest(part, out / name / "manifest.jsonl")
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "labels" / f"{HEAD}.txt").write_text("".join(f"{d}\n" for d in range(10)))
    return {name: len(part) for name, part in sets.items()}
