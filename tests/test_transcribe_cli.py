"""`astctc transcribe` over files, folders and a list file, into an output folder in every format.

A tiny random model whose CTC head favours the space (so its transcripts have many words, and
the subtitle formats several cues) runs over real speech (LJ001 clips from the shared data).
Checked: which files a folder and a list file give, one output per input and format named
after the input (same-named inputs kept apart), each format's syntax, a broken file among good
ones (the good ones written, one error line naming it, exit 1), and the closing summary line.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from astctc import writers
from astctc.audio import load_audio
from astctc.cli import main
from astctc.decode import Hypothesis, Word
from astctc.features import FeatureConfig
from astctc.transcribe import find_audio
from astctc.writers import FORMATS, output_stems, render, write_outputs
from tests.conftest import tiny_ctc_model

SUMMARY = re.compile(
    r"astctc transcribe: (\d+) files? done, (\d+) failed; ([\d.]+) s of audio in ([\d.]+) s \(real-time factor [\d.]+\)"
)


def tiny_model(path: Path, max_frames: int = 200) -> Path:
    """A random 1-layer model with 2 s windows; its head's space bias makes it speak in words."""
    model, tok = tiny_ctc_model(max_frames=max_frames)
    with torch.no_grad():
        model.ctc.proj.bias.zero_()
        model.ctc.proj.bias[tok.labels().index(" ")] = 1.0
    model.save(path, FeatureConfig(), tok)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("cli") / "model")


@pytest.fixture(scope="module")
def clips(shared_data) -> list[np.ndarray]:
    """Three LJ001 clips, cut to 2.5, 3 and 5 s (the last spans several windows)."""
    wavs = [shared_data / "ljspeech_lj001" / "wavs" / f"LJ001-000{k}.flac" for k in (1, 3, 4)]
    out = [load_audio(w)[: int(s * 16000)].numpy() for w, s in zip(wavs, (2.5, 3.0, 5.0))]
    assert [len(x) for x in out] == [40000, 48000, 80000]
    return out


def put(path: Path, wav: np.ndarray, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, sr)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["transcribe", "--device", "cpu", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_folders_a_list_file_and_extensions(clips, tmp_path):
    root = tmp_path / "in"
    a = put(root / "a" / "x.flac", clips[0])
    b = put(root / "b" / "x.wav", clips[1])
    c = put(root / "b" / "deep" / "y.WAV", clips[2])  # extensions in any case
    (root / "b" / "notes.txt").write_text("not audio")  # skipped: not an audio extension
    (root / "b" / "deep" / "cover.jpg").write_bytes(b"\xff\xd8")
    outside = put(tmp_path / "other" / "z.flac", clips[0])
    lst = tmp_path / "other" / "list.txt"
    lst.write_text(f"# my files\n\nz.flac\n  {a}  \nmissing.flac\n")  # relative to the list's folder
    files = find_audio([str(root)], lst)
    assert files == [str(a), str(c), str(b), str(outside), str(tmp_path / "other" / "missing.flac")]
    # a path named twice is transcribed once; an explicit file is taken whatever its extension
    assert find_audio([str(a), str(root / "a")]) == [str(a)]
    assert find_audio([str(root / "b" / "notes.txt")]) == [str(root / "b" / "notes.txt")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no audio files in this folder"):
        find_audio([str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError, match="nolist.txt: no such list file"):
        find_audio([], tmp_path / "nolist.txt")
    # the two x's keep apart: their folders below the one they share name them
    assert output_stems(files) == ["a__x", "y", "b__x", "z", "missing"]
    assert output_stems(["d/x.wav", "d/x.flac", "d/X.mp3", "x-2.wav"]) == ["x", "x-2", "X-3", "x-2-2"]


def test_output_dir_in_every_format(model_dir, clips, tmp_path, capsys):
    root = tmp_path / "in"
    files = [put(root / "a" / "x.flac", clips[0]), put(root / "b" / "x.flac", clips[1]), put(root / "y.wav", clips[2])]
    out = tmp_path / "out"
    code, stdout, err = run(
        capsys, "--model", str(model_dir), "--output-dir", str(out), "--output-format", "all", str(root)
    )
    assert code == 0, err
    assert stdout == ""
    stems = ["a__x", "b__x", "y"]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.{f}" for s in stems for f in FORMATS)  # no temp files
    m = SUMMARY.search(err)
    assert m and (m[1], m[2]) == ("3", "0"), err
    assert float(m[3]) == pytest.approx(2.5 + 3.0 + 5.0, abs=0.1)

    for stem, f, seconds in zip(stems, files, (2.5, 3.0, 5.0)):
        j = json.loads((out / f"{stem}.json").read_text())
        assert j["file"] == str(f) and j["model"] == str(model_dir)
        assert j["duration"] == pytest.approx(seconds)
        assert len(j["words"]) > 3 and j["text"] == " ".join(w["word"] for w in j["words"])
        for w in j["words"]:
            assert 0 <= w["start"] < w["end"] <= seconds + 0.05 and 0 <= w["confidence"] <= 1
        assert (out / f"{stem}.txt").read_text() == j["text"] + "\n"

        srt = (out / f"{stem}.srt").read_text().strip().split("\n\n")
        assert len(srt) > 1  # the space-loving model says enough words for several cues
        for k, cue in enumerate(srt, 1):
            num, timing, text = cue.split("\n")
            assert num == str(k) and text
            assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", timing), timing
        vtt = (out / f"{stem}.vtt").read_text()
        assert vtt.startswith("WEBVTT\n\n")
        vcues = vtt[len("WEBVTT\n\n") :].strip().split("\n\n")
        assert len(vcues) == len(srt)
        for cue in vcues:
            assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n\S.*", cue), cue

        rows = [r.split("\t") for r in (out / f"{stem}.tsv").read_text().splitlines()]
        assert rows[0] == ["start", "end", "text"] and len(rows) == len(srt) + 1
        ends = [int(r[1]) for r in rows[1:]]
        assert all(0 <= int(r[0]) < int(r[1]) for r in rows[1:]) and ends == sorted(ends)
        assert " ".join(r[2] for r in rows[1:]) == j["text"]
        assert ends[-1] == round(j["words"][-1]["end"] * 1000)

    # one format: one file per input, rewritten in place
    code, _, err = run(
        capsys, "--model", str(model_dir), "--output-dir", str(out), "--output-format", "vtt", str(files[2])
    )
    assert code == 0 and "1 file done, 0 failed" in err, err


def test_a_broken_file_among_good_ones(model_dir, clips, tmp_path, capsys):
    root = tmp_path / "in"
    good = [put(root / "a.flac", clips[0]), put(root / "c.wav", clips[1])]
    broken = root / "b.flac"
    broken.write_bytes(b"not audio at all" * 10)
    lst = tmp_path / "list.txt"
    lst.write_text("in/gone.wav\n")
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "--model", str(model_dir), "--output-dir", str(out), "--format", "json", str(root), "--list", str(lst)
    )
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "c.json"]
    for g in good:
        assert json.loads((out / f"{g.stem}.json").read_text())["file"] == str(g)
    lines = err.strip().splitlines()
    assert f"astctc transcribe: error: {broken}: cannot decode audio" in err
    assert f"astctc transcribe: error: {tmp_path / 'in' / 'gone.wav'}: no such audio file" in err
    m = SUMMARY.search(err)
    assert m and (m[1], m[2]) == ("2", "2"), err
    assert lines[-1] == "astctc transcribe: error: 2 of 4 inputs failed (named above)"
    assert "Traceback" not in err


def test_stdout_formats(model_dir, clips, tmp_path, capsys):
    a, b = put(tmp_path / "a.flac", clips[0]), put(tmp_path / "b.wav", clips[1])
    code, one, _ = run(capsys, "--model", str(model_dir), str(a))
    assert code == 0 and one.count("\n") == 1 and "\t" not in one
    code, both, err = run(capsys, "--model", str(model_dir), str(a), str(b))
    assert code == 0 and both.splitlines() == [f"{a}\t{one.strip()}", f"{b}\t{both.splitlines()[1].split(chr(9))[1]}"]
    assert SUMMARY.search(err)
    code, js, _ = run(capsys, "--model", str(model_dir), "--format", "json", str(a), str(b))
    objs = [json.loads(line) for line in js.splitlines()]
    assert [o["file"] for o in objs] == [str(a), str(b)] and objs[0]["text"] == one.strip()
    code, tsv, _ = run(capsys, "--model", str(model_dir), "--output-format", "tsv", str(a), str(b))
    assert tsv.startswith(f"==> {a} <==\nstart\tend\ttext\n") and f"==> {b} <==\n" in tsv
    code, _, err = run(capsys, "--model", str(model_dir), "--output-format", "all", str(a))
    assert code == 1 and "--output-format all writes one file per format: give --output-dir" in err
    # one window per forward pass: the same transcripts
    code, one_by_one, _ = run(capsys, "--model", str(model_dir), "--batch-size", "1", str(a), str(b))
    assert code == 0 and one_by_one == both
    # beam search with an LM (--lm and its options from cli/common.py)
    from tests.test_lm_decode import write_arpa

    lm = write_arpa(tmp_path / "2gram.arpa", {"the": -1.0, "cat": -1.5})
    code, js, err = run(
        capsys, "--model", str(model_dir), "--lm", str(lm), "--beam-width", "8", "--format", "json", str(a)
    )
    assert code == 0, err
    assert all(0 <= w["confidence"] <= 1 for w in json.loads(js)["words"]) and json.loads(js)["words"]


def test_writers_cut_cues_at_pauses_and_write_whole_files(tmp_path, monkeypatch):
    hyp = Hypothesis("a b c", [Word("a", 0.0, 0.5, 0.9), Word("b", 0.6, 1.0, 0.8), Word("c", 3.0, 3.25, 0.5)], 0.0)
    assert render("srt", hyp) == "1\n00:00:00,000 --> 00:00:01,000\na b\n\n2\n00:00:03,000 --> 00:00:03,250\nc\n\n"
    assert render("tsv", hyp) == "start\tend\ttext\n0\t1000\ta b\n3000\t3250\tc\n"
    assert render("vtt", hyp).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\na b\n\n")
    long = Hypothesis("w", [Word("w", 3725.5, 3726.0, 0.25)], 0.0)  # past an hour
    assert "01:02:05,500 --> 01:02:06,000" in render("srt", long)
    assert json.loads(render("json", long, "l.wav", 3726.2, "m")) == {
        "file": "l.wav",
        "text": "w",
        "duration": 3726.2,
        "model": "m",
        "words": [{"word": "w", "start": 3725.5, "end": 3726.0, "confidence": 0.25}],
    }
    paths = write_outputs(tmp_path / "o", "x", hyp, "all", "x.wav", 3.3, "m")
    assert [p.name for p in paths] == [f"x.{f}" for f in FORMATS]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(p.name for p in paths)
    # a write that dies half way leaves the earlier file whole and no temporary file behind
    before = (tmp_path / "o" / "x.txt").read_text()

    def interrupted(src, dst):
        assert Path(src).read_text() == "new text\n"  # the whole text went to the temporary file first
        raise KeyboardInterrupt

    monkeypatch.setattr(writers.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        writers.write_atomic(tmp_path / "o" / "x.txt", "new text\n")
    assert (tmp_path / "o" / "x.txt").read_text() == before
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(p.name for p in paths)


def test_runtime_onnx_gives_the_same_transcripts(model_dir, clips, tmp_path, capsys):
    from astctc.export import export_onnx

    onnx_model = tmp_path / "model"
    shutil.copytree(model_dir, onnx_model)
    export_onnx(onnx_model)
    files = [str(put(tmp_path / f"{k}.flac", c)) for k, c in enumerate(clips)]
    code, by_torch, _ = run(capsys, "--model", str(onnx_model), *files)
    assert code == 0
    code, by_onnx, err = run(capsys, "--model", str(onnx_model), "--runtime", "onnx", *files)
    assert code == 0 and by_onnx == by_torch and SUMMARY.search(err), err


def test_odd_rates_and_a_failing_file_fail_alone(model_dir, clips, tmp_path, capsys, monkeypatch):
    """good1, a 44101 Hz file (read in bounded memory: transcribed), a 2 KB file declaring
    1,000,003 Hz, a file whose reading runs out of memory, good2: each bad one named on its own
    line, the others written."""
    import astctc.audio as audio

    root = tmp_path / "in"
    good1, good2 = put(root / "good1.flac", clips[0]), put(root / "good2.flac", clips[1])
    odd = put(root / "odd.wav", audio.resample(torch.from_numpy(clips[2][:32000]), 16000, 44101).numpy(), 44101)
    absurd = put(root / "absurd.wav", np.zeros(1000, np.float32), 1000003)
    oom = put(root / "oom.wav", audio.resample(torch.from_numpy(clips[0]), 16000, 22051).numpy(), 22051)
    real = audio._resampler

    def resampler(orig, new):
        if orig == 22051:  # what a resampler's huge kernel did (12 GB for 44101 Hz before)
            raise MemoryError("cannot allocate 9.7 GB")
        return real(orig, new)

    monkeypatch.setattr(audio, "_resampler", resampler)
    out = tmp_path / "out"
    files = [good1, odd, absurd, oom, good2]
    code, _, err = run(capsys, "--model", str(model_dir), "--output-dir", str(out), *map(str, files))
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["good1.txt", "good2.txt", "odd.txt"]
    lines = err.strip().splitlines()
    assert f"astctc transcribe: error: {absurd}: sample rate of 1000003 Hz is outside 1000..768000 Hz" in lines
    assert f"astctc transcribe: error: {oom}: reading failed (MemoryError: cannot allocate 9.7 GB)" in lines
    assert lines[-1] == "astctc transcribe: error: 2 of 5 inputs failed (named above)"
    assert "Traceback" not in err


def test_a_failed_batch_is_run_again_item_by_item(model_dir, clips, tmp_path, capsys, monkeypatch):
    """Windows of several files share a forward pass; when it fails, each file's windows run
    alone, so only the file whose windows fail is lost."""
    from astctc.inference import WindowedModel

    files = [put(tmp_path / f"{k}.flac", c) for k, c in enumerate(clips)]
    code, alone, _ = run(capsys, "--model", str(model_dir), str(files[0]), str(files[2]))
    assert code == 0
    real = WindowedModel.window_log_probs

    def window_log_probs(self, windows):
        if any(w.source == 1 for w in windows):
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
        return real(self, windows)

    monkeypatch.setattr(WindowedModel, "window_log_probs", window_log_probs)
    code, both, err = run(capsys, "--model", str(model_dir), *map(str, files))
    assert code == 1
    assert both == alone
    lines = err.strip().splitlines()
    assert f"astctc transcribe: error: {files[1]}: the model failed (RuntimeError: CUDA out of memory.)" in lines
    assert lines[-1] == "astctc transcribe: error: 1 of 3 inputs failed (named above)"


def test_unreadable_folders_and_broken_links_are_failed_inputs(clips, model_dir, tmp_path, capsys, monkeypatch):
    import os

    import astctc.transcribe as transcribe

    root = tmp_path / "in"
    good = [put(root / "a.flac", clips[0]), put(root / "sub" / "b.flac", clips[1])]
    locked = root / "locked"
    put(locked / "c.flac", clips[2])
    (root / "gone.flac").symlink_to(tmp_path / "nowhere.flac")
    (root / "gone_folder").symlink_to(tmp_path / "nowhere")
    (root / "loop").symlink_to(root / "loop")
    real = os.scandir

    def scandir(path):  # root reads any folder: stand in for one without permission
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(transcribe.os, "scandir", scandir)
    problems: list[str] = []
    assert find_audio([str(root)], problems=problems) == [str(g) for g in good]
    assert sorted(problems) == sorted(
        [
            f"{root / 'gone.flac'}: broken symbolic link (its target {tmp_path / 'nowhere.flac'} does not exist)",
            f"{root / 'gone_folder'}: broken symbolic link (its target {tmp_path / 'nowhere'} does not exist)",
            f"{root / 'loop'}: broken symbolic link (its target {root / 'loop'} does not exist)",
            f"{locked}: cannot read this folder (Permission denied)",
        ]
    )
    with pytest.raises(OSError, match="broken symbolic link|cannot read this folder"):
        find_audio([str(root)])  # without a list for them: an error, never skipped unseen
    out = tmp_path / "out"
    code, _, err = run(capsys, "--model", str(model_dir), "--output-dir", str(out), str(root))
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    lines = err.strip().splitlines()
    for p in problems:
        assert f"astctc transcribe: error: {p}" in lines
    m = SUMMARY.search(err)
    assert m and (m[1], m[2]) == ("2", "4"), err
    assert lines[-1] == "astctc transcribe: error: 4 of 6 inputs failed (named above)"
    # a folder holding nothing but an unreadable subfolder: its one line, exit 1
    code, _, err = run(capsys, "--model", str(model_dir), str(locked.parent / "locked"))
    assert (
        code == 1 and err.strip() == f"astctc transcribe: error: {locked}: cannot read this folder (Permission denied)"
    )


def test_an_output_that_cannot_be_written_fails_its_input_only(model_dir, clips, tmp_path, capsys):
    import os

    root = tmp_path / "in"
    long_ok = put(root / ("a" * 241 + ".flac"), clips[0])  # a legal 247-character name: outputs of 246 fit
    too_long = put(root / ("b" * 251 + ".wav"), clips[1])  # its .json has 256 characters: cannot exist
    taken = put(root / "taken.flac", clips[0])
    last = put(root / "z.flac", clips[1])
    out = tmp_path / "out"
    (out / "taken.json").mkdir(parents=True)  # a folder has that output's name
    old = os.umask(0o027)
    try:
        code, _, err = run(capsys, "--model", str(model_dir), "--output-dir", str(out), "--format", "all", str(root))
    finally:
        os.umask(old)
    assert code == 1
    names = sorted(p.name for p in out.iterdir())
    expected = sorted([f"{'a' * 241}.{f}" for f in FORMATS] + [f"z.{f}" for f in FORMATS])
    # taken.json: the folder; the other formats written, and the 255-character ones of b...b
    expected += [f"taken.{f}" for f in FORMATS] + [f"{too_long.stem}.{f}" for f in FORMATS if f != "json"]
    assert names == sorted(expected)
    for p in out.iterdir():
        if p.is_file():
            assert p.stat().st_mode & 0o777 == 0o640, p  # 0666 less the umask, as open() makes files
    lines = err.strip().splitlines()
    assert f"astctc transcribe: error: {out / 'taken.json'}: cannot write this output (a folder has this name)" in lines
    output = out / f"{too_long.stem}.json"
    assert f"astctc transcribe: error: {output}: cannot write this output (File name too long)" in lines
    m = SUMMARY.search(err)
    assert m and (m[1], m[2]) == ("2", "2"), err
    assert lines[-1] == "astctc transcribe: error: 2 of 4 inputs failed (named above)"
    assert long_ok.exists() and taken.exists() and last.exists()


def test_a_bad_output_dir_is_found_before_any_work(clips, tmp_path, capsys):
    a = put(tmp_path / "a.flac", clips[0])
    not_a_folder = tmp_path / "out.txt"
    not_a_folder.write_text("a file")
    # the model does not exist: the folder's error comes first, before the model is loaded
    code, _, err = run(capsys, "--model", str(tmp_path / "nomodel"), "--output-dir", str(not_a_folder), str(a))
    assert (
        code == 1
        and err.strip() == f"astctc transcribe: error: {not_a_folder}: output folder exists and is not a folder"
    )
    code, _, err = run(capsys, "--model", str(tmp_path / "nomodel"), "--output-dir", str(not_a_folder / "x"), str(a))
    assert code == 1 and err.strip().startswith(f"astctc transcribe: error: {not_a_folder / 'x'}: cannot write"), err
