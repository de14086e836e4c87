"""Downloads against a local HTTP server: resume (only of the same file: If-Range), retries,
checksums, what a record means, bodies without a length, host limits; extraction (its safety
against hostile archives is in test_archive_safety.py)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from astctc.corpora import download as dl
from tests.range_server import RangeServer

PAYLOAD = bytes((i * 7919 + i // 251) % 256 for i in range(300_000))
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    (root / "res").mkdir(parents=True)
    (root / "res" / "blob.bin").write_bytes(PAYLOAD)
    with RangeServer(root) as srv:
        yield srv


def _fetch(server, dest, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("progress", False)
    return dl.fetch(f"{server.url}/res/blob.bin", dest, **kw)


def test_plain_download_records_sha256_and_second_call_does_nothing(server, tmp_path):
    dest = _fetch(server, tmp_path / "d" / "blob.bin", md5=MD5)
    assert dest.read_bytes() == PAYLOAD
    record = dl.record_path(dest).read_text()
    assert record == f"{hashlib.sha256(PAYLOAD).hexdigest()}  blob.bin\n# astctc-checked: md5\n"
    assert dl.read_record(dest) == dl.Record(hashlib.sha256(PAYLOAD).hexdigest(), ("md5",))
    assert not dest.with_name("blob.bin.part").exists() and not dest.with_name("blob.bin.part.resume").exists()
    if shutil.which("sha256sum"):  # the record stays `sha256sum -c` input: the comment is skipped
        check = subprocess.run(["sha256sum", "-c", "--strict", dl.record_path(dest).name], cwd=dest.parent)
        assert check.returncode == 0
    n = len(server.log)
    _fetch(server, dest, md5=MD5)
    assert len(server.log) == n  # verified before: no request at all


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.faults["/res/blob.bin"] = ["drop:100000"]
    dest = _fetch(server, tmp_path / "blob.bin", md5=MD5)
    assert dest.read_bytes() == PAYLOAD
    reqs = server.requests("/res/blob.bin")
    assert [r[2] for r in reqs] == [None, "bytes=100000-"]


def test_existing_part_file_is_continued(server, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:123456])
    dest = _fetch(server, tmp_path / "blob.bin", md5=MD5)
    assert dest.read_bytes() == PAYLOAD
    assert [r[2] for r in server.requests("/res/blob.bin")] == ["bytes=123456-"]


def test_complete_part_file_gets_416_and_is_accepted(server, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    assert _fetch(server, tmp_path / "blob.bin", md5=MD5).read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(b"x" * 5000)  # would corrupt the file if appended to
    server.faults["/res/blob.bin"] = ["ignore-range"]
    assert _fetch(server, tmp_path / "blob.bin", md5=MD5).read_bytes() == PAYLOAD


def test_wrong_range_is_never_appended(server, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:1000])
    server.faults["/res/blob.bin"] = ["shift-range"]
    assert _fetch(server, tmp_path / "blob.bin", md5=MD5).read_bytes() == PAYLOAD
    assert [r[2] for r in server.requests("/res/blob.bin")] == ["bytes=1000-", None]


def test_transient_errors_are_retried_with_backoff(server, tmp_path, caplog):
    server.faults["/res/blob.bin"] = ["503", "drop:10", "429"]
    with caplog.at_level(logging.WARNING):
        dest = _fetch(server, tmp_path / "blob.bin")
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests("/res/blob.bin")) == 4
    assert "retry 3 of 5" in caplog.text


def test_retries_exhausted_keep_the_part_for_later(server, tmp_path):
    server.faults["/res/blob.bin"] = ["drop:1000", "drop:1000", "drop:1000"]
    with pytest.raises(dl.DownloadError, match="giving up after 3 attempts.*run again to resume"):
        _fetch(server, tmp_path / "blob.bin", retries=2)
    assert (tmp_path / "blob.bin.part").stat().st_size == 3000
    assert _fetch(server, tmp_path / "blob.bin", md5=MD5).read_bytes() == PAYLOAD


def test_not_found_fails_at_once(server, tmp_path):
    with pytest.raises(dl.DownloadError, match=r"/res/nothing.bin: HTTP 404"):
        dl.fetch(f"{server.url}/res/nothing.bin", tmp_path / "x", backoff=0.01, progress=False)
    assert len(server.requests("/res/nothing.bin")) == 1


def test_checksum_mismatch_is_a_clear_error_and_the_next_run_starts_afresh(server, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(b"garbage!" * 100)  # a bad prefix resumes into bad bytes
    with pytest.raises(dl.ChecksumError) as e:
        _fetch(server, tmp_path / "blob.bin", md5=MD5)
    msg = str(e.value)
    assert f"blob.bin: md5 mismatch: expected {MD5}" in msg and "run again" in msg
    assert not (tmp_path / "blob.bin").exists() and not (tmp_path / "blob.bin.part").exists()
    assert (tmp_path / "blob.bin.bad").exists()
    assert _fetch(server, tmp_path / "blob.bin", md5=MD5).read_bytes() == PAYLOAD


def test_hand_placed_file_is_verified_not_fetched(server, tmp_path):
    (tmp_path / "blob.bin").write_bytes(PAYLOAD)
    _fetch(server, tmp_path / "blob.bin", md5=MD5)
    assert server.log == []
    (tmp_path / "other.bin").write_bytes(PAYLOAD[:-1])
    with pytest.raises(dl.ChecksumError, match="other.bin: sha256 mismatch"):
        dl.fetch("unused", tmp_path / "other.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())


def test_local_mirror_directory_and_file_url(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "a.bin").write_bytes(PAYLOAD)
    src = dl.join_source(str(tmp_path / "mirror"), "a.bin")
    assert dl.fetch(src, tmp_path / "out" / "a.bin", md5=MD5, progress=False).read_bytes() == PAYLOAD
    url = (tmp_path / "mirror" / "a.bin").as_uri()
    assert dl.fetch(url, tmp_path / "out2" / "a.bin", md5=MD5, progress=False).read_bytes() == PAYLOAD
    with pytest.raises(dl.DownloadError, match="no such file in the mirror"):
        dl.fetch(dl.join_source(str(tmp_path / "mirror"), "b.bin"), tmp_path / "out" / "b.bin")


def test_at_most_a_few_connections_per_host(server, tmp_path, monkeypatch):
    """Counted where the guarantee lives: responses open at once in this process."""
    server.delay = 0.01
    lock, state = threading.Lock(), {"open": 0, "max": 0}
    real_urlopen = dl.urlopen

    class Counted:
        def __init__(self, r):
            self.r, self.status, self.headers = r, r.status, r.headers

        def read(self, n):
            return self.r.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.r.close()
            with lock:
                state["open"] -= 1

    def counting_urlopen(*a, **kw):
        r = real_urlopen(*a, **kw)
        with lock:
            state["open"] += 1
            state["max"] = max(state["max"], state["open"])
        return Counted(r)

    monkeypatch.setattr(dl, "urlopen", counting_urlopen)
    jobs = [{"source": f"{server.url}/res/blob.bin", "dest": tmp_path / f"{i}.bin", "md5": MD5} for i in range(6)]
    paths = dl.fetch_many(jobs, workers=6, progress=False)
    assert all(p.read_bytes() == PAYLOAD for p in paths)
    assert state["max"] == dl.MAX_PER_HOST  # parallel, but never more than the limit


def test_fetch_many_reports_every_failure(server, tmp_path):
    jobs = [{"source": f"{server.url}/res/{n}", "dest": tmp_path / n} for n in ("x1", "blob.bin", "x2")]
    with pytest.raises(dl.DownloadError) as e:
        dl.fetch_many(jobs, progress=False, backoff=0.01)
    assert "x1: HTTP 404" in str(e.value) and "x2: HTTP 404" in str(e.value)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD


def test_read_checksums(tmp_path):
    (tmp_path / "md5sum.txt").write_text(f"{MD5}  test-clean.tar.gz\n{MD5.upper()} *x/dev.tar.gz\n\n")
    assert dl.read_checksums(tmp_path / "md5sum.txt") == {"test-clean.tar.gz": MD5, "dev.tar.gz": MD5}
    assert dl.read_checksums(tmp_path / "md5sum.txt", keep_dirs=True) == {"test-clean.tar.gz": MD5, "x/dev.tar.gz": MD5}
    (tmp_path / "bad.txt").write_text("not a checksum line\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        dl.read_checksums(tmp_path / "bad.txt")
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert (
        dl.digest_kw(MD5.upper()) == {"md5": MD5} and dl.digest_kw(sha) == {"sha256": sha} and dl.digest_kw(None) == {}
    )
    with pytest.raises(ValueError, match="neither an md5"):
        dl.digest_kw("abc")


def test_git_sha1_is_the_blob_id_the_hub_lists(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_bytes(b"1\ta.wav\tRaw.\n")
    oid = dl.file_digests(p, ("git-sha1",))["git-sha1"]
    if shutil.which("git"):  # git's own id of the same bytes
        assert oid == subprocess.run(["git", "hash-object", str(p)], capture_output=True, text=True).stdout.strip()
    dl.verify(p, git_sha1=oid)
    assert dl.read_record(p).checked == ("git-sha1",) and dl.read_record(p).verified
    with pytest.raises(dl.ChecksumError, match="train.tsv: git-sha1 mismatch"):
        dl.verify(p, git_sha1="0" * 40)
    assert (tmp_path / "train.tsv.bad").exists() and not dl.record_path(p).exists()


# ---------------------------------------------------------------------------- bodies without a length, changed files


class _OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body may end with the connection (no Content-Length)

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv: _Origin = self.server  # type: ignore[assignment]
        data = srv.files.get(self.path)
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        srv.log.append((self.path, rng, if_range))
        if data is None:
            self.send_error(404)
            return
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        start = 0
        if rng and (if_range is None or if_range == etag):  # RFC 9110: a changed file is sent whole
            start = int(rng.removeprefix("bytes=").split("-")[0])
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("ETag", etag)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if srv.length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.cut.pop(0) if srv.cut else None
        self.wfile.write(body if cut is None else body[:cut])


class _Origin(ThreadingHTTPServer):
    """What RangeServer does not do: bodies without Content-Length (they end when the connection
    closes) and Range honoured only while If-Range names the current ETag; `cut` sends only the
    first N bytes of the next responses; `log` keeps (path, Range, If-Range) per request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _OriginHandler)
        self.files: dict[str, bytes] = {}
        self.length = True
        self.cut: list[int] = []
        self.log: list[tuple[str, str | None, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture()
def origin():
    srv = _Origin()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_body_without_length_cut_short_is_not_accepted(origin, tmp_path, caplog):
    """No Content-Length, no checksum: the cut is invisible to the transfer, so the archive must
    read to its end before it is accepted; the next run fetches it afresh."""
    arc = _tar(tmp_path / "src.tar.gz", [("top/a.bin", PAYLOAD)]).read_bytes()
    origin.files["/a.tar.gz"] = arc
    origin.length = False
    origin.cut = [len(arc) // 2]
    dest = tmp_path / "dl" / "a.tar.gz"
    with pytest.raises(dl.DownloadError) as e:
        dl.fetch(f"{origin.url}/a.tar.gz", dest, progress=False)
    msg = str(e.value)
    assert msg.startswith("a.tar.gz: not a complete gz archive") and "no size announced (cut short?)" in msg
    assert f"Kept as {dest}.bad; run again to download it afresh" in msg
    assert not dest.exists() and not dl.record_path(dest).exists()
    assert Path(f"{dest}.bad").stat().st_size == len(arc) // 2
    with caplog.at_level(logging.WARNING):
        dl.fetch(f"{origin.url}/a.tar.gz", dest, progress=False)
    assert dest.read_bytes() == arc
    assert dl.read_record(dest).checked == ("archive",) and not dl.read_record(dest).verified
    assert "UNVERIFIED" in caplog.text and "the archive reads to its end" in caplog.text


def test_unverified_file_is_never_trusted_silently(origin, tmp_path, caplog):
    """Nothing can check a non-archive body without a length: it is kept with a warning, every
    run that meets it warns again, and a checksum given later is checked against it."""
    origin.files["/blob.bin"] = PAYLOAD
    origin.length = False
    dest, url = tmp_path / "blob.bin", f"{origin.url}/blob.bin"
    with caplog.at_level(logging.WARNING):
        dl.fetch(url, dest, progress=False)
    assert dl.read_record(dest).checked == ("nothing",) and "nothing could check it" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dl.fetch(url, dest, progress=False)
    assert "UNVERIFIED" in caplog.text and len(origin.log) == 1  # warned again, not fetched again
    dl.fetch(url, dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert dl.read_record(dest).checked == ("sha256",) and len(origin.log) == 1  # the record's sha256 matched
    (tmp_path / "other.bin").write_bytes(PAYLOAD[:-1])
    dl.verify(tmp_path / "other.bin")  # recorded unverified ...
    with pytest.raises(dl.ChecksumError, match="other.bin: md5 mismatch"):  # ... and checked once an md5 is known
        dl.fetch(url, tmp_path / "other.bin", md5=MD5, progress=False)
    assert (tmp_path / "other.bin.bad").exists() and not dl.record_path(tmp_path / "other.bin").exists()


def test_stale_part_of_another_file_is_not_stitched(server, tmp_path):
    """A .part started from an older version of the file (its ETag recorded beside it): the
    server (this one ignores If-Range) answers 206 with another ETag, which is thrown away."""
    url = f"{server.url}/res/blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(bytes(reversed(PAYLOAD))[:100_000])
    (tmp_path / "blob.bin.part.resume").write_text(json.dumps({"url": url, "etag": '"v1"', "last_modified": None}))
    assert dl.fetch(url, tmp_path / "blob.bin", progress=False).read_bytes() == PAYLOAD  # no checksum to catch it
    assert [r[2] for r in server.requests("/res/blob.bin")] == ["bytes=100000-", None]


def test_part_without_a_validator_starts_over_unless_a_checksum_checks_it(server, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:5000])  # an older astctc's .part: which file?
    assert _fetch(server, tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert [r[2] for r in server.requests("/res/blob.bin")] == [None]
    # with a checksum to check the result it is continued (test_existing_part_file_is_continued)


def test_resume_asks_if_range_and_a_changed_file_comes_whole(origin, tmp_path):
    origin.files["/f.bin"] = PAYLOAD
    etag = f'"{hashlib.md5(PAYLOAD).hexdigest()}"'
    origin.cut = [100_000]  # Content-Length announced: the short body is noticed, then resumed
    dest, url = tmp_path / "f.bin", f"{origin.url}/f.bin"
    assert dl.fetch(url, dest, progress=False, backoff=0.01).read_bytes() == PAYLOAD
    assert origin.log == [("/f.bin", None, None), ("/f.bin", "bytes=100000-", etag)]
    # a .part of the old file, the file replaced meanwhile: If-Range fails, the new one comes whole
    origin.log.clear()
    origin.cut = [100_000]
    with pytest.raises(dl.DownloadError, match="giving up after 1 attempts"):
        dl.fetch(url, tmp_path / "g.bin", progress=False, retries=0)
    new = bytes(reversed(PAYLOAD))
    origin.files["/f.bin"] = new
    assert dl.fetch(url, tmp_path / "g.bin", progress=False).read_bytes() == new
    assert origin.log == [("/f.bin", None, None), ("/f.bin", "bytes=100000-", etag)]  # answered 200, whole


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("half", "EOFError"),
        ("gzip-trailer", "EOFError"),
        ("tar-at-member-boundary", "without its end-of-archive block"),
        ("zip-half", "BadZipFile"),
        ("zip-member", "CRC"),
        ("gz-not-tar-half", "EOFError"),
    ],
)
def test_archive_problem_finds_what_is_missing(tmp_path, damage, problem):
    if damage.startswith("zip"):
        with zipfile.ZipFile(tmp_path / "a.zip", "w", zipfile.ZIP_STORED) as z:
            z.writestr("d/a.bin", PAYLOAD)
        data = (tmp_path / "a.zip").read_bytes()
        assert dl.archive_problem(tmp_path / "a.zip", "zip") is None
        i = data.index(PAYLOAD[1000:1100])
        data = data[: len(data) // 2] if damage == "zip-half" else data[:i] + bytes(100) + data[i + 100 :]
        kind = "zip"
    elif damage == "tar-at-member-boundary":
        with tarfile.open(tmp_path / "a.tar", "w") as t:
            for name in ("a.bin", "b.bin"):
                info = tarfile.TarInfo(name)
                info.size = 1024
                t.addfile(info, io.BytesIO(PAYLOAD[:1024]))
        data = (tmp_path / "a.tar").read_bytes()[: 2 * (512 + 1024)]  # both members, no end blocks
        kind = "tar"
    elif damage == "gz-not-tar-half":
        import gzip

        data = gzip.compress(PAYLOAD)[:1000]
        kind = "gz"
    else:
        data = _tar(tmp_path / "a.tar.gz", [("a.bin", PAYLOAD)]).read_bytes()
        assert dl.archive_problem(tmp_path / "a.tar.gz", "gz") is None
        data = data[: len(data) // 2] if damage == "half" else data[:-4]
        kind = "gz"
    (tmp_path / "cut").write_bytes(data)
    assert dl.archive_kind(tmp_path / "cut") == kind
    assert problem in dl.archive_problem(tmp_path / "cut", kind)
    (tmp_path / "plain").write_bytes(PAYLOAD)
    assert dl.archive_kind(tmp_path / "plain") is None


# ---------------------------------------------------------------------------- extraction


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                t.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                t.addfile(info, io.BytesIO(m[1]))
    return path


def test_extract_tar_and_second_call_skips(tmp_path):
    arc = _tar(tmp_path / "a.tar.gz", [("top/x.txt", b"x"), ("top/sub/y.txt", b"yy")])
    out = dl.extract(arc, tmp_path / "out", progress=False)
    assert (out / "top/sub/y.txt").read_bytes() == b"yy"
    assert dl.extracted(arc, out)
    (out / "top/x.txt").write_bytes(b"changed")
    dl.extract(arc, out, progress=False)
    assert (out / "top/x.txt").read_bytes() == b"changed"  # not extracted again


def test_truncated_archive_is_a_clear_error_and_moved_aside(tmp_path):
    arc = _tar(tmp_path / "t.tar.gz", [("a.bin", os.urandom(200_000))])
    arc.write_bytes(arc.read_bytes()[:50_000])
    dl.verify(arc, sha256=hashlib.sha256(arc.read_bytes()).hexdigest())  # as if fetched and recorded
    with pytest.raises(dl.DownloadError) as e:
        dl.extract(arc, tmp_path / "out", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{arc}: cannot extract") and "corrupt or not an archive" in msg
    assert f"moved to {arc}.bad, the next run fetches it again" in msg
    assert not arc.exists() and not dl.record_path(arc).exists() and Path(f"{arc}.bad").exists()


def test_corrupt_archive_is_fetched_again_on_the_next_run(server, tmp_path):
    """fetch -> extract fails -> moved aside -> the next fetch downloads it again (and the
    checksum now catches what was wrong): the bad bytes never stay trusted under a record."""
    good = _tar(tmp_path / "good.tar.gz", [("top/a.bin", PAYLOAD)]).read_bytes()
    served = server.root / "res" / "a.tar.gz"
    served.write_bytes(good[:-300] + bytes(300))  # damaged at the source, no checksum published
    url = f"{server.url}/res/a.tar.gz"
    with pytest.raises(dl.DownloadError, match="not a complete gz archive"):
        dl.fetch(url, tmp_path / "dl" / "a.tar.gz", progress=False, backoff=0.01)
    assert (tmp_path / "dl" / "a.tar.gz.bad").exists() and not (tmp_path / "dl" / "a.tar.gz").exists()
    served.write_bytes(good)  # fixed upstream
    arc = dl.fetch(url, tmp_path / "dl" / "a.tar.gz", progress=False)
    assert (dl.extract(arc, tmp_path / "out", progress=False) / "top/a.bin").read_bytes() == PAYLOAD
    assert len(server.requests("/res/a.tar.gz")) == 2


# ---------------------------------------------------------------------------- corpora: published checksums


def test_speechcommands_published_checksums_apply_at_the_published_urls_only():
    from astctc.corpora import speechcommands as sc

    assert sc.TRAIN_URL.startswith("https://") and sc.TEST_URL.startswith("https://")
    train_sha = sc.SHA256["speech_commands_v0.02.tar.gz"]
    for url in (sc.TRAIN_URL, "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"):
        assert sc.published_checksum(url) == {"sha256": train_sha}
    assert sc.published_checksum(sc.TEST_URL) == {"sha256": sc.SHA256["speech_commands_test_set_v0.02.tar.gz"]}
    assert sc.published_checksum("http://127.0.0.1:1/speech_commands_v0.02.tar.gz") == {}
    assert sc.published_checksum("https://x.org/download.tensorflow.org/data/speech_commands_v0.02.tar.gz") == {}


def test_speechcommands_and_esc50_archives_from_elsewhere_with_and_without_a_checksum(server, tmp_path, caplog):
    from astctc.corpora import esc50
    from astctc.corpora import speechcommands as sc

    www = server.root / "res"
    _tar(www / "sc.tar.gz", [("yes/0a0b0c0d_nohash_0.wav", b"RIFF")])
    sha = hashlib.sha256((www / "sc.tar.gz").read_bytes()).hexdigest()
    with pytest.raises(dl.ChecksumError, match="sc.tar.gz: sha256 mismatch"):
        sc.download_speechcommands(tmp_path / "a", f"{server.url}/res/sc.tar.gz", None, {"sc.tar.gz": "0" * 64})
    dirs = sc.download_speechcommands(tmp_path / "a", f"{server.url}/res/sc.tar.gz", None, {"sc.tar.gz": sha})
    assert (dirs["train"] / "yes/0a0b0c0d_nohash_0.wav").exists()
    assert dl.read_record(tmp_path / "a" / "sc.tar.gz").checked == ("sha256",)
    with zipfile.ZipFile(www / "master.zip", "w") as z:
        z.writestr("ESC-50-master/meta/esc50.csv", "filename,fold,target,category\n")
    md5 = hashlib.md5((www / "master.zip").read_bytes()).hexdigest()
    with caplog.at_level(logging.WARNING):
        root = esc50.download_esc50(tmp_path / "b", f"{server.url}/res/master.zip")  # no checksum: unverified
    assert root.name == "ESC-50-master" and "UNVERIFIED" in caplog.text
    assert dl.read_record(tmp_path / "b" / "ESC-50-master.zip").checked == ("size", "archive")
    esc50.download_esc50(tmp_path / "b", f"{server.url}/res/master.zip", md5=md5)  # now checked, no refetch
    assert dl.read_record(tmp_path / "b" / "ESC-50-master.zip").checked == ("md5",)
    assert len(server.requests("/res/master.zip")) == 1


def test_fleurs_mirror_with_and_without_checksums(server, tmp_path, caplog):
    from astctc.corpora import fleurs

    lang = server.root / "data" / "en_us"
    (lang / "audio").mkdir(parents=True)
    (lang / "train.tsv").write_text("1\ta.wav\tA.\ta\ta |\t16000\tMALE\n")
    _tar(lang / "audio" / "train.tar.gz", [("train/a.wav", b"RIFF")])
    sums = tmp_path / "sha256sum.txt"
    sums.write_text(
        "".join(
            f"{hashlib.sha256((server.root / p).read_bytes()).hexdigest()}  ./{p}\n"
            for p in ("data/en_us/train.tsv", "data/en_us/audio/train.tar.gz")
        )
    )
    kw = dict(splits=["train"], mirror=server.url, progress=False)
    fleurs.download(["en_us"], tmp_path / "v", checksums=sums, **kw)
    for p in ("data/en_us/train.tsv", "data/en_us/audio/train.tar.gz"):
        assert dl.read_record(tmp_path / "v" / p).checked == ("sha256",)
    assert (tmp_path / "v/data/en_us/audio/train/a.wav").exists()
    with caplog.at_level(logging.WARNING):
        fleurs.download(["en_us"], tmp_path / "u", **kw)
    assert caplog.text.count("UNVERIFIED") == 2  # the TSV and the archive
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fleurs.download(["en_us"], tmp_path / "u", **kw)  # the TSV is used again: said again
    assert caplog.text.count("UNVERIFIED") == 1 and "train.tsv" in caplog.text
    fleurs.download(["en_us"], tmp_path / "u", checksums=sums, **kw)  # given later: checked, then verified
    assert dl.read_record(tmp_path / "u" / "data/en_us/train.tsv").checked == ("sha256",)


def test_esc50_default_url_is_checked_against_the_published_md5(tmp_path, monkeypatch):
    from astctc.corpora import esc50

    asked = {}

    def fake_fetch(source, dest, **kw):
        asked.update(kw, source=source)
        raise dl.ChecksumError("ESC-50-master.zip: md5 mismatch: expected ..., got ...")

    monkeypatch.setattr(dl, "fetch", fake_fetch)
    assert esc50.URL.startswith("https://")
    with pytest.raises(dl.ChecksumError, match="archive of a branch: if the branch moved"):
        esc50.download_esc50(tmp_path)
    assert asked == {"source": esc50.URL, "md5": "7771e4b9d86d0945acce719c7a59305a"}


def test_cli_passes_checksums_for_archives_from_elsewhere(server, tmp_path):
    import sys

    www = server.root / "res"
    _tar(www / "sc.tar.gz", [("yes/0a0b0c0d_nohash_0.wav", b"RIFF")])
    sums = tmp_path / "sha256sum.txt"
    sums.write_text(f"{'0' * 64}  sc.tar.gz\n")
    cmd = [sys.executable, "-m", "astctc.cli", "download", "speechcommands", "--out", str(tmp_path / "o")]
    cmd += ["--url", f"{server.url}/res/sc.tar.gz", "--test-url", "", "--checksums", str(sums)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "sc.tar.gz: sha256 mismatch" in r.stderr, r.stderr
    assert (tmp_path / "o" / "sc.tar.gz.bad").exists()


def test_mini_librispeech_md5s_at_openslr_31_and_an4_unverified_unless_given_a_checksum(tmp_path, monkeypatch):
    from astctc.corpora import an4
    from astctc.corpora import librispeech as ls

    asked: list[dict] = []

    def fake_fetch_many(jobs, **kw):
        asked.extend(jobs)
        raise dl.DownloadError("not fetched")

    monkeypatch.setattr(ls, "fetch_many", fake_fetch_many)
    with pytest.raises(dl.DownloadError):
        ls.download(["train-clean-5", "dev-clean-2", "test-clean"], tmp_path, progress=False)
    assert sorted((j["source"], j.get("md5")) for j in asked) == [
        ("https://www.openslr.org/resources/12/test-clean.tar.gz", "32fa31d27d2e1cad72775fee3f4849a9"),
        ("https://www.openslr.org/resources/31/dev-clean-2.tar.gz", "6d7ab67ac6a1d2c993d050e16d61080d"),
        ("https://www.openslr.org/resources/31/train-clean-5.tar.gz", "5df7d4e78065366204ca6845bb08f490"),
    ]

    fetched: list[dict] = []

    def fake_fetch(source, dest, **kw):
        fetched.append(dict(kw, source=source))
        raise dl.DownloadError("not fetched")

    monkeypatch.setattr(dl, "fetch", fake_fetch)
    for kw in ({}, {"sha256": "ab" * 32}):
        with pytest.raises(dl.DownloadError):
            an4.download(tmp_path, **kw)
    # CMU publishes no checksum: nothing to check against unless one is given (then it is)
    assert fetched == [{"source": an4.URL}, {"source": an4.URL, "sha256": "ab" * 32}]
