"""Where shards live: a local directory or files, or URLs read through curl or a command.

A shard set is given as one of
    /data/train                      a directory: its index.json, else its *.tar in name order
    /data/train/index.json           an index (its shards, in its order, and its sample count)
    /data/train/000000.tar           one shard;  [a.tar, b.tar]  a list of shards, as they are
    /data/train/{000000..000003}.tar a brace-expanded list (the `braceexpand` package)
    https://host/train/index.json    an index by URL; https://host/train/ (ending in /) its directory
    https://host/train/{000000..000511}.tar
    pipe:aws s3 cp s3://bucket/train/{000000..000511}.tar -
                                     brace lists of URLs or of shell commands writing a shard

A URL is read by curl (http(s), ftp(s), sftp, scp), run with an argument list, not a shell; a
`pipe:` command by /bin/sh; other schemes webdataset's gopen knows (gs:, ais:, ...) by its
readers. A remote directory cannot be listed, so it needs its index.json. For a brace list the
sample count comes from the index.json beside the shards (same place, the shard's file name
replaced, also inside a `pipe:` command); without one the count is unknown, which is not an
error.

An index's shard names are data, never commands: each is a name relative to the index, joined
to its directory (a path, a URL, or the index's word in a `pipe:` command). A name that is a
URL or command (pipe:, file:, https:...), an absolute path or has a control character is an
error naming the index and the name; so, in an index read by URL or command, is a name with
'..' or with characters other than letters, digits and _.,+=@-/ (which mean the same to a
shell and in a URL). A local index may use '..': `astctc combine` names sibling sets so.
`pipe:` and URLs run only where the user wrote them, on the command line or in a config.

Every remote read has a time limit: no byte for ASTCTC_READ_TIMEOUT seconds (default 60; 0: no
limit) is an OSError naming the URL, for an index as for a shard. Before the first byte curl
keeps the time (its connect timeout and low-speed limit, --speed-time; it retries only within
the limit); after it, a read that waits longer kills curl, or a `pipe:` command's pipeline.

Resolution happens once, where the dataset is built, and gives the same list in every rank and
DataLoader worker, which is what keeps epochs exact (each shard read by one slot).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import posixpath
import re
import select
import signal
import subprocess
from pathlib import Path
from subprocess import DEVNULL, PIPE
from urllib.parse import urlparse
from urllib.request import url2pathname

log = logging.getLogger(__name__)

INDEX = "index.json"
_URL = re.compile(r"^(pipe:|[A-Za-z][A-Za-z0-9+.-]+://)")
_TOKEN = re.compile(r"[^\s'\"]+")  # a word of a shell command
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # pipe:, file:, https:, ...
_PLAIN = re.compile(r"[A-Za-z0-9_.,+=@/][A-Za-z0-9_.,+=@/-]*")  # the same in a shell word and a URL path
_CURL_SCHEMES = ("http", "https", "ftp", "ftps", "sftp", "scp")
TIMEOUT_VAR = "ASTCTC_READ_TIMEOUT"
DEFAULT_READ_TIMEOUT = 60.0
_CURL_EXIT = {
    6: "could not resolve the host",
    7: "could not connect",
    18: "transfer ended early",
    22: "HTTP error: status 400 or above, e.g. 404 not found",
    28: "timed out",
    35: "TLS handshake failed",
    52: "empty reply from the server",
    56: "connection broken while receiving",
}


def is_url(spec) -> bool:
    """True for `pipe:...` and `scheme://...` strings (what gopen opens); False for local paths."""
    return isinstance(spec, str) and _URL.match(spec) is not None


def read_timeout() -> float | None:
    """Seconds a remote read (an index, a shard stream) may wait for its next byte: the
    environment's ASTCTC_READ_TIMEOUT, else 60; None (no limit) for 0."""
    raw = os.environ.get(TIMEOUT_VAR, "").strip()
    if not raw:
        return DEFAULT_READ_TIMEOUT
    try:
        seconds = float(raw)
        if not 0 <= seconds < math.inf:
            raise ValueError
    except ValueError:
        raise ValueError(f"{TIMEOUT_VAR}={raw!r}: not a number of seconds (0: no limit)") from None
    return seconds or None


# ---------------------------------------------------------------------------------- opening


def _curl_argv(url: str, limit: float | None) -> list[str]:
    """curl writing `url` to stdout, run without a shell: HTTP errors fail, redirects are
    followed, transient failures retried; with a limit, a connection or a transfer silent for
    that long ends it (exit 28), and no retry starts after it."""
    argv = ["curl", "--fail", "--silent", "--location", "--no-buffer", "--retry", "30", "--retry-delay", "2"]
    if limit is not None:
        s = str(max(1, math.ceil(limit)))
        argv += ["--connect-timeout", s, "--speed-limit", "1", "--speed-time", s, "--retry-max-time", s]
    return argv + [url]


def _start(url: str, limit: float | None) -> tuple[subprocess.Popen, str, tuple[int, ...], float | None]:
    """The process writing `url` to its stdout, its name for messages, the exit statuses that
    mean success, and how long a read waits for its first byte (curl, which retries within the
    limit before it, keeps its own time there: ours is a backstop)."""
    if url.startswith("pipe:"):  # a command the user wrote (an index's names never get here)
        proc = subprocess.Popen(url[5:], shell=True, stdin=DEVNULL, stdout=PIPE, start_new_session=True)
        return proc, "command", (0, 141), limit  # 141: a stage of its pipeline ended early
    if url.split(":", 1)[0].lower() in _CURL_SCHEMES:
        proc = subprocess.Popen(_curl_argv(url, limit), stdin=DEVNULL, stdout=PIPE)
        return proc, "curl", (0,), None if limit is None else 3 * limit + 10
    from webdataset.gopen import Pipe, gopen

    obj = gopen(url, "rb")  # gs:, ais:, hf:: webdataset's readers, each an argument list
    if not isinstance(obj, Pipe):
        obj.close()
        raise ValueError("not a command's output")
    return obj.proc, obj.args[0][0][0], tuple(obj.ignore_status), limit


class _RemoteShard(io.RawIOBase):
    """A URL's or `pipe:` command's output whose failure is one OSError naming the URL, raised
    where it shows: at open when the command ends without a byte, else by the read that meets
    the end of the stream or waits longer than the read timeout for a byte (the command is then
    killed). Closing never raises."""

    def __init__(self, url: str):
        super().__init__()
        self.url, self._proc, self._ended, self._head = url, None, False, b""
        limit = read_timeout()
        try:
            self._proc, self._prog, self._ok, self._wait = _start(url, limit)
        except (ValueError, OSError) as e:  # no reader for the scheme, no curl, ...
            why = str(e)
            raise OSError(why if why.startswith(url) else f"{url}: {why}") from None
        self._limit, self._fd = limit, self._proc.stdout.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        try:
            self._head = self._chunk(1 << 16)  # a command that fails before its first byte says so now
        except OSError:
            self.close()
            raise

    def __repr__(self) -> str:  # errors met while reading name the URL
        return self.url

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._head:  # the bytes read at open
            n = min(len(b), len(self._head))
            b[:n], self._head = self._head[:n], self._head[n:]
            return n
        if self._ended:
            return 0
        if self._wait is not None and not self._poll.poll(self._wait * 1000):
            self._stalled()
        n = os.readv(self._fd, [b])
        if not n:
            self._finish()
        self._wait = self._limit  # once bytes flow, a silence as long as the limit ends it
        return n

    def _chunk(self, size: int) -> bytes:
        buf = bytearray(size)
        return bytes(buf[: self.readinto(buf)])

    def _stalled(self) -> None:
        self._kill()
        why = f"nothing came for {self._wait:g} s ({TIMEOUT_VAR} sets the limit)"
        raise OSError(f"{self.url}: timed out: {why}; {self._prog} stopped")

    def _finish(self) -> None:
        """At the end of the stream: OSError unless the command exited well."""
        self._ended = True
        try:
            status = self._proc.wait(timeout=self._wait)
        except subprocess.TimeoutExpired:  # the output closed, the command goes on
            self._kill()
            raise OSError(f"{self.url}: {self._prog} did not exit after its output ended") from None
        if status in self._ok:
            return
        why = f"{self._prog} killed by signal {-status}" if status < 0 else f"{self._prog} exit {status}"
        if self._prog == "curl" and status == 28 and self._limit is not None:
            why += f" (timed out: nothing came for {self._limit:g} s; {TIMEOUT_VAR} sets the limit)"
        elif self._prog == "curl" and status in _CURL_EXIT:
            why += f" ({_CURL_EXIT[status]})"
        raise OSError(f"{self.url}: {why}")

    def _kill(self) -> None:
        """End the command, and in a `pipe:` its whole pipeline (its own process group)."""
        self._ended = True
        try:
            if self._prog == "command":
                os.killpg(self._proc.pid, signal.SIGKILL)
            else:
                self._proc.kill()
        except ProcessLookupError:  # it has exited already
            pass
        self._proc.wait()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._proc is not None:
                if self._proc.poll() is None:
                    self._kill()  # closed before its end: nothing more is wanted from it
                self._proc.stdout.close()
        finally:
            super().close()


def open_shard(shard) -> io.IOBase:
    """A binary stream of one shard (a context manager): `open(path, "rb")` for a local path
    or a file: URL; for other URLs the output of curl (http, https, ftp(s), sftp, scp; run
    without a shell), of the `pipe:` command, or of webdataset's gopen reader (gs:, ais:, ...).
    Failures are OSErrors naming the URL, at open (the command ended before its first byte) or
    from a later read, also when no byte comes for the read timeout (`read_timeout`)."""
    if not is_url(shard):
        return open(shard, "rb")
    if shard.startswith("file:"):
        return open(url2pathname(urlparse(shard).path), "rb")
    return _RemoteShard(shard)


# -------------------------------------------------------------------------------- resolving


Counts = list[int | None] | None  # each shard's sample count by its index (None: no index)


def resolve_shards(spec) -> tuple[list[str], int | None]:
    """Shard paths or URLs, and the total sample count when an index says it (else None),
    from a directory, an index.json, one tar, a list of tars (taken as they are), a brace
    list or a URL (the module doc). A URL index that cannot be fetched or read is an OSError
    or ValueError naming the URL."""
    shards, counts = resolve_shard_counts(spec)
    known = counts is not None and all(c is not None for c in counts)
    return shards, sum(counts) if known else None


def resolve_shard_counts(spec) -> tuple[list[str], Counts]:
    """Shard paths or URLs as `resolve_shards`, and each shard's sample count as its index
    gives it (None for a shard the index does not count; None for all without an index): what
    a reader compares with what it read, so a tar cut short is never a silent loss."""
    if not isinstance(spec, (str, os.PathLike)):
        return [str(s) for s in spec], None
    if is_url(spec):
        return _resolve_url(spec)
    path = os.fspath(spec)
    if isinstance(path, str) and not Path(path).exists():  # an existing name is taken as it is
        shards = _expand(path, strict=False)
        if shards is not None:
            return shards, _counts_beside(path, shards)
    return _resolve_local(spec)


def _resolve_local(spec) -> tuple[list[str], Counts]:
    p = Path(spec)
    if p.is_dir() and (p / INDEX).exists():
        p = p / INDEX
    if p.is_dir():
        return sorted(_path(t) for t in p.glob("*.tar")), None
    if p.suffix == ".json":
        # '..' is allowed here: `astctc combine` names the shards of sibling sets that way
        names, counts = _entries(str(p), _parse_index(str(p), p.read_bytes()), remote=False)
        return [_path(p.parent / n) for n in names], counts
    return [str(p)], None


def _path(path: Path) -> str:
    """A local shard's path as a string that is never taken for a URL: in the current directory
    a file may be named 'pipe:...tar', and Path('.') / name drops the './'."""
    s = str(path)
    return f"./{s}" if is_url(s) else s


def _expand(spec: str, strict: bool) -> list[str] | None:
    """The brace expansion of `spec`; None when it has no brace group (or, unless strict,
    unbalanced braces: then it is a name as it is)."""
    if "{" not in spec:
        return None
    from braceexpand import braceexpand

    try:
        out = list(braceexpand(spec))
    except ValueError as e:  # UnbalancedBracesError
        if strict:
            raise ValueError(f"{spec}: {e}") from None
        return None
    return None if out == [spec] else out


def _check_scheme(url: str) -> None:
    """ValueError for a scheme gopen has no reader for (s3:// is the usual one)."""
    from webdataset.gopen import gopen_schemes

    scheme = url.split(":", 1)[0]
    if scheme not in ("pipe", "file") and scheme not in gopen_schemes:
        known = ", ".join(sorted({"file", *gopen_schemes} - {"__default__"}))
        raise ValueError(
            f"{url}: webdataset's gopen has no reader for {scheme}: URLs (only {known}); use a pipe: "
            "command that writes the shard to stdout, e.g. 'pipe:aws s3 cp s3://bucket/train/000000.tar -'"
        )


def _resolve_url(url: str) -> tuple[list[str], Counts]:
    _check_scheme(url)
    shards = _expand(url, strict=True)
    if shards is not None:
        return shards, _counts_beside(url, shards)
    if url.startswith("pipe:"):
        words = [m for m in _TOKEN.finditer(url, 5) if posixpath.basename(m.group()) == INDEX]
        if not words:
            return [url], None  # a command writing one shard
        w = words[-1]  # a command writing an index: each shard by the same command
        names, counts = _entries(url, _fetch_index(url, required=True), remote=True)
        return [url[: w.start()] + _beside(w.group(), n) + url[w.end() :] for n in names], counts
    if url.endswith("/"):
        url += INDEX
    elif not url.split("?", 1)[0].endswith(".json"):
        return [url], None  # one shard
    names, counts = _entries(url, _fetch_index(url, required=True), remote=True)
    return [_beside(url, n) for n in names], counts


def _beside(location: str, name: str) -> str:
    """`name` (an index entry checked by `_entries`: a file name or a relative path) resolved
    against the directory of `location` (a URL or a path)."""
    scheme, sep, rest = location.partition("://")
    if not sep:
        return posixpath.normpath(posixpath.join(posixpath.dirname(location), name))
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}/" + posixpath.normpath(posixpath.join(posixpath.dirname(path), name))


def _name_span(spec: str) -> tuple[int, int] | None:
    """Where the shard's file name is in a brace spec: its last path segment, or in a
    `pipe:` command the last segment of the last word with a brace group in it."""
    if not spec.startswith("pipe:"):
        return spec.rfind("/") + 1, len(spec)
    words = [m for m in _TOKEN.finditer(spec, 5) if "{" in m.group() or "}" in m.group()]
    if not words:
        return None
    w = words[-1]
    return w.start() + w.group().rfind("/") + 1, w.end()


def _counts_beside(spec: str, shards: list[str]) -> Counts:
    """Each shard's sample count from the index.json beside the shards of a brace list (one
    per directory they come from); None (logged) where an index is missing or does not list
    every shard."""
    from braceexpand import braceexpand

    span = _name_span(spec)
    groups: dict[str, list[str]] = {}
    rebuilt, marks = [], []
    if span is not None:  # mark the file name, expand, and cut each result at the marks
        a, b = span
        try:
            for item in braceexpand(f"{spec[:a]}\0{spec[a:b]}\0{spec[b:]}"):
                pre, name, post = item.split("\0")
                groups.setdefault(pre + INDEX + post, []).append(name)
                rebuilt.append(pre + name + post)
                marks.append((pre, name, post))
        except ValueError:  # a brace group across the marks: no way to tell where the name is
            rebuilt = []
    if rebuilt != shards:
        log.info("%s: no index.json beside the shards found; sample count unknown", spec)
        return None
    found: dict[tuple[str, str], int] = {}
    for location, names in groups.items():
        index = _fetch_index(location, required=False)
        if index is None:
            return None
        counts = {s["name"]: s.get("count") for s in index["shards"]}  # names only looked up here
        missing = [n for n in names if not _is_count(counts.get(n))]
        if missing:
            log.info("%s gives no count for %s; sample count unknown", location, missing[0])
            return None
        found.update({(location, n): counts[n] for n in names})
    return [found[(pre + INDEX + post, name)] for pre, name, post in marks]


def _fetch_index(location: str, required: bool) -> dict | None:
    """A shard index read through `open_shard`. Required: a failure is an OSError (cannot be
    fetched) or ValueError (not an index) naming `location`; else it is logged, and None."""
    try:
        with open_shard(location) as f:
            data = f.read()
    except OSError as e:
        if required:
            why = str(e).removeprefix(f"{location}: ")
            raise OSError(f"{location}: cannot read the shard index: {why}") from None
        log.info("no shard index at %s (%s); sample count unknown", location, e)
        return None
    try:
        return _parse_index(location, data)
    except ValueError as e:
        if required:
            raise
        log.info("%s; sample count unknown", e)
        return None


def _name_problem(name, remote: bool) -> str | None:
    """What makes `name` (a shard name from an index) more than a plain name relative to the
    index, or None. Any index: no URL, command or absolute path, no control character. One
    read by URL or command (`remote`) also names shards at or below itself (no '..') with
    characters that mean nothing to a shell or in a URL."""
    if not isinstance(name, str) or not name:
        return "is not a file name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "has a control character"
    if _SCHEME.match(name):
        return "is a URL or a command; pipe: and URLs are taken only where you write them (command line, config)"
    if name.startswith("/"):
        return "is an absolute path; an index names its shards relative to itself"
    if remote and ".." in name.split("/"):
        return "climbs out of the index's directory ('..'); an index read by URL or command names shards below it"
    if remote and not _PLAIN.fullmatch(name):
        return "has characters other than letters, digits and _.,+=@-/ (or starts with '-'): not in a remote index"
    return None


def _entries(location: str, index: dict, remote: bool) -> tuple[list[str], list[int | None]]:
    """The names and sample counts of an index's shards, each checked: a name that is more than
    a plain relative name, or a count that is not a number of samples, is a ValueError naming
    `location` and the shard."""
    names, counts = [], []
    for s in index["shards"]:
        name, count = s["name"], s.get("count")
        problem = _name_problem(name, remote)
        if problem is not None:
            raise ValueError(f"{location}: shard name {name!r} {problem}")
        if count is not None and not _is_count(count):
            raise ValueError(f"{location}: shard {name!r} has count {count!r}, not a number of samples")
        names.append(name)
        counts.append(count)
    return names, counts


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_index(location: str, data) -> dict:
    """A shard index from JSON text; ValueError naming `location` if it is not one."""
    try:
        index = json.loads(data)
        if not isinstance(index, dict) or not all(isinstance(s, dict) and "name" in s for s in index["shards"]):
            raise ValueError("no list of {name, count} under 'shards'")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"{location}: not a shard index ({type(e).__name__}: {e})") from None
    return index
