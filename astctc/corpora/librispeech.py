"""LibriSpeech (OpenSLR 12) and its language-model files (OpenSLR 11): download, manifests.

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
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..audio import audio_duration
from ..data.manifest import write_manifest
from .download import DownloadError, digest_kw, extract, extracted, fetch_many, join_source, read_checksums, remove

log = logging.getLogger(__name__)

MIRROR = "https://www.openslr.org/resources/12"
LM_MIRROR = "https://www.openslr.org/resources/11"
TRAIN_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")
EVAL_SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other")
SUBSETS = TRAIN_SUBSETS + EVAL_SUBSETS
TRAIN_SETS = {"100": TRAIN_SUBSETS[:1], "460": TRAIN_SUBSETS[:2], "960": TRAIN_SUBSETS}

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
) -> dict:
    """Fetch and unpack `subsets` into `out_dir/LibriSpeech/<subset>`, LM files into `out_dir/lm`.

    Archives are checked against the published md5 sums (`checksums`, an md5sum- or
    sha256sum-format file, adds to or replaces them, e.g. for a mirror that repackaged the
    files). A subset already unpacked from a verified archive is skipped, also when the archive
    was deleted afterwards (`keep_archives=False`).
    """
    unknown = sorted(set(subsets) - set(SUBSETS))
    if unknown:
        raise ValueError(f"unknown LibriSpeech subset(s) {', '.join(unknown)}; choose from {', '.join(SUBSETS)}")
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
            "source": join_source(mirror, f"{s}.tar.gz"),
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
            raise DownloadError(f"{archive}: holds no LibriSpeech/{s}/ directory; not an OpenSLR 12 archive")
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


def subset_rows(root: str | Path, subset: str) -> tuple[list[dict], dict]:
    """Manifest rows of one subset (sorted by id), and counts of what did not pair up."""
    base = subset_dir(root, subset)
    rows, no_text, no_audio = [], 0, 0
    for trans in sorted(base.glob("*/*/*.trans.txt")):
        spk, chapter = trans.parent.parent.name, trans.parent.name
        if trans.name != f"{spk}-{chapter}.trans.txt":
            raise ValueError(f"{trans}: expected the name {spk}-{chapter}.trans.txt in {spk}/{chapter}/")
        texts = read_transcripts(trans)
        flacs = {p.stem: p for p in trans.parent.glob("*.flac")}
        for utt in sorted(flacs):
            if utt not in texts:
                log.warning("%s: no transcript for %s in %s; skipped", subset, flacs[utt], trans.name)
                no_text += 1
                continue
            rows.append(
                {
                    "id": utt,
                    "audio": str(flacs[utt].resolve()),
                    "duration": audio_duration(flacs[utt]),
                    "text": texts[utt],
                    "speaker": spk,
                    "language": "en",
                    "labels": {},
                    "chapter": chapter,
                    "subset": subset,
                }
            )
        no_audio += sum(1 for u in texts if u not in flacs)
    if no_audio:
        log.warning("%s: %d transcript lines have no audio file (a partial copy of the corpus?)", subset, no_audio)
    return rows, {"no_transcript": no_text, "no_audio": no_audio}


def prepare(root: str | Path, subsets: list[str], out_manifest: str | Path) -> dict:
    """One manifest of the utterances of `subsets` (e.g. all three for train-960), durations
    from the FLAC headers."""
    rows, counts = [], {"no_transcript": 0, "no_audio": 0}
    for s in subsets:
        r, c = subset_rows(root, s)
        if not r:
            raise ValueError(f"{subset_dir(root, s)}: no utterances (flac + trans.txt) found")
        rows += r
        for k in counts:
            counts[k] += c[k]
    write_manifest(rows, out_manifest)
    hours = sum(r["duration"] for r in rows) / 3600
    return {"manifest": str(out_manifest), "utterances": len(rows), "hours": round(hours, 3), **counts}
