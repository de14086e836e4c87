"""Fetching corpora: resumable, checksum-verified HTTP(S) downloads and extraction that stays
inside its target directory.

Why not `urlretrieve`: corpora are many gigabytes and public mirrors drop connections, so a
transfer must survive a broken connection (HTTP Range requests continue a `<file>.part`), must
not be mistaken for complete when it is not (the size the server announced is checked, then the
checksum), and must not hammer one host (at most `MAX_PER_HOST` connections per host and
process, exponential back-off between attempts).

Every file fetched gets a `<file>.sha256` record beside it (`sha256sum -c` format). A file with
a record newer than itself is taken as verified and not fetched or hashed again, so a second run
of a download stage costs nothing. A checksum mismatch leaves the bytes in `<file>.bad` (for
inspection) and raises `ChecksumError`; the next run starts that file afresh.

Sources are URLs (http, https, file) or local paths (a mirror on a mounted disk); proxies come
from the usual `http_proxy` / `https_proxy` variables (urllib reads them).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import stat
import tarfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlparse
from urllib.request import Request, url2pathname, urlopen

from tqdm import tqdm

from ..logs import progress_disabled

log = logging.getLogger(__name__)

MAX_PER_HOST = 3  # polite to public mirrors; also what most of them tolerate before throttling
CHUNK = 1 << 20
USER_AGENT = "astctc-download/0.1 (+https://github.com/; python-urllib)"
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A file could not be fetched or extracted; the message names the URL or file."""


class ChecksumError(DownloadError):
    """The fetched bytes do not have the published checksum."""


_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _host_slot(url: str) -> threading.BoundedSemaphore:
    host = urlparse(url).netloc
    with _slots_lock:
        if host not in _slots:
            _slots[host] = threading.BoundedSemaphore(MAX_PER_HOST)
        return _slots[host]


def is_remote(source: str) -> bool:
    return urlparse(str(source)).scheme in ("http", "https")


def join_source(base: str, name: str) -> str:
    """`base` (URL or directory) + a relative file name (forward slashes)."""
    if is_remote(base):
        return base.rstrip("/") + "/" + quote(name)
    return str(Path(_local_path(base)) / name)


def _local_path(source: str) -> str:
    u = urlparse(str(source))
    return url2pathname(u.path) if u.scheme == "file" else str(source)


# ---------------------------------------------------------------------------- checksums


def file_digests(path: str | os.PathLike, algorithms=("md5", "sha256")) -> dict[str, str]:
    """Hex digests of a file, all algorithms in one pass over the bytes."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """`md5sum`/`sha256sum` output (`<hex>  <name>`, `*name` for binary mode) -> {name: hex}."""
    sums = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not all(c in "0123456789abcdefABCDEF" for c in parts[0]):
            raise ValueError(f"{path}:{lineno}: expected '<hex digest>  <file name>'")
        sums[Path(parts[1].strip().lstrip("*")).name] = parts[0].lower()
    return sums


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_record(path: Path, sha256: str) -> None:
    tmp = path.with_name(f".{path.name}.sha256.tmp")
    tmp.write_text(f"{sha256}  {path.name}\n", encoding="utf-8")
    os.replace(tmp, record_path(path))


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded when `path` was fetched, if the record is not older than the file."""
    rec = record_path(path)
    if not (path.exists() and rec.exists()) or rec.stat().st_mtime < path.stat().st_mtime:
        return None
    parts = rec.read_text(encoding="utf-8").split()
    return parts[0] if len(parts) == 2 and parts[1] == path.name and len(parts[0]) == 64 else None


def _check(path: Path, md5: str | None, sha256: str | None, source: str) -> str:
    """Hash `path`, compare with what is expected; return its sha256. Bad bytes go to .bad."""
    got = file_digests(path)
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want and got[algo] != want.lower():
            size = path.stat().st_size
            final = path.name[: -len(".part")] if path.name.endswith(".part") else path.name
            bad = path.with_name(final + ".bad")
            os.replace(path, bad)
            raise ChecksumError(
                f"{final}: {algo} mismatch: expected {want.lower()}, got {got[algo]} "
                f"({size} bytes from {source}); the file is corrupt or not the published one. "
                f"Kept as {bad} for inspection; run again to download it afresh"
            )
    return got["sha256"]


def verify(path: str | os.PathLike, md5: str | None = None, sha256: str | None = None) -> str:
    """Check an existing file against expected digests and (re)write its sha256 record."""
    path = Path(path)
    digest = _check(path, md5, sha256, str(path))
    _write_record(path, digest)
    return digest


# ---------------------------------------------------------------------------- fetching


def fetch(
    source: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    sha256: str | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download `source` (URL or local path) to `dest`, resuming and verifying; return `dest`.

    A `dest` that was verified before (see the module docstring) is returned as it is. A `dest`
    placed by hand (no record) is hashed and checked against `md5`/`sha256` instead of being
    fetched. Network errors and HTTP 408/429/5xx are retried `retries` times, waiting
    backoff * 2^k seconds (capped at 5 minutes); other HTTP errors fail at once.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if recorded_sha256(dest) is not None:
        log.info("%s: downloaded and verified already", dest)
        return dest
    if dest.exists():
        log.info("%s: present without a record; verifying it", dest)
        verify(dest, md5, sha256)
        return dest
    part = dest.with_name(dest.name + ".part")
    if is_remote(source):
        _fetch_http(source, part, retries, backoff, timeout, progress)
    else:
        _copy_local(_local_path(source), part, progress)
    digest = _check(part, md5, sha256, source)
    os.replace(part, dest)
    _write_record(dest, digest)
    log.info("%s: %d bytes, sha256 %s%s", dest, dest.stat().st_size, digest, ", md5 verified" if md5 else "")
    return dest


def _copy_local(src: str, part: Path, progress: bool) -> None:
    if not Path(src).is_file():
        raise DownloadError(f"{src}: no such file in the mirror directory")
    size = Path(src).stat().st_size
    with open(src, "rb") as f, open(part, "wb") as g, _bar(part, size, 0, progress) as bar:
        while chunk := f.read(CHUNK):
            g.write(chunk)
            bar.update(len(chunk))


def _bar(part: Path, total: int | None, initial: int, progress: bool) -> tqdm:
    name = part.name[: -len(".part")] if part.name.endswith(".part") else part.name
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=progress_disabled(progress),
        leave=False,
        dynamic_ncols=True,
    )


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000)."""
    try:
        unit, spec = value.split(" ", 1)
        rng, total = spec.split("/")
        start = None if rng == "*" else int(rng.split("-")[0])
        return start, None if total == "*" else int(total)
    except (AttributeError, ValueError):
        return None, None


class _Retry(Exception):
    pass


def _fetch_http(url: str, part: Path, retries: int, backoff: float, timeout: float, progress: bool) -> None:
    failures = 0
    while True:
        try:
            if _http_attempt(url, part, timeout, progress):
                return
            continue  # the .part was unusable and is gone: start over at once
        except HTTPError as e:
            if e.code not in RETRYABLE_HTTP:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            why = f"HTTP {e.code} {e.reason}"
        except (URLError, OSError, http.client.HTTPException, _Retry) as e:
            why = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
        failures += 1
        have = part.stat().st_size if part.exists() else 0
        if failures > retries:
            raise DownloadError(
                f"{url}: giving up after {failures} attempts ({why}); {have} bytes kept in {part}, run again to resume"
            )
        delay = min(backoff * 2 ** (failures - 1), 300.0)
        log.warning("%s: %s; retry %d of %d in %.1f s, resuming at byte %d", url, why, failures, retries, delay, have)
        time.sleep(delay)


def _http_attempt(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """One request. True when `part` is complete; False when it had to be discarded."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with _host_slot(url):
        try:
            r = urlopen(Request(url, headers=headers), timeout=timeout)
        except HTTPError as e:
            if e.code == 416 and have:  # nothing after byte `have`: complete, or not this file
                _, total = _content_range(e.headers.get("Content-Range"))
                if total == have:
                    return True
                log.warning(
                    "%s: %s (%d bytes) does not fit the remote file (%s bytes); starting over", url, part, have, total
                )
                part.unlink()
                return False
            raise
        with r:
            start, total = _content_range(r.headers.get("Content-Range"))
            length = r.headers.get("Content-Length")
            if r.status == 206 and start != have:  # not the bytes asked for: never append them
                log.warning("%s: asked for bytes from %d, got a range from %s; starting over", url, have, start)
                part.unlink(missing_ok=True)
                return False
            if r.status == 206:
                mode = "ab"
                total = total if total is not None else (have + int(length) if length else None)
            else:
                if have:
                    log.info("%s: server does not resume (HTTP %d); downloading from the start", url, r.status)
                have, mode = 0, "wb"
                total = int(length) if length else None
            with open(part, mode) as f, _bar(part, total, have, progress) as bar:
                while chunk := r.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retry(f"connection ended at byte {size} of {total}")
    return True


def fetch_many(jobs: list[dict], workers: int = 4, progress: bool = True, **kw) -> list[Path]:
    """Run `fetch(**job, **kw)` for each job dict, in parallel threads (each host still gets at
    most MAX_PER_HOST connections). Every job runs; the failures are reported together."""
    results: list[Path | None] = [None] * len(jobs)
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            results[i] = fetch(**jobs[i], progress=progress, **kw)
        except DownloadError as e:
            errors.append(str(e))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, range(len(jobs))))
    if errors:
        raise DownloadError("\n".join(errors) if len(errors) > 1 else errors[0])
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------------- extracting


def _unsafe_zip_member(info: zipfile.ZipInfo, root: Path) -> str | None:
    name = info.filename
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or (len(name) > 1 and name[1] == ":") or ".." in p.parts:
        return "path outside the target"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    if not (root / p).resolve().is_relative_to(root):
        return "path outside the target"
    return None


def extract(archive: str | os.PathLike, target: str | os.PathLike, progress: bool = True) -> Path:
    """Unpack a .tar(.gz/.bz2/.xz) or .zip into `target`; nothing lands outside it.

    Tar members go through tarfile's "data" filter: a leading '/' is stripped (as GNU tar does),
    and '..' escapes, links pointing out of the target and device files are refused. Zip members
    with an absolute path, a '..' component or a symbolic link are refused. A refusal raises
    DownloadError naming the member. Writes `target/.<archive>.extracted` when done; a second
    call for the same archive bytes does nothing."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    marker = target / f".{archive.name}.extracted"
    stamp = recorded_sha256(archive) or f"{archive.stat().st_size} {archive.stat().st_mtime_ns}"
    if marker.exists() and marker.read_text(encoding="utf-8").strip() == stamp:
        log.info("%s: extracted into %s already", archive, target)
        return target
    root = target.resolve()
    n = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in tqdm(
                    z.infolist(),
                    desc=f"extract {archive.name}",
                    unit="file",
                    disable=progress_disabled(progress),
                    leave=False,
                ):
                    why = _unsafe_zip_member(info, root)
                    if why:
                        raise DownloadError(f"{archive}: refusing member {info.filename!r} ({why})")
                    z.extract(info, root)
                    n += 1
        else:
            # stream mode: members are extracted as they are read, one pass over the bytes
            with tarfile.open(archive, "r|*") as t:
                for member in tqdm(
                    t, desc=f"extract {archive.name}", unit="file", disable=progress_disabled(progress), leave=False
                ):
                    t.extract(member, root, filter="data")
                    n += 1
    except tarfile.FilterError as e:
        raise DownloadError(f"{archive}: refusing member {e.tarinfo.name!r} ({e})") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise DownloadError(f"{archive}: cannot extract ({type(e).__name__}: {e})") from None
    marker.write_text(stamp + "\n", encoding="utf-8")
    log.info("%s: %d members extracted into %s", archive, n, target)
    return target


def extracted(archive: str | os.PathLike, target: str | os.PathLike) -> bool:
    """Whether `archive` (by name) was fully extracted into `target` by `extract`."""
    return (Path(target) / f".{Path(archive).name}.extracted").exists()


def remove(path: str | os.PathLike) -> None:
    """Delete a fetched file and its record (an archive that was extracted and is not kept)."""
    path = Path(path)
    for p in (path, record_path(path)):
        p.unlink(missing_ok=True)
    log.info("%s: removed (extracted; --keep-archives keeps archives)", path)
