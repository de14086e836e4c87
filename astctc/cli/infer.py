"""Inference commands: transcribe, classify, evaluate."""

from __future__ import annotations

import argparse
import os
import sys

from .common import SHARDS_HELP, add_parser, beam_config, beam_options


def cmd_transcribe(a: argparse.Namespace) -> None:
    from ..transcribe import Transcriber

    asr = Transcriber(a.model, a.device)
    if a.lm is None and a.format == "text":
        for f in a.files:
            text = asr(f)
            print(f"{f}\t{text}" if len(a.files) > 1 else text)
        return
    from ..decode import BeamSearch
    from ..words import format_transcripts, transcribe_words

    search = None
    if a.lm is not None:
        search = BeamSearch(
            asr.tokenizer, a.lm, beam_config(a), asr.frame_seconds, num_workers=a.workers or os.cpu_count() or 1
        )
    try:
        hyps = transcribe_words(asr, a.files, search)
    finally:
        if search is not None:
            search.close()
    sys.stdout.write(format_transcripts(a.files, hyps, a.format))


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
    s = add_parser(sub, "transcribe", "print the transcript of audio files", cmd_transcribe)
    s.add_argument(
        "files", nargs="+", help="audio files of any length (read a window at a time: memory does not grow with it)"
    )
    s.add_argument("--model", required=True, help="model directory")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument(
        "--format", choices=["text", "json", "srt"], default="text", help="json and srt carry word start/end times"
    )
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
