"""Downloads against a local HTTP server: resume, retries, checksums, host limits, safe extraction."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import threading
import zipfile
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
    assert dl.record_path(dest).read_text() == f"{hashlib.sha256(PAYLOAD).hexdigest()}  blob.bin\n"
    assert not dest.with_name("blob.bin.part").exists()
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
    (tmp_path / "bad.txt").write_text("not a checksum line\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        dl.read_checksums(tmp_path / "bad.txt")


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


def test_extract_tar_absolute_member_lands_inside_the_target(tmp_path):
    """tarfile's data filter strips the leading '/' (GNU tar does the same)."""
    arc = _tar(tmp_path / "abs.tar.gz", [("/abs_astctc_test/escape.txt", b"x")])
    out = dl.extract(arc, tmp_path / "out", progress=False)
    assert (out / "abs_astctc_test/escape.txt").read_bytes() == b"x"
    assert not Path("/abs_astctc_test").exists()


@pytest.mark.parametrize("evil", ["../escape.txt", "top/../../escape.txt", "link"])
def test_extract_refuses_members_outside_the_target(tmp_path, evil):
    if evil == "link":
        m = tarfile.TarInfo("top/link")
        m.type, m.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        members = [("top/ok.txt", b"ok"), m]
    else:
        members = [("top/ok.txt", b"ok"), (evil, b"evil")]
    arc = _tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(dl.DownloadError, match="evil.tar.gz: refusing member"):
        dl.extract(arc, tmp_path / "out", progress=False)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "top" / "link").exists()
    assert not dl.extracted(arc, tmp_path / "out")


def test_extract_zip_and_refuse_traversal(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("d/a.txt", "a")
    assert (dl.extract(good, tmp_path / "out", progress=False) / "d/a.txt").read_text() == "a"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("d/ok.txt", "ok")
        z.writestr("../../escape.txt", "evil")
    with pytest.raises(dl.DownloadError, match=r"bad.zip: refusing member '../../escape.txt'"):
        dl.extract(bad, tmp_path / "out2", progress=False)
    assert not (tmp_path / "escape.txt").exists()


def test_truncated_archive_is_a_clear_error(tmp_path):
    arc = _tar(tmp_path / "t.tar.gz", [("a.bin", os.urandom(200_000))])
    arc.write_bytes(arc.read_bytes()[:50_000])
    with pytest.raises(dl.DownloadError, match="t.tar.gz: cannot extract"):
        dl.extract(arc, tmp_path / "out", progress=False)
