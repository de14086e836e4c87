"""LibriSpeech (OpenSLR 12), Mini LibriSpeech (OpenSLR 31) and the LM files (OpenSLR 11):
download, manifests.

An OpenSLR 12 archive `<subset>.tar.gz` unpacks to

    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

(plus README.TXT, SPEAKERS.TXT, ... at the top), one `<utterance id> <TRANSCRIPT>` line per
utterance in the chapter's trans.txt. Transcripts are upper case, single spaces, and carry no
punctuation but the apostrophe (DON'T, JOHN'S).

Manifest `text` is that transcript exactly as published (upper case): the manifest is a record
of the corpus, not of one model's conventions. `astctc.text.normalize` lower-cases it where
targets, language models and scoring need it, and leaves the apostrophes, so the model, the
OpenSLR 11 4-gram (lower-cased on import) and the references all spell words alike.

The audio of an utterance is whatever file in its chapter directory is named after it: `.flac`
as published, `.opus` or `.wav` in a re-encoded copy (libsndfile reads each).

Mini LibriSpeech (OpenSLR 31) is two subsets in the same layout: train-clean-5 (1,519
utterances, 5.3 h, 28 speakers, drawn from train-clean-100) and dev-clean-2 (drawn from
dev-clean); `prepare_mini` makes its train/dev/test manifests (see there for the splits).
"""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

from ..data.manifest import write_manifest
from ..text import normalize
from .download import DownloadError, digest_kw, extract, extracted, fetch_many, join_source, read_checksums, remove

log = logging.getLogger(__name__)

MIRROR = "https://www.openslr.org/resources/12"
LM_MIRROR = "https://www.openslr.org/resources/11"
TRAIN_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")
EVAL_SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other")
SUBSETS = TRAIN_SUBSETS + EVAL_SUBSETS
TRAIN_SETS = {"100": TRAIN_SUBSETS[:1], "460": TRAIN_SUBSETS[:2], "960": TRAIN_SUBSETS}
MINI_MIRROR = "https://www.openslr.org/resources/31"
MINI_SUBSETS = ("train-clean-5", "dev-clean-2")
# Speakers of train-clean-5 held out whole for dev where there is no dev-clean-2 (a copy of
# train-clean-5 alone): one woman and one man (SPEAKERS.TXT) with the median's utterance count,
# 6272 (F, 42 utterances, 9.4 min) and 3242 (M, 45, 8.8 min); the 28 speakers have 18 to 119.
MINI_DEV_SPEAKERS = ("6272", "3242")

# md5 of the published files: OpenSLR's md5sum.txt for resources 12 and 11
# (https://www.openslr.org/resources/12/md5sum.txt, .../11/md5sum.txt); all fourteen values are
# the same in sdrobert/pytorch-database-prep librispeech.py (FILE2MD5), the seven archives' in
# PaddlePaddle/PaddleSpeech dataset/librispeech/librispeech.py.
MD5 = {
    "dev-clean.tar.gz": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other.tar.gz": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean.tar.gz": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other.tar.gz": "fb5a50374b501bb3bac4815ee91d3135",
    "train-clean-100.tar.gz": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360.tar.gz": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500.tar.gz": "d1a0fd59409feb2c614ce4d30c387708",
    # OpenSLR 31 (Mini LibriSpeech): as PaddlePaddle/PaddleSpeech dataset/mini_librispeech/
    # mini_librispeech.py lists them (MD5_TRAIN_CLEAN, MD5_DEV_CLEAN); other projects agree
    "train-clean-5.tar.gz": "5df7d4e78065366204ca6845bb08f490",
    "dev-clean-2.tar.gz": "6d7ab67ac6a1d2c993d050e16d61080d",
}
LM_MD5 = {
    "3-gram.arpa.gz": "74cbb837e582378c26c602e1c8cbcb9c",
    "3-gram.pruned.1e-7.arpa.gz": "9a0f1325bcaf3a0f7b7be4be10823c2a",
    "3-gram.pruned.3e-7.arpa.gz": "8f67ec741827742eee05799ab7605b50",
    "4-gram.arpa.gz": "6abdcd5b055bd482e4f9defe91d40408",
    "librispeech-lexicon.txt": "28f72663f6bfed7cd346283c064c315b",
    "librispeech-lm-norm.txt.gz": "c83c64c726a1aedfe65f80aa311de402",
    "librispeech-vocab.txt": "bf3cc7a50112831ed8b0afa40cae96a5",
}

_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def download(
    subsets: list[str],
    out_dir: str | Path,
    mirror: str = MIRROR,
    lm_files: list[str] = (),
    lm_mirror: str = LM_MIRROR,
    checksums: str | Path | None = None,
    keep_archives: bool = True,
    workers: int = 4,
    progress: bool = True,
    mini_mirror: str = MINI_MIRROR,
) -> dict:
    """Fetch and unpack `subsets` into `out_dir/LibriSpeech/<subset>`, LM files into `out_dir/lm`.

    OpenSLR 12 subsets come from `mirror`, Mini LibriSpeech's (MINI_SUBSETS) from `mini_mirror`.
    Archives are checked against the published md5 sums (`checksums`, an md5sum- or
    sha256sum-format file, adds to or replaces them, e.g. for a mirror that repackaged the
    files). A subset already unpacked from a verified archive is skipped, also when the archive
    was deleted afterwards (`keep_archives=False`).
    """
    known = SUBSETS + MINI_SUBSETS
    unknown = sorted(set(subsets) - set(known))
    if unknown:
        raise ValueError(f"unknown LibriSpeech subset(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    sums = {**MD5, **LM_MD5}
    if checksums:
        sums.update(read_checksums(checksums))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in subsets if not (extracted(f"{s}.tar.gz", out) and (out / "LibriSpeech" / s).is_dir())]
    for s in sorted(set(subsets) - set(todo)):
        log.info("%s: unpacked already in %s", s, out / "LibriSpeech" / s)
    jobs = [
        {
            "source": join_source(mini_mirror if s in MINI_SUBSETS else mirror, f"{s}.tar.gz"),
            "dest": out / f"{s}.tar.gz",
            **digest_kw(sums.get(f"{s}.tar.gz")),
        }
        for s in todo
    ]
    jobs += [{"source": join_source(lm_mirror, f), "dest": out / "lm" / f, **digest_kw(sums.get(f))} for f in lm_files]
    fetch_many(jobs, workers=workers, progress=progress)
    for s in todo:
        archive = out / f"{s}.tar.gz"
        extract(archive, out, progress=progress)
        if not (out / "LibriSpeech" / s).is_dir():
            raise DownloadError(f"{archive}: holds no LibriSpeech/{s}/ directory; not a LibriSpeech archive")
        if not keep_archives:
            remove(archive)
    return {"root": str(out / "LibriSpeech"), "subsets": list(subsets), "lm": [str(out / "lm" / f) for f in lm_files]}


def subset_dir(root: str | Path, subset: str) -> Path:
    """`root/LibriSpeech/<subset>` or `root/<subset>`, whichever exists."""
    root = Path(root)
    for d in (root / "LibriSpeech" / subset, root / subset):
        if d.is_dir():
            return d
    raise FileNotFoundError(f"{root}: no LibriSpeech/{subset} or {subset} directory (run the download stage)")


def read_transcripts(path: Path) -> dict[str, str]:
    """A chapter's `<spk>-<chapter>.trans.txt` -> {utterance id: transcript as published}."""
    texts = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            utt, _, text = line.partition(" ")
            if not _UTT_ID.match(utt):
                raise ValueError(f"{path}:{lineno}: expected '<speaker>-<chapter>-<n> TRANSCRIPT', got {line[:60]!r}")
            texts[utt] = text
    return texts


def chapter_audio(chapter: Path) -> dict[str, Path]:
    """{utterance id: its audio file} of a chapter directory, whatever the files' extension."""
    audio: dict[str, Path] = {}
    for p in sorted(chapter.iterdir()):
        if p.suffix == ".txt" or not _UTT_ID.match(p.stem) or not p.is_file():
            continue
        if p.stem in audio:  # two encodings side by side: which one is meant cannot be guessed
            raise ValueError(f"{chapter}: two audio files for utterance {p.stem}: {audio[p.stem].name} and {p.name}")
        audio[p.stem] = p
    return audio


def chapter_rows(trans: Path, subset: str) -> tuple[list[dict], int, int]:
    """Rows of one chapter (its `<spk>-<chapter>.trans.txt` and the audio beside it, sorted by
    id), the number of audio files without a transcript line, and of lines without audio."""
    from ..audio import audio_duration  # here: it imports torch, which a download does not need

    spk, chapter = trans.parent.parent.name, trans.parent.name
    if trans.name != f"{spk}-{chapter}.trans.txt":
        raise ValueError(f"{trans}: expected the name {spk}-{chapter}.trans.txt in {spk}/{chapter}/")
    texts = read_transcripts(trans)
    audio = chapter_audio(trans.parent)
    rows, no_text = [], 0
    for utt in sorted(audio):
        if utt not in texts:
            log.warning("%s: no transcript for %s in %s; skipped", subset, audio[utt], trans.name)
            no_text += 1
            continue
        rows.append(
            {
                "id": utt,
                "audio": str(audio[utt].resolve()),
                "duration": audio_duration(audio[utt]),
                "text": texts[utt],
                "speaker": spk,
                "language": "en",
                "labels": {},
                "chapter": chapter,
                "subset": subset,
            }
        )
    return rows, no_text, sum(1 for u in texts if u not in audio)


def subset_rows(root: str | Path, subset: str) -> tuple[list[dict], dict]:
    """Manifest rows of one subset (sorted by id), and counts of what did not pair up."""
    base = subset_dir(root, subset)
    rows, no_text, no_audio = [], 0, 0
    for trans in sorted(base.glob("*/*/*.trans.txt")):
        r, t, a = chapter_rows(trans, subset)
        rows, no_text, no_audio = rows + r, no_text + t, no_audio + a
    if no_audio:
        log.warning("%s: %d transcript lines have no audio file (a partial copy of the corpus?)", subset, no_audio)
    return rows, {"no_transcript": no_text, "no_audio": no_audio}


def prepare(root: str | Path, subsets: list[str], out_manifest: str | Path) -> dict:
    """One manifest of the utterances of `subsets` (e.g. all three for train-960), durations
    from the audio headers."""
    rows, counts = [], {"no_transcript": 0, "no_audio": 0}
    for s in subsets:
        r, c = subset_rows(root, s)
        if not r:
            raise ValueError(f"{subset_dir(root, s)}: no utterances (audio + trans.txt) found")
        rows += r
        for k in counts:
            counts[k] += c[k]
    write_manifest(rows, out_manifest)
    hours = sum(r["duration"] for r in rows) / 3600
    return {"manifest": str(out_manifest), "utterances": len(rows), "hours": round(hours, 3), **counts}


def tree_rows(src: str | Path) -> list[dict]:
    """Rows of every chapter under `src` at any depth (a LibriSpeech root, one subset, one
    speaker); a row's subset is the directory above its speaker's. Transcript lines without
    audio are left out (a partial copy), counted in a warning."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such directory")
    rows, no_audio = [], 0
    for trans in sorted(src.rglob("*.trans.txt")):
        r, _, a = chapter_rows(trans, trans.parent.parent.parent.name)
        rows, no_audio = rows + r, no_audio + a
    if not rows:
        raise ValueError(f"{src}: no utterances found (<spk>/<chapter>/<utt>.<ext> beside <spk>-<chapter>.trans.txt)")
    if no_audio:
        log.warning("%s: %d transcript lines have no audio file; the %d present are used", src, no_audio, len(rows))
    return rows


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def held_out_text(lm_text: list[str | Path], held_out: list[dict], out: str | Path) -> dict:
    """Write the lines of `lm_text` (plain or .gz files) to `out`, less every line that is the
    transcript of a held-out row (compared normalised): an LM that has read the dev sentences
    makes tuning its weight on dev worthless."""
    skip = {normalize(r["text"]) for r in held_out}
    kept = dropped = 0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for path in map(Path, lm_text):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such LM text file")
            try:
                with _open_text(path) as src:
                    for line in src:
                        if not line.strip():
                            continue
                        if normalize(line) in skip:
                            dropped += 1
                            continue
                        f.write(line.rstrip("\n") + "\n")
                        kept += 1
            except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
                raise ValueError(f"{path}: not UTF-8 text, or a broken gzip file ({e})") from None
    if not kept:
        raise ValueError(f"{', '.join(map(str, lm_text))}: no LM text left ({dropped} held-out lines dropped)")
    log.info("%s: %d lines for the LM, %d left out (transcripts of dev or test)", out, kept, dropped)
    return {"lines": kept, "dropped": dropped}


def prepare_mini(
    root: str | Path,
    out_dir: str | Path,
    test_src: list[str | Path],
    dev_speakers: list[str] | tuple[str, ...] = MINI_DEV_SPEAKERS,
    lm_text: list[str | Path] = (),
) -> dict:
    """Mini LibriSpeech -> out_dir/{train,dev,test}/manifest.jsonl (and out_dir/lm_text.txt).

    train: train-clean-5. dev: dev-clean-2 where `root` has it (the published download; it is
    OpenSLR 31's only held-out set), otherwise the `dev_speakers` of train-clean-5, held out
    whole: a speaker heard in training would make dev easy. test: every chapter under the
    `test_src` directories (LibriSpeech test-clean, or a sample of it); a test speaker may not
    be in train. `lm_text`: text files (plain or .gz) written to lm_text.txt without the dev and
    test transcripts (LibriSpeech's LM texts hold every training transcript, also those of the
    speakers held out for dev).
    """
    out = Path(out_dir)
    train, _ = subset_rows(root, "train-clean-5")
    if not train:
        raise ValueError(f"{subset_dir(root, 'train-clean-5')}: no utterances (audio + trans.txt) found")
    try:
        subset_dir(root, "dev-clean-2")
        dev, _ = subset_rows(root, "dev-clean-2")
        dev_from = "dev-clean-2"
        if dev_speakers:
            log.info("dev: dev-clean-2 is there, so no speaker of train-clean-5 is held out")
    except FileNotFoundError:
        speakers = {r["speaker"] for r in train}
        missing = [s for s in dev_speakers if s not in speakers]
        if missing or not dev_speakers:
            raise ValueError(
                f"{subset_dir(root, 'train-clean-5')}: no dev-clean-2 beside it, and dev speaker(s) "
                f"{', '.join(missing) or '(none given)'} not in train-clean-5 "
                f"(its speakers: {', '.join(sorted(speakers))})"
            ) from None
        dev = [r for r in train if r["speaker"] in dev_speakers]
        train = [r for r in train if r["speaker"] not in dev_speakers]
        dev_from = f"speakers {' '.join(dev_speakers)} of train-clean-5"
    if not test_src:
        raise ValueError("no test set: give test_src (e.g. LibriSpeech/test-clean, or librispeech_sample)")
    test = [r for src in test_src for r in tree_rows(src)]
    train_spk, dev_ids = {r["speaker"] for r in train}, {r["id"] for r in dev}
    for r in test:
        if r["speaker"] in train_spk:
            raise ValueError(f"{r['audio']}: test speaker {r['speaker']} is also in train-clean-5 (train)")
        if r["id"] in dev_ids:
            raise ValueError(f"{r['audio']}: test utterance {r['id']} is also in dev ({dev_from})")
    sets = {"train": train, "dev": dev, "test": test}
    info: dict = {"dev_from": dev_from}
    for name, rows in sets.items():
        write_manifest(rows, out / name / "manifest.jsonl")
        hours = sum(r["duration"] for r in rows) / 3600
        info[name] = {"utterances": len(rows), "speakers": len({r["speaker"] for r in rows}), "hours": round(hours, 3)}
        log.info("%s: %d utterances, %d speakers, %.2f h", name, len(rows), info[name]["speakers"], hours)
    if lm_text:
        info["lm_text"] = held_out_text(list(lm_text), dev + test, out / "lm_text.txt")
    return info
