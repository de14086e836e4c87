"""Where shards live: a local directory or files, or URLs read through webdataset's `gopen`.

A shard set is given as one of
    /data/train                      a directory: its index.json, else its *.tar in name order
    /data/train/index.json           an index (its shards, in its order, and its sample count)
    /data/train/000000.tar           one shard;  [a.tar, b.tar]  a list of shards, as they are
    /data/train/{000000..000003}.tar a brace-expanded list (the `braceexpand` package)
    https://host/train/index.json    an index by URL; https://host/train/ (ending in /) its directory
    https://host/train/{000000..000511}.tar
    pipe:aws s3 cp s3://bucket/train/{000000..000511}.tar -
                                     brace lists of URLs or of shell commands writing a shard

A URL is read by `webdataset.gopen.gopen`: http(s) and the other schemes gopen knows through
curl (or gsutil, ais), `pipe:` through the shell. A remote directory cannot be listed, so it
needs its index.json. For a brace list the sample count comes from the index.json beside the
shards (same place, the shard's file name replaced, also inside a `pipe:` command); without one
the count is unknown, which is not an error.

Resolution happens once, where the dataset is built, and gives the same list in every rank and
DataLoader worker, which is what keeps epochs exact (each shard read by one slot).
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import re
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

INDEX = "index.json"
_URL = re.compile(r"^(pipe:|[A-Za-z][A-Za-z0-9+.-]+://)")
_TOKEN = re.compile(r"[^\s'\"]+")  # a word of a shell command
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


# ---------------------------------------------------------------------------------- opening


class _RemoteShard(io.RawIOBase):
    """A gopen stream whose failure is one OSError naming the URL, raised where it shows:
    at open when the command ends without a byte, else by the read that meets the end of
    the stream. Closing never raises (an early close ends the command with a broken pipe)."""

    def __init__(self, url: str):
        from webdataset.gopen import Pipe, gopen

        super().__init__()
        self.url, self._pipe, self._stream, self._ended = url, None, None, False
        try:
            obj = gopen(url, "rb")
        except (ValueError, OSError) as e:  # no handler for the scheme, a refused pipe:, ...
            why = str(e)
            raise OSError(why if why.startswith(url) else f"{url}: {why}") from None
        self._pipe = obj if isinstance(obj, Pipe) else None
        self._stream = obj.stream if self._pipe is not None else obj
        peek = getattr(self._stream, "peek", None)
        if self._pipe is not None and peek is not None and not peek(1):
            try:
                self._finish()  # nothing came: a failed command says so now, at open
            except OSError:
                self.close()
                raise

    def __repr__(self) -> str:  # webdataset appends "@ <stream>" to errors it meets
        return self.url

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._ended:
            return 0
        n = self._stream.readinto(b)
        if not n and self._pipe is not None:
            self._finish()
        return n

    def _finish(self) -> None:
        """At the end of the stream: OSError unless the command exited well."""
        self._ended = True
        status = self._pipe.proc.wait()
        if status in self._pipe.ignore_status:
            return
        cmd = self._pipe.args[0][0]
        prog = cmd[0] if isinstance(cmd, (list, tuple)) else "command"
        if status < 0:
            why = f"{prog} killed by signal {-status}"
        else:
            why = f"{prog} exit {status}"
            if prog == "curl" and status in _CURL_EXIT:
                why += f" ({_CURL_EXIT[status]})"
        raise OSError(f"{self.url}: {why}")

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._stream is not None and not self._stream.closed:
                self._stream.close()  # a command still writing gets a broken pipe and exits
            if self._pipe is not None:
                try:
                    self._pipe.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._pipe.proc.kill()
                    self._pipe.proc.wait()
        finally:
            super().close()


def open_shard(shard) -> io.IOBase:
    """A binary stream of one shard (a context manager): `open(path, "rb")` for a local path,
    `webdataset.gopen.gopen(url, "rb")` for a URL. Failures are OSErrors; for a URL they name
    it and come at open (the command ended before its first byte) or from a later read."""
    if not is_url(shard):
        return open(shard, "rb")
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


def _counts_of(index: dict) -> list[int | None]:
    return [s.get("count") for s in index["shards"]]


def _resolve_local(spec) -> tuple[list[str], Counts]:
    p = Path(spec)
    if p.is_dir() and (p / INDEX).exists():
        p = p / INDEX
    if p.is_dir():
        return sorted(str(t) for t in p.glob("*.tar")), None
    if p.suffix == ".json":
        index = json.loads(p.read_text(encoding="utf-8"))
        return [str(p.parent / s["name"]) for s in index["shards"]], _counts_of(index)
    return [str(p)], None


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
        index = _fetch_index(url, required=True)
        shards = [url[: w.start()] + _beside(w.group(), s["name"]) + url[w.end() :] for s in index["shards"]]
        return shards, _counts_of(index)
    if url.endswith("/"):
        url += INDEX
    elif not url.split("?", 1)[0].endswith(".json"):
        return [url], None  # one shard
    index = _fetch_index(url, required=True)
    return [_beside(url, s["name"]) for s in index["shards"]], _counts_of(index)


def _beside(location: str, name: str) -> str:
    """`name` (an index entry: a file name or a relative path, as `astctc combine` writes)
    resolved against the directory of `location` (a URL or a path)."""
    if is_url(name):
        return name
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
        counts = {s["name"]: s.get("count") for s in index["shards"]}
        missing = [n for n in names if counts.get(n) is None]
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
        index = json.loads(data)
        if not isinstance(index, dict) or not all(isinstance(s, dict) and "name" in s for s in index["shards"]):
            raise ValueError("no list of {name, count} under 'shards'")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        if required:
            raise ValueError(f"{location}: not a shard index ({type(e).__name__}: {e})") from None
        log.info("%s is not a shard index (%s); sample count unknown", location, e)
        return None
    return index
