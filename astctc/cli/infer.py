"""Inference commands: transcribe, classify, evaluate."""

from __future__ import annotations

import argparse
import sys

from .common import SHARDS_HELP, add_parser, beam_config, beam_options


def _why(path: str, e: BaseException) -> str:
    """An item's error as one line, `<file>: <why>` (the readers' messages already start with the
    file; a long message, a torch error's, is cut to its first line)."""
    from . import error_text

    msg = (error_text(e).strip().splitlines() or [type(e).__name__])[0]
    return msg if msg.startswith(path) else f"{path}: {msg}"


def cmd_transcribe(a: argparse.Namespace) -> None:
    import logging
    import time

    from tqdm import tqdm

    from ..audio import audio_duration
    from ..logs import progress_disabled
    from ..transcribe import Transcriber, find_audio
    from ..writers import check_output_dir, output_stems, stdout_text, write_outputs

    fmt = "txt" if a.output_format == "text" else a.output_format
    if fmt == "all" and a.output_dir is None:
        raise ValueError("--output-format all writes one file per format: give --output-dir")
    if a.output_dir is not None:
        check_output_dir(a.output_dir)  # before any work: a bad folder is found at once
    problems: list[str] = []  # what the input folders hold but cannot be read: failed inputs
    files = find_audio(a.inputs, a.list, problems)
    if not files and not problems:
        raise ValueError("no audio to transcribe: give files, folders or --list FILE")
    inputs = len(files) + len(problems)
    if inputs == 1 and problems:
        raise OSError(problems[0])
    for p in problems:
        print(f"astctc transcribe: error: {p}", file=sys.stderr)
    if not files:
        raise ValueError(f"{inputs} of {inputs} inputs failed (named above)")
    stems = output_stems(files) if a.output_dir is not None else []
    durations = {}
    for f in files:  # from the headers, for the progress bar and the JSON; a bad file fails later
        try:
            durations[f] = audio_duration(f)
        except (ValueError, OSError):
            durations[f] = None
    asr = Transcriber(a.model, a.device, runtime=a.runtime, batch_size=a.batch_size)
    search = None
    if a.lm is not None:
        search = asr.beam_search(a.lm, beam_config(a))  # decode_one: each file in this process, as it comes
    log = logging.getLogger("astctc.transcribe")
    total = round(sum(d for d in durations.values() if d), 1)
    bar = tqdm(total=total, unit="s", desc="transcribe", disable=progress_disabled(), file=sys.stderr)
    state = {"seconds": 0.0, "logged": time.monotonic()}

    def progress(seconds: float) -> None:
        state["seconds"] += seconds
        new = round(min(state["seconds"], total), 1)
        bar.update(new - bar.n)
        bar.n = new  # no float drift past the total
        if bar.disable and time.monotonic() - state["logged"] >= 60:  # no terminal: a line a minute
            state["logged"] = time.monotonic()
            log.info("%.0f of %.0f s of audio transcribed", state["seconds"], total)

    def report(lines: list[str]) -> None:
        """One failed input: its error lines, printed at once when there are several inputs."""
        nonlocal failed, last_error
        failed += 1
        last_error = lines[-1]
        if inputs > 1:  # one input: its error is the command's (below)
            for line in lines:
                tqdm.write(f"astctc transcribe: error: {line}", file=sys.stderr)

    done, failed, seconds, finished, last_error = 0, len(problems), 0.0, 0.0, ""
    t0 = time.perf_counter()
    try:
        for n, r in asr.transcribe_all(files, search, progress):
            f = files[n]
            finished += durations[f] or 0.0  # the bar lands on the header's length once a file is done
            state["seconds"] = finished
            progress(0.0)
            if isinstance(r, Exception):
                report([_why(f, r)])
                continue
            if a.output_dir is not None:
                errors: list[OSError] = []  # an output that cannot be written fails its input, not the run
                write_outputs(a.output_dir, stems[n], r, fmt, f, durations[f], asr.name, errors)
                if errors:
                    report([str(e) for e in errors])  # each names its output
                    continue
            else:
                sys.stdout.write(stdout_text(fmt, f, r, len(files) > 1, durations[f], asr.name))
                sys.stdout.flush()
            done += 1
            seconds += durations[f] or 0.0
    finally:
        bar.close()
        if search is not None:
            search.close()
    wall = time.perf_counter() - t0
    if inputs == 1 and failed:
        raise ValueError(last_error)
    rtf = wall / seconds if seconds > 0 else float("nan")
    print(
        f"astctc transcribe: {done} file{'s' if done != 1 else ''} done, {failed} failed; "
        f"{seconds:.1f} s of audio in {wall:.1f} s (real-time factor {rtf:.3f})",
        file=sys.stderr,
    )
    if failed:
        raise ValueError(f"{failed} of {inputs} inputs failed (named above)")


def cmd_classify(a: argparse.Namespace) -> None:
    from ..classify import Classifier

    clf = Classifier(a.model, a.head, a.device)
    for f, top in zip(a.files, clf(list(a.files), top_k=a.top_k)):
        for rank, (name, p) in enumerate(top, 1):
            print(f"{f}\t{rank}\t{name}\t{p:.4f}" if len(a.files) > 1 else f"{rank}\t{name}\t{p:.4f}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from ..classify import evaluate_set, summary

    print(summary(evaluate_set(a.model, a.data, a.out, a.head, a.device, a.batch_seconds, a.allow_missing)))


def register(sub) -> None:
    s = add_parser(
        sub,
        "transcribe",
        "transcribe audio files and folders: to stdout, or one file per input and format in --output-dir",
        cmd_transcribe,
    )
    s.add_argument(
        "inputs",
        nargs="*",
        help="audio files of any length (read a window at a time) and folders, searched recursively for "
        "audio files (.wav .flac .mp3 .ogg .opus ...)",
    )
    s.add_argument(
        "--list",
        default=None,
        metavar="FILE",
        help="a text file of audio paths (or folders), one a line; blank lines and # comments are skipped, "
        "relative paths are relative to the list's folder",
    )
    s.add_argument("--model", required=True, help="model directory, or hf://org/name")
    s.add_argument(
        "--output-dir",
        default=None,
        metavar="DIR",
        help="write <input name>.<format> here for each input (default: print to stdout); inputs that "
        "share a name get their folders in it (a__x, b__x)",
    )
    s.add_argument(
        "--output-format",
        "--format",
        dest="output_format",
        choices=["txt", "json", "srt", "vtt", "tsv", "all", "text"],
        metavar="{txt,json,srt,vtt,tsv,all}",
        default="txt",
        help="txt, json (words with start/end/confidence), srt/vtt subtitles, tsv (start/end in ms, text), "
        "or all five (with --output-dir); text is txt (default: txt)",
    )
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument(
        "--runtime",
        choices=["torch", "onnx"],
        default="torch",
        help="run the model with PyTorch, or with onnxruntime over DIR/model.onnx (astctc export --format onnx)",
    )
    s.add_argument("--batch-size", type=int, default=None, help="at most this many windows per forward pass")
    beam_options(s)

    s = add_parser(sub, "classify", "print the top classes of audio files (a classification head)", cmd_classify)
    s.add_argument("files", nargs="+", help="audio files")
    s.add_argument("--model", required=True, help="model directory")
    s.add_argument("--head", default=None, help="classifier head (needed when the model has several)")
    s.add_argument("--top-k", type=int, default=5, help="classes printed per file")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    s = add_parser(sub, "evaluate", "accuracy, macro-F1, confusion matrix / mAP of classifier heads", cmd_evaluate)
    s.add_argument("--model", required=True, help="model directory")
    s.add_argument("--data", required=True, help=SHARDS_HELP)
    s.add_argument("--out", required=True, help="directory for scores.json and per-head reports")
    s.add_argument(
        "--allow-missing",
        action="store_true",
        help="score what could be read when clips are lost (unreadable, too long, missing from their "
        "shards); without it that is an error (after the reports are written)",
    )
    s.add_argument("--head", default=None, help="one head (default: all)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--batch-seconds", type=float, default=200.0, help="seconds of audio per batch")
