"""Fetching corpora: resumable, checksum-verified HTTP(S) downloads, and extraction that writes
nothing outside its target directory, whatever the Python version.

Why not `urlretrieve`: corpora are many gigabytes and public mirrors drop connections, so a
transfer must survive a broken connection (HTTP Range requests continue a `<file>.part`), must
not be mistaken for complete when it is not (the size the server announced is checked, then the
checksum), and must not hammer one host (at most `MAX_PER_HOST` connections per host and
process, exponential back-off between attempts).

Verified, or only complete. A file is *verified* when it has the checksum the caller expects
(the published md5 or sha256 of a corpus archive). Without one, the most that can be said is
that it is *complete*: the size the server announced arrived, and an archive (zip, tar, tar.gz,
.bz2, .xz, .gz) reads to its end (zip CRCs and the gzip/bzip2/xz trailers checked, the tar's
end-of-archive block present), so a body cut short by a server that announced no size is
refused, not accepted. Such files are accepted with a warning that they are unverified.

Resuming never stitches two different files together: the ETag (or Last-Modified) the server
sent when a `.part` was started is kept in `<file>.part.resume`, and the Range request that
continues the `.part` carries it in `If-Range`. A server whose file changed meanwhile sends the
whole new file (200), which replaces the `.part`; a 206 whose validator is not the recorded one
is thrown away too. A `.part` without a usable validator is continued only when a checksum will
check the result; otherwise it starts over.

What `<file>.sha256` means. Every accepted file gets a record beside it, in `sha256sum -c`
format, plus a comment line (which `sha256sum -c` skips) saying what the acceptance rested on:
    <sha256 of the bytes on disk>  <name>
    # astctc-checked: md5                      verified (or sha256, git-sha1)
    # astctc-checked: size archive             unverified: complete as far as that goes
    # astctc-checked: nothing                  unverified: nothing could check it
A file whose record is not older than itself is not fetched or hashed again: that is what makes
a second run free. The record claims the published bytes only when it names a checksum. Every
later `fetch` that meets an unverified record warns again, and one given a checksum hashes the
file against it first (a record's sha256 is compared without hashing again).

Bad bytes are never deleted silently and never kept where they would be trusted: a checksum
mismatch or an incomplete archive leaves them in `<file>.bad` (for inspection) and raises; an
archive that fails to unpack (unreadable, or holding a member that is refused) is moved to
`<file>.bad` likewise, its record removed. Either way the next run fetches the file afresh.

Extraction does not rely on tarfile's filters: `filter="data"` of Pythons before the June 2025
security releases (3.11.13, 3.12.11, 3.13.4; CVE-2025-4517 and co.) follows a chain of symbolic
links whose real path exceeds PATH_MAX out of the target. `extract` writes only regular files
and directories (the corpora hold nothing else), refuses absolute names and `..`, refuses to
write through a symbolic link already in the target tree, checks each member's resolved path
lies inside the target, and opens files with O_NOFOLLOW.

Sources are URLs (http, https, file) or local paths (a mirror on a mounted disk); proxies come
from the usual `http_proxy` / `https_proxy` variables (urllib reads them).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.client
import json
import logging
import lzma
import os
import shutil
import stat
import tarfile
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
DIGESTS = ("md5", "sha256", "git-sha1")  # what a caller may expect; git-sha1: the HF hub's blob ids


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


def _final_name(path: Path) -> str:
    return path.name[: -len(".part")] if path.name.endswith(".part") else path.name


# ---------------------------------------------------------------------------- checksums


def file_digests(path: str | os.PathLike, algorithms=("md5", "sha256")) -> dict[str, str]:
    """Hex digests of a file, all algorithms in one pass over the bytes. "git-sha1" is git's id
    of the bytes as a blob (sha1 of `blob <size>\\0` + bytes), what the HF hub lists for files
    it does not keep in LFS."""
    hashes = {}
    for a in algorithms:
        if a == "git-sha1":
            hashes[a] = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
        else:
            hashes[a] = hashlib.new(a)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def read_checksums(path: str | os.PathLike, keep_dirs: bool = False) -> dict[str, str]:
    """`md5sum`/`sha256sum` output (`<hex>  <name>`, `*name` for binary mode) -> {name: hex}.
    Names are file names, or with keep_dirs the relative paths as written (without `./`), for
    layouts where one name occurs in several directories (FLEURS' `data/<lang>/audio/train.tar.gz`)."""
    sums = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or not all(c in "0123456789abcdefABCDEF" for c in parts[0]):
            raise ValueError(f"{path}:{lineno}: expected '<hex digest>  <file name>'")
        name = PurePosixPath(parts[1].strip().lstrip("*"))
        sums[name.as_posix() if keep_dirs else name.name] = parts[0].lower()
    return sums


def digest_kw(hex_digest: str | None) -> dict[str, str]:
    """{"md5": hex} or {"sha256": hex} by the digest's length, for fetch(**...); {} for None."""
    if not hex_digest:
        return {}
    algo = {32: "md5", 64: "sha256"}.get(len(hex_digest))
    if algo is None:
        raise ValueError(f"{hex_digest!r} is neither an md5 (32 hex digits) nor a sha256 (64)")
    return {algo: hex_digest.lower()}


@dataclass(frozen=True)
class Record:
    """A `<file>.sha256` record (module doc): the sha256 of the accepted bytes and what
    accepting them rested on."""

    sha256: str
    checked: tuple[str, ...]  # digests matched (DIGESTS), or "size" / "archive" / "nothing"; () = older record

    @property
    def verified(self) -> bool:
        return any(c in DIGESTS for c in self.checked)

    def describe(self) -> str:
        if self.verified:
            return "verified: " + ", ".join(c for c in self.checked if c in DIGESTS) + " matched"
        what = {
            "size": "the size the server announced arrived",
            "archive": "the archive reads to its end",
            "nothing": "nothing could check it: no size announced and not an archive",
        }
        said = [what[c] for c in self.checked if c in what]
        return "; ".join(said) or "recorded by an older astctc, which did not say what it checked"


_CHECKED = "# astctc-checked:"


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_record(path: Path, rec: Record) -> None:
    tmp = path.with_name(f".{path.name}.sha256.tmp")
    tmp.write_text(f"{rec.sha256}  {path.name}\n{_CHECKED} {' '.join(rec.checked)}\n", encoding="utf-8")
    os.replace(tmp, record_path(path))


def read_record(path: str | os.PathLike) -> Record | None:
    """The record of `path`, if there is one and it is not older than the file."""
    path = Path(path)
    rec = record_path(path)
    if not (path.exists() and rec.exists()) or rec.stat().st_mtime < path.stat().st_mtime:
        return None
    sha256, checked = None, ()
    for line in rec.read_text(encoding="utf-8").splitlines():
        if line.startswith(_CHECKED):
            checked = tuple(line[len(_CHECKED) :].split())
        elif line.strip() and not line.startswith("#"):
            parts = line.split()
            if len(parts) != 2 or parts[1].lstrip("*") != path.name or len(parts[0]) != 64:
                return None
            sha256 = parts[0].lower()
    return Record(sha256, checked) if sha256 else None


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded when `path` was accepted, if the record is not older than the file."""
    rec = read_record(path)
    return rec.sha256 if rec else None


def report(path: Path, rec: Record, source: str | None = None) -> None:
    """Log what `path`'s acceptance rested on: info when verified, a warning when not."""
    if rec.verified:
        log.info("%s: %s", path, rec.describe())
    else:
        log.warning(
            "%s: UNVERIFIED, no checksum is known for it%s, so these may not be the published bytes (%s)",
            path,
            f" ({source})" if source and source != str(path) else "",
            rec.describe(),
        )


def _set_aside(path: Path) -> Path:
    """Move bytes that failed a check to `<file>.bad` (kept for inspection) and drop what would
    make a later run trust (the record) or continue (the resume data) them."""
    final = path.with_name(_final_name(path))
    bad = final.with_name(final.name + ".bad")
    os.replace(path, bad)
    for p in (record_path(final), _resume_path(final.with_name(final.name + ".part"))):
        p.unlink(missing_ok=True)
    return bad


def _expected(md5: str | None, sha256: str | None, git_sha1: str | None = None) -> dict[str, str]:
    return {a: w.lower() for a, w in (("md5", md5), ("sha256", sha256), ("git-sha1", git_sha1)) if w}


def _accept(path: Path, expected: dict[str, str], source: str, announced: bool) -> Record:
    """Hash `path` and compare with what is expected; without a checksum, check that the file
    is complete (module doc). Bytes that fail go to `<file>.bad` (ChecksumError, DownloadError)."""
    got = file_digests(path, ("md5", "sha256", *(a for a in expected if a not in ("md5", "sha256"))))
    final = _final_name(path)
    for algo, want in expected.items():
        if got[algo] != want:
            size = path.stat().st_size
            bad = _set_aside(path)
            raise ChecksumError(
                f"{final}: {algo} mismatch: expected {want}, got {got[algo]} "
                f"({size} bytes from {source}); the file is corrupt or not the published one. "
                f"Kept as {bad} for inspection; run again to download it afresh"
            )
    if expected:
        return Record(got["sha256"], tuple(expected))
    checked = ("size",) if announced else ()
    kind = archive_kind(path)
    if kind:
        problem = archive_problem(path, kind)
        if problem:
            size = path.stat().st_size
            bad = _set_aside(path)
            raise DownloadError(
                f"{final}: not a complete {kind} archive ({problem}); {size} bytes from {source}, "
                f"no checksum to check them against{'' if announced else ' and no size announced'} "
                f"(cut short?). Kept as {bad}; run again to download it afresh"
            )
        checked += ("archive",)
    return Record(got["sha256"], checked or ("nothing",))


def verify(
    path: str | os.PathLike, md5: str | None = None, sha256: str | None = None, git_sha1: str | None = None
) -> str:
    """Check an existing file (placed by hand, or fetched by another client) against expected
    digests, or without any for completeness (module doc); (re)write its record; return its
    sha256. Bytes that fail go to `<file>.bad`."""
    path = Path(path)
    rec = _accept(path, _expected(md5, sha256, git_sha1), str(path), announced=False)
    _write_record(path, rec)
    report(path, rec)
    return rec.sha256


def _settled(rec: Record, expected: dict[str, str]) -> bool:
    """Whether a record answers what is asked now. A sha256 is compared with the record's (no
    hashing); any other checksum must have been checked when the record was written."""
    if "sha256" in expected and rec.sha256 != expected["sha256"]:
        return False
    return all(a in rec.checked for a in expected if a != "sha256")


# ---------------------------------------------------------------------------- archives

_MAGIC = ((b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))
_OPEN = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open, "tar": open}


def archive_kind(path: str | os.PathLike) -> str | None:
    """The kind of archive by the file's first bytes, not its name: zip, tar, or gz, bz2, xz
    (compressed: a tar or not); None for anything else."""
    with open(path, "rb") as f:
        head = f.read(tarfile.BLOCKSIZE)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "tar" if head[257:262] == b"ustar" else None


class _LastBlock:
    """A file object for tarfile that remembers the last header-sized block read, so that the
    end-of-archive block can be told from a tar cut short at a member boundary (tarfile stops
    quietly at either) without seeking back, which in a compressed stream means starting over."""

    def __init__(self, f):
        self.f, self.last = f, (-1, b"")

    def read(self, n: int = -1) -> bytes:
        pos = self.f.tell()
        data = self.f.read(n)
        if n == tarfile.BLOCKSIZE:
            self.last = (pos, data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)

    def tell(self) -> int:
        return self.f.tell()


def archive_problem(path: str | os.PathLike, kind: str) -> str | None:
    """Why `path` is not a complete archive of `kind` (archive_kind), or None when it reads to
    its end: every zip member's CRC; every tar header and the end-of-archive block (a short
    member's data is caught by tarfile); the compressed stream's own end and checksum."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            return f"member {bad!r} fails its CRC check" if bad else None
        with _OPEN[kind](path, "rb") as f:
            head = f.read(tarfile.BLOCKSIZE)
            if head[257:262] == b"ustar":
                f.seek(0)
                reader = _LastBlock(f)
                with tarfile.open(fileobj=reader, mode="r:") as t:
                    for _ in t:
                        pass
                    if reader.last != (t.offset, bytes(tarfile.BLOCKSIZE)):
                        return f"the tar ends at byte {t.offset} without its end-of-archive block"
            while f.read(CHUNK):  # a compressed stream checks its length and CRC at its end
                pass
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
        return f"{type(e).__name__}: {e}"
    return None


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

    A `dest` accepted before (see the module docstring) is returned as it is, with a warning if
    it is unverified. A `dest` placed by hand (no record), or recorded without the checksum
    given now, is hashed and checked instead of being fetched. Network errors and HTTP
    408/429/5xx are retried `retries` times, waiting backoff * 2^k seconds (capped at 5
    minutes); other HTTP errors fail at once.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = _expected(md5, sha256)
    rec = read_record(dest)
    if rec is not None and _settled(rec, expected):
        if expected and not rec.verified:  # its sha256 is the published one: say so from now on
            rec = Record(rec.sha256, ("sha256",))
            _write_record(dest, rec)
        if rec.verified:
            log.info("%s: downloaded and verified already", dest)
        else:
            report(dest, rec, source)
        return dest
    if dest.exists():
        log.info("%s: %s; checking it", dest, "present without a record" if rec is None else "not checked against this")
        verify(dest, md5, sha256)
        return dest
    part = dest.with_name(dest.name + ".part")
    if is_remote(source):
        announced = _fetch_http(source, part, retries, backoff, timeout, progress, checked_later=bool(expected))
    else:
        _copy_local(_local_path(source), part, progress)
        announced = True
    rec = _accept(part, expected, source, announced)
    os.replace(part, dest)
    _resume_path(part).unlink(missing_ok=True)
    _write_record(dest, rec)
    log.info("%s: %d bytes, sha256 %s", dest, dest.stat().st_size, rec.sha256)
    report(dest, rec, source)
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
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=_final_name(part),
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


@dataclass(frozen=True)
class _Validator:
    """What identifies the remote file whose first bytes a `.part` holds (RFC 9110 If-Range)."""

    url: str
    etag: str | None
    last_modified: str | None

    @property
    def if_range(self) -> str | None:
        """A strong ETag, else the date; a weak ETag may not be used in If-Range."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def matches(self, headers) -> bool:
        """Whether a response's validators (where it sends any) are the recorded ones."""
        etag, modified = headers.get("ETag"), headers.get("Last-Modified")
        if self.etag and etag:
            return etag == self.etag
        if self.last_modified and modified:
            return modified == self.last_modified
        return True


def _resume_path(part: Path) -> Path:
    return part.with_name(part.name + ".resume")


def _write_validator(part: Path, url: str, headers) -> None:
    v = {"url": url, "etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}
    _resume_path(part).write_text(json.dumps(v) + "\n", encoding="utf-8")


def _read_validator(part: Path, url: str) -> _Validator | None:
    """The validator recorded when `part` was started from `url`, if it can be used in If-Range."""
    try:
        v = _Validator(**json.loads(_resume_path(part).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return v if v.url == url and v.if_range else None


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _resume_path(part).unlink(missing_ok=True)


class _Retry(Exception):
    pass


def _fetch_http(
    url: str, part: Path, retries: int, backoff: float, timeout: float, progress: bool, checked_later: bool
) -> bool:
    """Fetch `url` into `part`, retrying; return whether the server announced the size."""
    failures = 0
    while True:
        try:
            announced = _http_attempt(url, part, timeout, progress, checked_later)
            if announced is not None:
                return announced
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


def _http_attempt(url: str, part: Path, timeout: float, progress: bool, checked_later: bool) -> bool | None:
    """One request. None when `part` had to be discarded (start over); otherwise whether the
    server announced the size (so that a short body was noticed here)."""
    have = part.stat().st_size if part.exists() else 0
    validator = _read_validator(part, url) if have else None
    if have and validator is None and not checked_later:
        log.warning(
            "%s: %s (%d bytes) has no record of which version of the file it holds (ETag or Last-Modified) "
            "and no checksum will check the result; starting over instead of appending to it",
            url,
            part,
            have,
        )
        _discard(part)
        have = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator.if_range
    with _host_slot(url):
        try:
            r = urlopen(Request(url, headers=headers), timeout=timeout)
        except HTTPError as e:
            if e.code == 416 and have:  # nothing after byte `have`: complete, or not this file
                _, total = _content_range(e.headers.get("Content-Range"))
                if total == have and (validator is None or validator.matches(e.headers)):
                    return True
                log.warning(
                    "%s: %s (%d bytes) does not fit the remote file (%s bytes); starting over", url, part, have, total
                )
                _discard(part)
                return None
            raise
        with r:
            start, total = _content_range(r.headers.get("Content-Range"))
            length = r.headers.get("Content-Length")
            if r.status == 206 and start != have:  # not the bytes asked for: never append them
                log.warning("%s: asked for bytes from %d, got a range from %s; starting over", url, have, start)
                _discard(part)
                return None
            if r.status == 206 and validator is not None and not validator.matches(r.headers):
                log.warning(
                    "%s: the file changed since %s was started (ETag/Last-Modified differ); starting over", url, part
                )
                _discard(part)
                return None
            if r.status == 206:
                mode = "ab"
                total = total if total is not None else (have + int(length) if length else None)
            else:
                if have:
                    log.info(
                        "%s: the server sent the whole file (HTTP %d: it changed since %s was started, or it does "
                        "not resume); downloading from the start",
                        url,
                        r.status,
                        part,
                    )
                have, mode = 0, "wb"
                total = int(length) if length else None
            if not have:
                _write_validator(part, url, r.headers)
            with open(part, mode) as f, _bar(part, total, have, progress) as bar:
                while chunk := r.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Retry(f"connection ended at byte {size} of {total}")
    return total is not None


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


class _Refused(Exception):
    """A member the archive must not have: the archive is bad (set aside)."""


_ONLY_FILES = "only regular files and directories are unpacked: the corpora contain nothing else"


def _refuse(archive: Path, name: str, why: str, because: str = "") -> _Refused:
    return _Refused(
        f"{archive}: member {_short(name, 200)!r} {why}; refusing to extract it" + (f" ({because})" if because else "")
    )


def _member_path(archive: Path, root: Path, name: str) -> Path | None:
    """Where member `name` goes under `root` (resolved), or None for the root itself ('.').

    Refused: absolute names, drive letters, '..' components, and any path whose existing
    components under `root` include a symbolic link (a link is how a later member would be
    written elsewhere); the resolved result must lie inside `root` (belt and braces)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, name, "has an absolute path")
    if ".." in p.parts:
        raise _refuse(archive, name, "has a '..' component")
    if not p.parts:
        return None
    dest = root
    for part in p.parts:
        dest = dest / part
        if dest.is_symlink():
            raise _refuse(archive, name, f"would be written through the symbolic link {dest}")
    if not Path(os.path.realpath(dest)).is_relative_to(root):
        raise _refuse(archive, name, "resolves to a path outside the target")
    return dest


def _short(name: str, keep: int = 60) -> str:
    return name if len(name) <= keep else f"{name[: keep // 2]}...{name[-keep // 2 :]}"


def _tar_kind_refusal(m: tarfile.TarInfo) -> str | None:
    if m.isreg() or m.isdir():
        return None
    if m.issym():
        what = f"is a symbolic link (to {_short(m.linkname)!r})"
    elif m.islnk():
        what = f"is a hard link (to {_short(m.linkname)!r})"
    elif m.ischr() or m.isblk():
        what = "is a device file"
    elif m.isfifo():
        what = "is a FIFO"
    else:
        what = f"has tar type {m.type!r}"
    return what


def _zip_kind_refusal(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16  # Unix st_mode where the zip was made on Unix; else 0
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"is a special file (mode {mode:o})"
    return None


def _write_file(dest: Path, src, mode: int, mtime: float | None) -> None:
    """Copy `src` (a member's stream) to `dest`, never following a link at `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(os.open(dest, flags, 0o755 if mode & 0o111 else 0o644), "wb") as f:
        shutil.copyfileobj(src, f, CHUNK)
    if mtime is not None:
        os.utime(dest, (mtime, mtime))


def _untar(archive: Path, root: Path, bar: tqdm) -> int:
    n = 0
    # stream mode: members are extracted as they are read, one pass over the bytes
    with tarfile.open(archive, "r|*") as t:
        for m in t:
            why = _tar_kind_refusal(m)
            if why:
                raise _refuse(archive, m.name, why, _ONLY_FILES)
            dest = _member_path(archive, root, m.name)
            if dest is None:
                continue
            if m.isdir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                _write_file(dest, t.extractfile(m), m.mode, m.mtime)
            n += 1
            bar.update()
    return n


def _unzip(archive: Path, root: Path, bar: tqdm) -> int:
    n = 0
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            why = _zip_kind_refusal(info)
            if why:
                raise _refuse(archive, info.filename, why, _ONLY_FILES)
            dest = _member_path(archive, root, info.filename)
            if dest is None:
                continue
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                with z.open(info) as src:
                    _write_file(dest, src, info.external_attr >> 16, None)
            n += 1
            bar.update()
    return n


def extract(archive: str | os.PathLike, target: str | os.PathLike, progress: bool = True) -> Path:
    """Unpack a .tar(.gz/.bz2/.xz) or .zip into `target`; nothing is written outside it.

    Only regular files and directories are unpacked; a symbolic or hard link, a device or FIFO,
    an absolute name, a '..' component or a path through a symbolic link in the target is
    refused (module doc: why tarfile's own filter is not enough). A refused member, or an archive
    that cannot be read to its end, raises DownloadError naming the archive (and the member)
    and moves the archive to `<archive>.bad` without its record, so the next run fetches it
    again; what was unpacked before stays, without the done-marker. A failure to write into
    `target` (disk full, permissions) leaves the archive where it is. Writes
    `target/.<archive>.extracted` when done; a second call for the same archive bytes does nothing."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    marker = target / f".{archive.name}.extracted"
    stamp = recorded_sha256(archive) or f"{archive.stat().st_size} {archive.stat().st_mtime_ns}"
    if marker.exists() and marker.read_text(encoding="utf-8").strip() == stamp:
        log.info("%s: extracted into %s already", archive, target)
        return target
    root = target.resolve()
    unpack = _unzip if zipfile.is_zipfile(archive) else _untar
    bar = tqdm(desc=f"extract {archive.name}", unit="file", disable=progress_disabled(progress), leave=False)
    try:
        with bar:
            n = unpack(archive, root, bar)
    except _Refused as e:
        bad = _set_aside(archive)
        raise DownloadError(f"{e}; the archive is moved to {bad}, the next run fetches it again") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as e:
        bad = _set_aside(archive)
        raise DownloadError(
            f"{archive}: cannot extract ({type(e).__name__}: {e}); it is corrupt or not an archive: "
            f"moved to {bad}, the next run fetches it again"
        ) from None
    except OSError as e:  # reading a member raises the errors above: this is writing into the target
        raise DownloadError(
            f"{archive}: cannot unpack into {target} ({e}); the archive is kept, run again once that is fixed"
        ) from None
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
