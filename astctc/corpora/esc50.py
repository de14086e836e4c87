"""ESC-50 (Piczak 2015, CC BY-NC 3.0): 2000 five-second environmental sounds, 50 classes,
five folds for cross-validation (clips from one source recording stay in one fold).

The archive (`master.zip` of github.com/karoldvl/ESC-50) unpacks to `ESC-50-master/` with
`audio/*.wav` (44.1 kHz) and `meta/esc50.csv`:
    filename,fold,target,category,esc10,src_file,take

Layout written here: one manifest (and later one shard set) per fold, and for cross-validation
split k an index that lists the other four folds' shards (`astctc combine`, run by the recipe),
so no clip is stored twice:
    data/fold{1..5}/manifest.jsonl       data/labels/category.txt (class id order)
    data/cv{k}/train/index.json  ->  ../../fold{j}/shards/*.tar  (j != k); test = fold k
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..audio import audio_duration
from ..data.manifest import write_manifest

URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"  # now karolpiczak/ESC-50 (GitHub redirects)
# The published md5 of that archive: soundata/soundata soundata/datasets/esc50.py (REMOTES["all"]),
# hearbenchmark/hear-preprocess hearpreprocess/secrettasks/hearsecrettasks/esc50.py, and
# PaddlePaddle/Paddle python/paddle/audio/datasets/esc50.py (for Paddle's copy of the same file)
# agree. GitHub builds master.zip from the branch: a new commit there would change it, and the
# check would then fail (ChecksumError) rather than pass other bytes.
MD5 = "7771e4b9d86d0945acce719c7a59305a"
PUBLISHED = (URL, "https://github.com/karolpiczak/ESC-50/archive/master.zip")  # where that md5 applies
HEAD = "category"
FOLDS = 5


def find_root(path: str | Path) -> Path:
    """The directory holding meta/esc50.csv: `path` itself or its ESC-50-master/."""
    path = Path(path)
    for cand in (path, path / "ESC-50-master"):
        if (cand / "meta" / "esc50.csv").exists():
            return cand
    raise FileNotFoundError(f"{path}: no meta/esc50.csv (expected the ESC-50 archive's layout)")


def esc50_rows(root: str | Path) -> tuple[list[dict], list[str]]:
    """Manifest rows from meta/esc50.csv, and the class names in target-id order."""
    root = find_root(root)
    rows, names = [], {}
    with open(root / "meta" / "esc50.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"filename", "fold", "target", "category"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{root}/meta/esc50.csv: columns {sorted(need)} expected, got {reader.fieldnames}")
        for lineno, rec in enumerate(reader, 2):
            target, fold = int(rec["target"]), int(rec["fold"])
            if names.setdefault(target, rec["category"]) != rec["category"]:
                raise ValueError(
                    f"{root}/meta/esc50.csv:{lineno}: target {target} is both {names[target]!r} and {rec['category']!r}"
                )
            if not 1 <= fold <= FOLDS:
                raise ValueError(f"{root}/meta/esc50.csv:{lineno}: fold {fold} outside 1..{FOLDS}")
            audio = root / "audio" / rec["filename"]
            rows.append(
                {
                    "id": f"esc50-{Path(rec['filename']).stem}",
                    "audio": str(audio.resolve()),
                    "duration": round(audio_duration(audio), 4),
                    "text": "",
                    "speaker": None,
                    "language": None,
                    "labels": {HEAD: rec["category"]},
                    "fold": fold,
                    "esc10": rec.get("esc10") == "True",
                    "src_file": rec.get("src_file"),
                }
            )
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{root}/meta/esc50.csv: class ids are not 0..{len(names) - 1}")
    return rows, [names[i] for i in range(len(names))]


def prepare_esc50(source: str | Path, out_dir: str | Path) -> dict:
    """Write out_dir/fold{k}/manifest.jsonl (k = 1..5) and out_dir/labels/category.txt."""
    rows, classes = esc50_rows(source)
    out = Path(out_dir)
    counts = {}
    for k in range(1, FOLDS + 1):
        part = [r for r in rows if r["fold"] == k]
        if not part:
            raise ValueError(f"{source}: fold {k} is empty")
        write_manifest(part, out / f"fold{k}" / "manifest.jsonl")
        counts[f"fold{k}"] = len(part)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "labels" / f"{HEAD}.txt").write_text("".join(f"{c}\n" for c in classes))
    return counts


def download_esc50(out_dir: str | Path, url: str = URL, md5: str | None = None, sha256: str | None = None) -> Path:
    """Fetch (resumable, checked against the published md5) and unpack the archive; returns the
    ESC-50 root. Another `url` (a mirror, a copy) is checked against `md5`/`sha256` when given,
    otherwise only for completeness, and reported as unverified."""
    from .download import ChecksumError, extract, fetch

    out = Path(out_dir)
    expected = {"md5": md5, "sha256": sha256} if md5 or sha256 else {"md5": MD5} if url in PUBLISHED else {}
    try:
        archive = fetch(url, out / "ESC-50-master.zip", **expected)
    except ChecksumError as e:
        if url not in PUBLISHED or md5 or sha256:
            raise
        raise ChecksumError(
            f"{e}. (master.zip is GitHub's archive of a branch: if the branch moved since the md5 was "
            "published, fetch a copy you trust and pass it with --url)"
        ) from None
    return find_root(extract(archive, out))
