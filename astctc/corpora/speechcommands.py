"""Speech Commands v0.02 (Warden 2018, CC BY 4.0): keyword spotting, 35-word and 12-class.

Sources, both laid out as one folder per class:
  full   the training archive, `speech_commands_v0.02.tar.gz`: 35 word folders,
         `_background_noise_/`, and `validation_list.txt` / `testing_list.txt` (the official
         split, by a hash of the speaker)
  test   the 12-class test archive, `speech_commands_test_set_v0.02.tar.gz` (and the shared
         subset `speech_commands_v2_test12`): `yes no up down left right on off stop go`,
         `_unknown_` (`{word}_{speaker}_nohash_{n}`) and `_silence_`

12 classes: the ten words, `_unknown_` (any other word) and `_silence_` (1 s cuts of the
background-noise recordings, written as FLAC beside the manifests). 35 classes: the words.

Speakers are held out, never clips: a clip's speaker is the hash before `_nohash_`. Where no
list says the split, it comes from the SHA-1 bucketing of the dataset's own `which_set`, but
over a salted speaker id: the unsalted rule is what made the official split, so every speaker
of a tree cut from one official set (the test archive, the shared subset) would fall in the
same bucket, and the split would leave train nearly empty.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import zlib
from pathlib import Path
from urllib.parse import urlparse

from ..audio import audio_duration
from ..data.manifest import write_manifest

log = logging.getLogger(__name__)

BASE_URL = "https://storage.googleapis.com/download.tensorflow.org/data/"  # download.tensorflow.org's bucket
TRAIN_URL = BASE_URL + "speech_commands_v0.02.tar.gz"
TEST_URL = BASE_URL + "speech_commands_test_set_v0.02.tar.gz"
# The published sha256 of the two archives (2428923189 and 112563277 bytes): TensorFlow Datasets'
# checksum list, tensorflow/datasets tensorflow_datasets/url_checksums/speech_commands.txt. The
# training archive's also in pytorch/audio torchaudio/datasets/speechcommands.py (_CHECKSUMS);
# hearbenchmark/hear-preprocess hearpreprocess/speech_commands.py lists the md5 of both
# (6b74f3901214cb2c2934e98196829835, 854c580ee90bff80c516491c84544e32).
SHA256 = {
    "speech_commands_v0.02.tar.gz": "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
    "speech_commands_test_set_v0.02.tar.gz": "cc2a00c1147c2254e9be3fa0f779d8c17421dc349b86366567a8edfa9acd51df",
}
# Where those archives are published (the sums are checked for these URLs, any scheme): a --url
# elsewhere is another file as far as anyone can tell, unverified unless its checksum is given.
PUBLISHED = ("storage.googleapis.com/download.tensorflow.org/data/", "download.tensorflow.org/data/")
WORDS12 = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
CLASSES12 = WORDS12 + ["_silence_", "_unknown_"]
WORDS35 = sorted(
    WORDS12
    + [
        "backward",
        "bed",
        "bird",
        "cat",
        "dog",
        "eight",
        "five",
        "follow",
        "forward",
        "four",
        "happy",
        "house",
        "learn",
        "marvin",
        "nine",
        "one",
        "seven",
        "sheila",
        "six",
        "three",
        "tree",
        "two",
        "visual",
        "wow",
        "zero",
    ]
)
HEAD = "command"
AUDIO = (".wav", ".flac")
_MAX_PER_CLASS = 2**27 - 1  # as in the dataset's README
_SPEAKER = re.compile(r"([0-9a-f]{8})_nohash_\d+$")


def speaker_of(path: str | Path) -> str | None:
    """The speaker hash of `{speaker}_nohash_{n}` (or `{word}_{speaker}_nohash_{n}`)."""
    m = _SPEAKER.search(Path(path).stem)
    return m[1] if m else None


SALT = "astctc-split:"


def which_set(speaker: str, dev_percent: float, test_percent: float, salt: str = SALT) -> str:
    """train/dev/test from the SHA-1 of the speaker, the dataset's own `which_set` rule; with
    salt="" it is that rule exactly (module doc for why the default is salted)."""
    h = int(hashlib.sha1((salt + speaker).encode("utf-8")).hexdigest(), 16)
    p = (h % (_MAX_PER_CLASS + 1)) * (100.0 / _MAX_PER_CLASS)
    return "dev" if p < dev_percent else "test" if p < dev_percent + test_percent else "train"


def _row(path: Path, root: Path, label: str, word: str) -> dict:
    rel = path.relative_to(root).with_suffix("").as_posix()
    return {
        "id": f"sc-{rel}",
        "audio": str(path.resolve()),
        "duration": round(audio_duration(path), 4),
        "text": "",
        "speaker": speaker_of(path),
        "language": "en",
        "labels": {HEAD: label},
        "word": word,
    }


def folder_rows(root: str | Path, classes: int = 12) -> list[dict]:
    """Rows of a one-folder-per-class tree (the test archive's layout, or the full one)."""
    root = Path(root)
    rows = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "_background_noise_"):
        for f in sorted(p for p in d.iterdir() if p.suffix.lower() in AUDIO):
            word = d.name
            if word == "_unknown_":  # {word}_{speaker}_nohash_{n}
                word = f.stem.split("_")[0]
            rows.append(_row(f, root, label_of(word, classes), word))
    if not rows:
        raise FileNotFoundError(f"{root}: no class folders with audio")
    return rows


def label_of(word: str, classes: int) -> str:
    if classes == 35:
        if word not in WORDS35:
            raise ValueError(f"{word!r} is not one of the 35 Speech Commands words")
        return word
    if classes == 12:
        return word if word in WORDS12 or word == "_silence_" else "_unknown_"
    raise ValueError(f"Speech Commands has 12 or 35 classes, not {classes}")


def silence_clips(noise_dir: Path, out_dir: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` 1 s cuts of the background-noise recordings at random offsets, as FLAC."""
    from ..audio import encode_flac, load_audio

    sources = sorted(p for p in noise_dir.iterdir() if p.suffix.lower() in AUDIO)
    if not sources:
        raise FileNotFoundError(f"{noise_dir}: no background-noise recordings for _silence_")
    waves = [load_audio(p) for p in sources]
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        k = rng.randrange(len(waves))
        start = rng.randrange(max(1, waves[k].numel() - 16000))
        p = out_dir / f"{sources[k].stem}_{n:05d}.flac"
        p.write_bytes(encode_flac(waves[k][start : start + 16000]))
        paths.append(p)
    return paths


def prepare_speechcommands(
    source: str | Path,
    out_dir: str | Path,
    classes: int = 12,
    test_source: str | Path | None = None,
    dev_percent: float = 10.0,
    test_percent: float = 10.0,
    seed: int = 0,
) -> dict:
    """Write out_dir/{train,dev,test}/manifest.jsonl and out_dir/labels/command.txt.

    `source` with `testing_list.txt` is the full archive: its lists give dev and test, and for
    12 classes `_silence_` is cut from `_background_noise_` (as many clips per set as the
    average word class has). Otherwise `source` is a folder-per-class tree split by speaker
    hash (dev_percent / test_percent). `test_source` (the 12-class test archive) replaces the
    test set. Returns {set: rows}."""
    source, out = Path(source), Path(out_dir)
    if (source / "testing_list.txt").exists():
        rows = folder_rows(source, classes)
        listed = {}
        for name, part in (("validation_list.txt", "dev"), ("testing_list.txt", "test")):
            for line in (source / name).read_text().split():
                listed[f"sc-{Path(line).with_suffix('').as_posix()}"] = part
        sets = {"train": [], "dev": [], "test": []}
        for r in rows:
            sets[listed.get(r["id"], "train")].append(r)
        if classes == 12 and (source / "_background_noise_").is_dir():
            for part, rs in sets.items():
                per_word = max(1, sum(r["labels"][HEAD] in WORDS12 for r in rs) // len(WORDS12))
                clips = silence_clips(
                    source / "_background_noise_",
                    out / "silence" / part,
                    per_word,
                    seed=zlib.crc32(f"{seed}:{part}".encode()),
                )
                rs += [_row(p, out / "silence", "_silence_", "_silence_") for p in clips]
    else:
        sets = {"train": [], "dev": [], "test": []}
        for r in folder_rows(source, classes):
            # a silence clip has no speaker: its file name stands in for one
            sets[which_set(r["speaker"] or Path(r["audio"]).stem, dev_percent, test_percent)].append(r)
    if test_source is not None:
        sets["test"] = folder_rows(test_source, classes)
    for part, rs in sets.items():
        if not rs:
            raise ValueError(f"{source}: the {part} set is empty")
        write_manifest(rs, out / part / "manifest.jsonl")
    names = CLASSES12 if classes == 12 else WORDS35
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "labels" / f"{HEAD}.txt").write_text("".join(f"{c}\n" for c in names))
    return {part: len(rs) for part, rs in sets.items()}


def published_checksum(url: str) -> dict[str, str]:
    """{"sha256": ...} for the published archives at their published URLs, else {}."""
    u = urlparse(url)
    where = u.netloc + u.path.rsplit("/", 1)[0] + "/"
    name = Path(u.path).name
    return {"sha256": SHA256[name]} if where in PUBLISHED and name in SHA256 else {}


def download_speechcommands(
    out_dir: str | Path,
    url: str = TRAIN_URL,
    test_url: str | None = TEST_URL,
    checksums: dict[str, str] | str | Path | None = None,
) -> dict:
    """Fetch (resumable, checked against the published sha256) and unpack the training archive
    and the 12-class test archive into out_dir/{speech_commands_v0.02, speech_commands_test_set_v0.02}.

    `checksums` ({file name: md5 or sha256 hex}, or an md5sum/sha256sum-format file) gives the
    checksum of an archive from another `url` (a mirror, a local copy); without one such an
    archive is only checked to be complete and is reported as unverified."""
    from .download import digest_kw, extract, fetch, read_checksums

    sums = read_checksums(checksums) if isinstance(checksums, (str, Path)) else dict(checksums or {})
    out = Path(out_dir)
    dirs = {}
    for key, u in (("train", url), ("test", test_url)):
        if not u:
            continue
        name = Path(urlparse(u).path).name or f"speech_commands_{key}.tar.gz"
        expected = digest_kw(sums[name]) if name in sums else published_checksum(u)
        archive = fetch(u, out / name, **expected)
        dirs[key] = extract(archive, out / name.split(".tar")[0])
    return dirs
