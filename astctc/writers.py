"""Transcripts as files: plain text, JSON, SubRip, WebVTT and whisper-style TSV, one file per input.

The subtitle formats (srt, vtt, tsv) share one cutting of the words into cues: at most
`MAX_WORDS` words, and a new cue where speech pauses for `MAX_GAP` seconds. TSV follows
whisper's: a `start<TAB>end<TAB>text` header, then one cue a line with integer milliseconds.

Files are written atomically (a hidden temporary file in the same folder, then a rename), so a
run that is killed leaves each output either whole or absent, never half written (a kill -9 in
the middle of a write may leave the hidden `.astctc-<random>.part` behind; an exception removes
it). The temporary name is short, so it fits wherever the output's name fits, and files are
created as open() creates them (mode 0666 less the umask), not private as tempfile's are.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Sequence

from .decode import Hypothesis, Word

FORMATS = ("txt", "json", "srt", "vtt", "tsv")  # "all": every one of them
MAX_WORDS = 8  # words per subtitle cue
MAX_GAP = 0.8  # seconds of silence that start a new cue


def cues(hyp: Hypothesis, max_words: int = MAX_WORDS, max_gap: float = MAX_GAP) -> list[list[Word]]:
    """The words of `hyp` grouped into subtitle cues."""
    out: list[list[Word]] = []
    for w in hyp.words:
        if not out or len(out[-1]) >= max_words or w.start - out[-1][-1].end > max_gap:
            out.append([])
        out[-1].append(w)
    return out


def _clock(t: float, sep: str) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def to_txt(hyp: Hypothesis) -> str:
    return hyp.text + "\n"


def to_json(hyp: Hypothesis, name: str = "", duration: float | None = None, model: str = "", indent=None) -> str:
    """text, words with start/end/confidence, the audio's duration (s) and the model."""
    words = [{"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence} for w in hyp.words]
    obj = {"file": name, "text": hyp.text, "duration": duration, "model": model, "words": words}
    return json.dumps(obj, ensure_ascii=False, indent=indent) + "\n"


def to_srt(hyp: Hypothesis) -> str:
    return "".join(
        f"{k}\n{_clock(c[0].start, ',')} --> {_clock(c[-1].end, ',')}\n{' '.join(w.word for w in c)}\n\n"
        for k, c in enumerate(cues(hyp), 1)
    )


def to_vtt(hyp: Hypothesis) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_clock(c[0].start, '.')} --> {_clock(c[-1].end, '.')}\n{' '.join(w.word for w in c)}\n\n" for c in cues(hyp)
    )


def to_tsv(hyp: Hypothesis) -> str:
    return "start\tend\ttext\n" + "".join(
        f"{int(round(c[0].start * 1000))}\t{int(round(c[-1].end * 1000))}\t{' '.join(w.word for w in c)}\n"
        for c in cues(hyp)
    )


def render(fmt: str, hyp: Hypothesis, name: str = "", duration: float | None = None, model: str = "") -> str:
    """One transcript in one format (json: indented, as a file)."""
    if fmt == "json":
        return to_json(hyp, name, duration, model, indent=2)
    writers = {"txt": to_txt, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}
    if fmt not in writers:
        raise ValueError(f"output format must be one of {', '.join(FORMATS)} or all, not {fmt!r}")
    return writers[fmt](hyp)


def formats(fmt: str) -> tuple[str, ...]:
    """The formats `fmt` stands for ("all": every one)."""
    if fmt == "all":
        return FORMATS
    if fmt not in FORMATS:
        raise ValueError(f"output format must be one of {', '.join(FORMATS)} or all, not {fmt!r}")
    return (fmt,)


def stdout_text(
    fmt: str, name: str, hyp: Hypothesis, many: bool, duration: float | None = None, model: str = ""
) -> str:
    """What goes to stdout for one of the inputs without an output folder: txt is the transcript,
    tab-prefixed by the file name when there are several (`many`); json one object a line;
    srt/vtt/tsv one document, headed `==> file <==` when there are several."""
    if fmt == "txt":
        return f"{name}\t{hyp.text}\n" if many else f"{hyp.text}\n"
    if fmt == "json":
        return to_json(hyp, name, duration, model)
    return (f"==> {name} <==\n" if many else "") + render(fmt, hyp)


def output_stems(paths: Sequence[str | Path]) -> list[str]:
    """A distinct output name (without extension) for each input, in order: its stem; inputs that
    share a stem (a/x.wav, b/x.flac) are named by their path below the folder they have in
    common, folders joined by "__" (a__x, b__x); any name still shared gets "-2", "-3", ... in
    input order (x.wav and x.flac in one folder: x, x-2). Names are compared ignoring case, as
    macOS and Windows file systems do."""
    ps = [Path(os.path.abspath(p)) for p in paths]
    names = [p.stem for p in ps]
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n.lower(), []).append(i)
    for idx in groups.values():
        if len(idx) > 1:
            common = Path(os.path.commonpath([str(ps[i].parent) for i in idx]))
            for i in idx:
                rel = ps[i].parent.relative_to(common).parts
                names[i] = "__".join([*rel, ps[i].stem])
    used: set[str] = set()
    out = []
    for n in names:
        name, k = n, 1
        while name.lower() in used:
            k += 1
            name = f"{n}-{k}"
        used.add(name.lower())
        out.append(name)
    return out


def check_output_dir(out_dir: str | Path) -> Path:
    """`out_dir`, made when missing, after writing and removing a file in it: an OSError naming it
    when it is not a folder that can be written (found before any input is transcribed)."""
    d = Path(out_dir)
    if os.path.exists(d) and not os.path.isdir(d):
        raise NotADirectoryError(f"{d}: output folder exists and is not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temporary(d)
        os.close(fd)
        tmp.unlink()
    except OSError as e:
        raise OSError(f"{d}: cannot write in this output folder ({e.strerror or e})") from None
    return d


def _temporary(folder: Path) -> tuple[int, Path]:
    """A new empty file in `folder` with a short hidden random name (it fits wherever the output's
    name does), created as open() creates files: mode 0666 less the umask (0644 with umask 022)."""
    tmp = folder / f".astctc-{secrets.token_hex(8)}.part"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


def _write_error(path: Path, e: OSError) -> OSError:
    """One line naming the output `path` and why it could not be written."""
    why = "a folder has this name" if os.path.isdir(path) else (e.strerror or str(e))  # isdir: never raises
    return OSError(f"{path}: cannot write this output ({why})")


def write_atomic(path: Path, text: str) -> None:
    """`text` to `path` through a temporary file in the same folder and a rename; an OSError names
    `path` (not the temporary file)."""
    try:
        fd, tmp = _temporary(path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise


def write_outputs(
    out_dir: str | Path,
    stem: str,
    hyp: Hypothesis,
    fmt: str,
    name: str = "",
    duration: float | None = None,
    model: str = "",
    errors: list[OSError] | None = None,
) -> list[Path]:
    """`hyp` in format `fmt` (or all of them) as out_dir/<stem>.<format>; the paths written. An
    output that cannot be written is an OSError naming it: raised, or, with `errors`, appended
    there while the other formats are still written."""
    d = Path(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"{d}: cannot make the output folder ({e.strerror or e})") from None
    written = []
    for f in formats(fmt):
        p = d / f"{stem}.{f}"
        try:
            write_atomic(p, render(f, hyp, name, duration, model))
        except OSError as e:
            if errors is None:
                raise
            errors.append(e)
            continue
        written.append(p)
    return written
