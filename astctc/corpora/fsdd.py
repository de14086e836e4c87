"""Free Spoken Digit Dataset: manifests for a joint model, digit classification + CTC.

FSDD (Jakobovski et al., CC BY-SA 4.0) holds 8 kHz recordings named
`{digit}_{speaker}_{index}.wav`: 6 speakers x 10 digits x 50 takes. Each row carries the
digit both ways, so one model learns both heads from the same clip:

    {"id": "fsdd-7_jackson_32", "text": "seven", "speaker": "jackson", "labels": {"digit": "7"}}

Split by speaker: the test speakers (the recipe holds out `theo`) are never trained on, so the
test set measures generalisation to an unseen voice; dev is takes 0..dev_takes-1 of each training
speaker (seen voices, unseen takes), for monitoring only.

Silence trimming: FSDD's recordings are trimmed, but not alike: lucas's start 0.13 s into
the file, the others' 0.02 s. With five training voices a model learns that offset as part
of the speaker, so every clip (test included, by the same rule) is cut to the span within
`trim_db` of its loudest 10 ms frame, plus 30 ms either side. Measured on theo with four
training speakers + lucas: 71% -> 79% digit accuracy at equal training.

Synthetic voices (`synth_digits`): the ten words spoken by espeak-ng voices (accents x
variants, random rate and pitch), band-limited to FSDD's 4 kHz and trimmed the same way: many
more "speakers" than five, which teaches the model what does not depend on the voice.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Sequence

import torch

from ..audio import audio_duration, encode_flac, load_audio
from ..data.manifest import write_manifest

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
        rows.append(
            {
                "id": f"fsdd-{f.stem}",
                "audio": str(f.resolve()),
                "duration": round(audio_duration(f), 4),
                "text": WORDS[digit],
                "speaker": speaker,
                "language": "en",
                "labels": {HEAD: str(digit)},
                "take": take,
            }
        )
    return rows


def trim_silence(wav: torch.Tensor, sr: int, rel_db: float = 30.0, margin: float = 0.03) -> torch.Tensor:
    """The span of 10 ms frames within rel_db of the loudest one, with `margin` seconds kept
    either side (a clip with no such span is returned whole)."""
    hop = max(1, sr // 100)
    n = wav.numel() // hop
    if n < 1:
        return wav
    energy = 10 * torch.log10(wav[: n * hop].view(n, hop).pow(2).mean(dim=1) + 1e-10)
    loud = torch.nonzero(energy > energy.max() - rel_db).flatten()
    if loud.numel() == 0:
        return wav
    keep = int(round(margin * sr))
    return wav[max(0, int(loud[0]) * hop - keep) : min(wav.numel(), (int(loud[-1]) + 1) * hop + keep)]


def _write_trimmed(rows: list[dict], audio_dir: Path, rel_db: float, sr: int = 8000) -> None:
    """Trimmed copies of the rows' audio as FLAC at `sr` (rows are updated in place)."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    for r in rows:
        wav = trim_silence(load_audio(r["audio"], sr), sr, rel_db)
        path = audio_dir / f"{r['id']}.flac"
        path.write_bytes(encode_flac(wav, sr))
        r["audio"], r["duration"] = str(path.resolve()), round(wav.numel() / sr, 4)


def prepare_fsdd(
    recordings: str | Path, out_dir: str | Path, test_speakers: Sequence[str], dev_takes: int = 3, trim_db: float = 30.0
) -> dict:
    """Write out_dir/{train,dev,test}/manifest.jsonl and out_dir/labels/digit.txt; with
    trim_db > 0 the clips are silence-trimmed copies in out_dir/audio/ (module doc).

    Returns {set: number of rows}."""
    if not test_speakers:
        raise ValueError("no test speakers given")
    rows = fsdd_rows(recordings)
    if trim_db > 0:
        _write_trimmed(rows, Path(out_dir) / "audio", trim_db)
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


def synth_digits(
    out_dir: str | Path, num_voices: int = 100, seed: int = 0, jobs: int | None = None, trim_db: float = 30.0
) -> int:
    """The ten words in `num_voices` espeak-ng voices -> out_dir/manifest.jsonl + audio/.

    Voices are drawn from the mini recipe's voice list (accent x variant), each with its own
    rate and pitch; the audio is band-limited to FSDD's 8 kHz sampling and trimmed as
    `prepare_fsdd` trims. Returns the number of clips."""
    import multiprocessing as mp

    from ..data import synth as S

    exe = S.check_espeak()
    out = Path(out_dir)
    tmp = out / "espeak"
    tmp.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    voices = sorted(set(S.split_voices("train") + S.split_voices("dev")))
    rng.shuffle(voices)
    if num_voices > len(voices):
        raise ValueError(f"only {len(voices)} espeak-ng voices available, not {num_voices}")
    work = []
    for v in voices[:num_voices]:
        rate, pitch = rng.randint(120, 220), rng.randint(20, 80)
        for d, w in enumerate(WORDS):
            utt = f"synth-{d}_{re.sub(r'[^A-Za-z0-9-]', '-', v)}"
            work.append(
                {
                    "exe": exe,
                    "voice": v,
                    "rate": rate,
                    "pitch": pitch,
                    "text": w,
                    "id": utt,
                    "path": str(tmp / f"{utt}.flac"),
                    "digit": str(d),
                }
            )
    with mp.get_context("fork").Pool(jobs or None, initializer=S._init_worker) as pool:
        pool.map(S._synth_one, work, chunksize=16)
    rows = [
        {
            "id": j["id"],
            "audio": j["path"],
            "duration": 0.0,
            "text": j["text"],
            "speaker": j["voice"],
            "language": "en",
            "labels": {HEAD: j["digit"]},
        }
        for j in work
    ]
    _write_trimmed(rows, out / "audio", trim_db if trim_db > 0 else 200.0)
    for j in work:
        Path(j["path"]).unlink(missing_ok=True)
    tmp.rmdir()
    write_manifest(rows, out / "manifest.jsonl")
    return len(rows)
