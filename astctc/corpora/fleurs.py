"""FLEURS (google/fleurs on the Hugging Face hub): download, manifests, for any of its languages.

The dataset repository holds, per language code (en_us, fr_fr, cmn_hans_cn, ...):

    data/<lang>/<split>.tsv               split = train | dev | test
    data/<lang>/audio/<split>.tar.gz      unpacks to <split>/<file name>.wav (16 kHz)

A TSV has no header and seven tab-separated columns, in this order: sentence id, file name,
raw transcription, transcription, an unused column, number of samples, gender. Several
speakers read the same sentence, so the sentence id repeats; the file name is unique.

Training target: the `transcription` column (lower case, punctuation removed by FLEURS' own
per-language normalisation), kept verbatim as the manifest's `text`. Punctuation and casing are
not audible, so a CTC model cannot be asked to produce them, and FLEURS' ASR results are scored
on this column; the raw transcription is kept beside it as `raw_text` for reference.
`astctc.text.normalize` is applied on top at training and scoring time (it leaves an already
normalised line as it is, apart from stray punctuation in a few languages).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..audio import audio_duration
from ..data.manifest import write_manifest
from .download import (
    DownloadError,
    digest_kw,
    extract,
    extracted,
    fetch_many,
    join_source,
    read_checksums,
    read_record,
    remove,
    report,
    verify,
)

log = logging.getLogger(__name__)

REPO_ID = "google/fleurs"
SPLITS = ("train", "dev", "test")
COLUMNS = ("sentence_id", "file_name", "raw_transcription", "transcription", "unused", "num_samples", "gender")
_LANG = re.compile(r"^[a-z]{2,3}(_[a-z0-9]+)+$")


def check_lang(lang: str) -> str:
    if not _LANG.match(lang):
        raise ValueError(f"{lang!r} is not a FLEURS language code (they look like en_us, fr_fr, cmn_hans_cn)")
    return lang


def tsv_path(lang: str, split: str) -> str:
    return f"data/{lang}/{split}.tsv"


def archive_path(lang: str, split: str) -> str:
    return f"data/{lang}/audio/{split}.tar.gz"


def offline_help(out: Path, langs: list[str], err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    lang = langs[0]
    return (
        f"cannot download FLEURS from the Hugging Face hub ({REPO_ID}): offline, HF_HUB_OFFLINE=1, or no "
        f"network; {type(err).__name__}: {first}\n"
        f"Fetch the files where there is internet access, e.g.\n"
        f"    hf download {REPO_ID} --repo-type dataset --include 'data/{lang}/*' --local-dir {out}\n"
        f"or from https://huggingface.co/datasets/{REPO_ID}/tree/main/data/{lang} in a browser, and put them at\n"
        f"    {out}/data/{lang}/{{train,dev,test}}.tsv\n"
        f"    {out}/data/{lang}/audio/{{train,dev,test}}.tar.gz\n"
        f"then run again (files found there are checked and used, not fetched), or pass --mirror with a "
        f"directory or URL laid out the same way (data/<lang>/...)."
    )


def _hub_fetch(paths: list[str], out: Path, langs: list[str], endpoint: str | None, revision: str) -> None:
    """hf_hub_download each path into out/<path>; check it against what the hub lists: the
    sha256 of a file in LFS (the audio archives), the git blob id of any other (the TSVs)."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    try:
        import httpx

        net_errors: tuple = (httpx.ConnectError, httpx.TimeoutException)
    except ImportError:  # older huggingface_hub (requests)
        net_errors = (ConnectionError,)
    try:
        infos = HfApi(endpoint=endpoint).get_paths_info(REPO_ID, paths, repo_type="dataset", revision=revision)
        sha256 = {i.path: i.lfs.sha256 for i in infos if getattr(i, "lfs", None)}
        blob = {i.path: i.blob_id for i in infos if getattr(i, "blob_id", None)}
        missing = sorted(set(paths) - {i.path for i in infos})
        if missing:
            raise DownloadError(
                f"{REPO_ID} has no {', '.join(missing)} (revision {revision}); check the language "
                "code(s) against the dataset card"
            )
        for p in paths:
            hf_hub_download(REPO_ID, p, repo_type="dataset", revision=revision, local_dir=out, endpoint=endpoint)
            verify(out / p, sha256=sha256.get(p), git_sha1=None if p in sha256 else blob.get(p))
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, *net_errors) as e:
        raise DownloadError(offline_help(out, langs, e)) from None
    except GatedRepoError as e:
        raise DownloadError(
            f"{REPO_ID} needs a logged-in account that accepted its terms: run `hf auth login` ({type(e).__name__})"
        ) from None
    except (RepositoryNotFoundError, EntryNotFoundError) as e:
        raise DownloadError(f"{REPO_ID}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    except DownloadError:
        raise
    except Exception as e:  # e.g. the connection kept dropping after huggingface_hub's own retries
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DownloadError(
            f"{REPO_ID}: download failed ({type(e).__name__}: {first}); run again to resume "
            "(huggingface_hub keeps the partial file)"
        ) from None


def download(
    langs: list[str],
    out_dir: str | Path,
    splits: list[str] = SPLITS,
    mirror: str | None = None,
    endpoint: str | None = None,
    revision: str = "main",
    keep_archives: bool = True,
    progress: bool = True,
    checksums: str | Path | None = None,
) -> dict:
    """Fetch the TSVs and audio archives of `langs` into `out_dir/data/<lang>/` (the hub repo's
    layout) and unpack the audio into `out_dir/data/<lang>/audio/<split>/`.

    Source: the hub through `huggingface_hub` (`endpoint` for a hub mirror), or `mirror`, a
    directory or base URL laid out like the repo (fetched with our resumable downloader).
    Files already present are checked, not fetched; every file gets a `.sha256` record. Hub
    files are compared with what the hub lists for them (sha256 in LFS, else the git blob id).
    A mirror publishes nothing to check against: `checksums`, an md5sum/sha256sum-format file
    of repo paths (`<hex>  data/en_us/audio/train.tar.gz`, e.g. made where the files came
    from the hub), supplies it; without one, mirror files are only checked to be complete and
    are reported as unverified.
    """
    out = Path(out_dir)
    langs = [check_lang(x) for x in langs]
    sums = read_checksums(checksums, keep_dirs=True) if checksums else {}
    wanted = []
    for lang in langs:
        for split in splits:
            audio_dir = out / "data" / lang / "audio"
            done = extracted(archive_path(lang, split), audio_dir) and (audio_dir / split).is_dir()
            wanted += [tsv_path(lang, split)] + ([] if done else [archive_path(lang, split)])
    todo = []
    for p in wanted:
        expected = digest_kw(sums.get(p))
        rec = read_record(out / p)
        if rec is not None and (rec.verified or not expected):
            if not rec.verified:
                report(out / p, rec)  # every run that uses it says so
            continue
        if (out / p).exists():  # placed by hand (offline), or recorded before a checksum was given
            log.info("%s: present; checking it", out / p)
            verify(out / p, **expected)
        else:
            todo.append(p)
    if todo and mirror:
        jobs = [{"source": join_source(mirror, p), "dest": out / p, **digest_kw(sums.get(p))} for p in todo]
        fetch_many(jobs, progress=progress)
    elif todo:
        _hub_fetch(todo, out, langs, endpoint, revision)
    for lang in langs:
        for split in splits:
            archive = out / archive_path(lang, split)
            audio_dir = out / "data" / lang / "audio"
            if not archive.exists():
                continue  # unpacked earlier and removed
            extract(archive, audio_dir, progress=progress)
            if not (audio_dir / split).is_dir():
                raise DownloadError(f"{archive}: holds no {split}/ directory; not a FLEURS audio archive")
            if not keep_archives:
                remove(archive)
    return {"root": str(out), "languages": langs, "splits": list(splits), "fetched": todo}


def read_tsv(path: str | Path) -> list[dict]:
    """Rows of a FLEURS TSV as dicts keyed by COLUMNS; every field verbatim (strings)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != len(COLUMNS):
                raise ValueError(
                    f"{path}:{lineno}: expected {len(COLUMNS)} tab-separated columns "
                    f"({', '.join(COLUMNS)}), got {len(fields)}"
                )
            row = dict(zip(COLUMNS, fields))
            if not row["num_samples"].isdigit():
                raise ValueError(f"{path}:{lineno}: column 6 (num_samples) is not a number: {row['num_samples']!r}")
            rows.append(row)
    return rows


def prepare(root: str | Path, langs: str | list[str], split: str, out_manifest: str | Path) -> dict:
    """Manifest of one split of one or more languages (several: a multilingual training set).

    Rows: id `<lang>-<file stem>`, `text` = transcription, `raw_text`, `language` and
    `labels: {"lang": <lang>}` (for a language-ID head), duration from the WAV header. A TSV
    row whose audio file is missing, or whose transcription is empty, is skipped and counted.
    """
    langs = [langs] if isinstance(langs, str) else list(langs)
    rows, counts = [], {"no_audio": 0, "empty_text": 0, "length_mismatch": 0}
    for lang in langs:
        check_lang(lang)
        base = Path(root) / "data" / lang
        tsv = base / f"{split}.tsv"
        if not tsv.exists():
            raise FileNotFoundError(f"{tsv}: no such file (run the download stage)")
        audio = base / "audio" / split
        n = 0
        for rec in read_tsv(tsv):
            wav = audio / rec["file_name"]
            if not wav.exists():
                log.warning("%s: %s is listed but not in %s; skipped", tsv, rec["file_name"], audio)
                counts["no_audio"] += 1
                continue
            if not rec["transcription"].strip():
                counts["empty_text"] += 1
                continue
            duration = audio_duration(wav)
            if abs(duration * 16000 - int(rec["num_samples"])) > 1:
                counts["length_mismatch"] += 1
            rows.append(
                {
                    "id": f"{lang}-{Path(rec['file_name']).stem}",
                    "audio": str(wav.resolve()),
                    "duration": duration,
                    "text": rec["transcription"],
                    "speaker": None,
                    "language": lang,
                    "labels": {"lang": lang},
                    "raw_text": rec["raw_transcription"],
                    "sentence_id": rec["sentence_id"],
                    "gender": rec["gender"],
                    "num_samples": int(rec["num_samples"]),
                }
            )
            n += 1
        if n == 0:
            raise ValueError(f"{tsv}: no usable utterances (audio in {audio}?)")
    if counts["length_mismatch"]:
        log.warning(
            "%s: %d clips differ in length from the TSV's num_samples (durations come from the audio)",
            split,
            counts["length_mismatch"],
        )
    write_manifest(rows, out_manifest)
    return {
        "manifest": str(out_manifest),
        "utterances": len(rows),
        "hours": round(sum(r["duration"] for r in rows) / 3600, 3),
        **counts,
    }
