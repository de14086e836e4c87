"""Extraction writes nothing outside its target: the 2025 tarfile filter bypass (a symlink chain
past PATH_MAX, tests/archive_attack.py) through `extract` and through `astctc download`, and
every other kind of member the corpora never contain (links, devices, absolute names, '..',
a path through a symbolic link already in the target), in tar and zip."""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from astctc.corpora import download as dl
from tests.archive_attack import PAYLOAD, build_symlink_chain_tar
from tests.range_server import RangeServer

REPO = Path(__file__).resolve().parents[1]


def _places(tmp_path: Path) -> tuple[Path, Path]:
    """(the file the attack aims at, outside everything extracted; the extraction target)."""
    outside = tmp_path / "outside" / "pwned.txt"
    outside.parent.mkdir()
    return outside, tmp_path / "x" / "out"


def test_the_attack_archive_escapes_plain_tarfile_data_filter(tmp_path):
    """The fixture is real: on this Python, tarfile's own `filter="data"` writes outside."""
    outside, target = _places(tmp_path)
    arc = build_symlink_chain_tar(tmp_path / "evil.tar", outside)
    target.mkdir(parents=True)
    try:
        with tarfile.open(arc) as t:
            t.extractall(target, filter="data")
    except tarfile.FilterError as e:
        pytest.skip(f"this Python's tarfile has the 2025 filter fixes ({type(e).__name__})")
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        pytest.skip(f"{target}: too long a path for the chain to fit under PATH_MAX")
    assert outside.read_bytes() == PAYLOAD


@pytest.mark.parametrize("name", ["evil.tar", "evil.tar.gz"])
def test_extract_refuses_the_symlink_chain_and_writes_nothing_outside(tmp_path, name):
    outside, target = _places(tmp_path)
    arc = build_symlink_chain_tar(tmp_path / name, outside)
    with pytest.raises(dl.DownloadError) as e:
        dl.extract(arc, target, progress=False)
    msg = str(e.value)
    assert f"{arc}: member 'a' is a symbolic link" in msg and "refusing to extract it" in msg
    assert "\n" not in msg and f"moved to {arc}.bad" in msg and "next run fetches it again" in msg
    assert not outside.exists() and list(outside.parent.iterdir()) == []
    assert not arc.exists() and Path(f"{arc}.bad").exists()
    assert not dl.extracted(arc, target)
    assert not any(p.is_symlink() for p in target.rglob("*"))


def test_download_speechcommands_refuses_the_attack_archive(tmp_path):
    """End to end, as the issue reproduced it: the CLI from a local server, no checksum."""
    outside, _ = _places(tmp_path)
    www = tmp_path / "www"
    www.mkdir()
    build_symlink_chain_tar(www / "x.tar.gz", outside)
    out = tmp_path / "dl"
    with RangeServer(www) as server:
        cmd = [sys.executable, "-m", "astctc.cli", "download", "speechcommands", "--out", str(out)]
        cmd += ["--url", f"{server.url}/x.tar.gz", "--test-url", ""]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode != 0, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("astctc download: error:")]
    assert len(errors) == 1 and "x.tar.gz: member 'a' is a symbolic link" in errors[0], r.stderr
    assert "refusing to extract it" in errors[0]
    assert "UNVERIFIED" in r.stderr  # a custom --url has no published checksum: said so
    assert "members extracted" not in r.stderr
    assert not outside.exists() and list(outside.parent.iterdir()) == []
    assert (out / "x.tar.gz.bad").exists() and not (out / "x.tar.gz").exists()


# ---------------------------------------------------------------------------- other members


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


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    return m


@pytest.mark.parametrize(
    "member, says",
    [
        (_special("top/link", tarfile.SYMTYPE, "../../../etc/passwd"), "is a symbolic link"),
        (_special("top/inside", tarfile.SYMTYPE, "ok.txt"), "is a symbolic link"),  # harmless, still refused
        (_special("top/hard", tarfile.LNKTYPE, "top/ok.txt"), "is a hard link"),
        (_special("top/dev", tarfile.CHRTYPE), "is a device file"),
        (_special("top/fifo", tarfile.FIFOTYPE), "is a FIFO"),
        (("/abs_astctc_test/escape.txt", b"x"), "has an absolute path"),
        (("../escape.txt", b"x"), "has a '..' component"),
        (("top/../../escape.txt", b"x"), "has a '..' component"),
    ],
)
def test_extract_tar_refuses_what_the_corpora_never_hold(tmp_path, member, says):
    arc = _tar(tmp_path / "evil.tar.gz", [("top/ok.txt", b"ok"), member])
    name = member.name if isinstance(member, tarfile.TarInfo) else member[0]
    with pytest.raises(dl.DownloadError, match=re.escape(f"evil.tar.gz: member {name!r} {says}")):
        dl.extract(arc, tmp_path / "out", progress=False)
    assert (tmp_path / "out/top/ok.txt").read_bytes() == b"ok"  # before the bad member: kept
    assert sorted(p.name for p in (tmp_path / "out" / "top").iterdir()) == ["ok.txt"]
    assert not (tmp_path / "escape.txt").exists() and not Path("/abs_astctc_test").exists()
    assert not dl.extracted(arc, tmp_path / "out") and Path(f"{arc}.bad").exists()


def test_extract_never_writes_through_a_symbolic_link_in_the_target(tmp_path):
    """A link already in the target tree (an earlier, unsafe unpacking; a hand-made link) is
    not followed: the member that would be written through it is refused."""
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "out"
    target.mkdir()
    (target / "top").symlink_to(tmp_path / "elsewhere")
    (target / "f.txt").symlink_to(tmp_path / "elsewhere" / "f.txt")
    for name in ("top/x.txt", "f.txt"):
        arc = _tar(tmp_path / "a.tar.gz", [(name, b"x")])
        with pytest.raises(dl.DownloadError, match=re.escape(f"member {name!r} would be written through the symbolic")):
            dl.extract(arc, target, progress=False)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_extract_keeps_dot_entries_modes_and_mtimes(tmp_path):
    """What corpora archives do hold: './'-prefixed names, executable bits, modification times."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "run.sh").write_text("#!/bin/sh\n")
    (src / "d" / "run.sh").chmod(0o755)
    os.utime(src / "d" / "run.sh", (1_000_000_000, 1_000_000_000))
    with tarfile.open(tmp_path / "a.tar", "w") as t:
        t.add(src, arcname=".")
    out = dl.extract(tmp_path / "a.tar", tmp_path / "out", progress=False)
    st = (out / "d" / "run.sh").stat()
    assert st.st_mode & 0o111 and st.st_mtime == 1_000_000_000


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for info, data in entries:
            z.writestr(info, data)
    return path


def _zip_link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "entry, says",
    [
        ((_zip_link("d/link"), b"/etc"), "is a symbolic link"),
        (("../../escape.txt", b"evil"), "has a '..' component"),
        (("/abs_astctc_test.txt", b"evil"), "has an absolute path"),
        (("C:/escape.txt", b"evil"), "has an absolute path"),
        (("d\\..\\..\\escape.txt", b"evil"), "has a '..' component"),
    ],
)
def test_extract_zip_refuses_links_and_escapes(tmp_path, entry, says):
    arc = _zip(tmp_path / "bad.zip", [("d/ok.txt", b"ok"), entry])
    name = entry[0].filename if isinstance(entry[0], zipfile.ZipInfo) else entry[0]
    with pytest.raises(dl.DownloadError, match=re.escape(f"bad.zip: member {name!r} {says}")):
        dl.extract(arc, tmp_path / "out", progress=False)
    assert not (tmp_path / "escape.txt").exists() and not Path("/abs_astctc_test.txt").exists()
    assert not (tmp_path / "out" / "d" / "link").exists() and Path(f"{arc}.bad").exists()


def test_extract_zip_with_the_esc50_layout(tmp_path):
    arc = _zip(tmp_path / "master.zip", [("ESC-50-master/", b""), ("ESC-50-master/meta/esc50.csv", b"filename\n")])
    out = dl.extract(arc, tmp_path / "out", progress=False)
    assert (out / "ESC-50-master/meta/esc50.csv").read_bytes() == b"filename\n"
    assert dl.extracted(arc, out)
