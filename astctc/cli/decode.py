"""Decoding commands: decode, lm, score."""

from __future__ import annotations

import argparse

from .common import ALPHA_GRID, BETA_GRID, SHARDS_HELP, add_parser, beam_config, beam_options, floats


def cmd_decode(a: argparse.Namespace) -> None:
    from ..decode import DecodeOptions, decode_set

    if a.method == "greedy" and (a.lm or a.tune):
        raise ValueError("--lm and --tune need --method beam")
    beam = {}
    if a.method == "beam":
        beam = dict(
            method="beam",
            lm=a.lm,
            beam=beam_config(a),
            tune_weights=a.tune,
            alpha_grid=a.alpha_grid,
            beta_grid=a.beta_grid,
            num_workers=a.workers,
        )
    report = decode_set(
        a.model,
        a.data,
        a.out,
        DecodeOptions(
            device=a.device,
            batch_seconds=a.batch_seconds,
            plots=a.plots,
            loader_workers=a.loader_workers,
            precision=a.precision,
            allow_missing=a.allow_missing,
            **beam,
        ),
    )
    print(report.summary())


def cmd_lm(a: argparse.Namespace) -> None:
    from ..lm import LMConfig, import_arpa, train_lm

    if bool(a.text) == bool(a.arpa):
        raise ValueError("give either --text (files to train on) or --arpa (an existing ARPA LM)")
    if a.arpa:
        files = import_arpa(a.arpa, a.out, a.binary_type)
    else:
        cfg = LMConfig(
            order=a.order,
            prune=a.prune or [],
            discount_fallback=a.discount_fallback,
            memory=a.memory,
            binary_type=a.binary_type,
        )
        files = train_lm(a.text, a.out, cfg)
    print(f"{files.model}: KenLM binary ({files.arpa}, words in {files.unigrams})")


def cmd_score(a: argparse.Namespace) -> None:
    from ..metrics import score_files

    print(score_files(a.ref, a.hyp, a.out).summary())


def register(sub) -> None:
    s = add_parser(sub, "decode", "decode a shard set and score it", cmd_decode)
    s.add_argument("--model", required=True, help="model directory")
    s.add_argument("--data", required=True, help=SHARDS_HELP)
    s.add_argument("--out", required=True, help="directory for hyp/ref trn, wer.txt, per_utt.tsv, plots")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--batch-seconds", type=float, default=200.0, help="seconds of audio per batch")
    s.add_argument(
        "--loader-workers",
        type=int,
        default=None,
        help="processes reading and featurising the shards (default: 0 on CPU, cores - 1 up to 16 on CUDA)",
    )
    s.add_argument(
        "--precision", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    s.add_argument(
        "--allow-missing",
        action="store_true",
        help="score what could be decoded when utterances are lost (unreadable, too long, missing "
        "from their shards); without it that is an error (after everything is written)",
    )
    s.add_argument("--plots", type=int, default=2, help="spectrogram+posterior plots to draw")
    s.add_argument("--method", choices=["greedy", "beam"], default="greedy", help="best path or beam search")
    beam_options(s)
    s.add_argument(
        "--tune",
        action="store_true",
        help="grid-search --alpha-grid x --beta-grid on this set and record the best pair beside the LM",
    )
    s.add_argument("--alpha-grid", type=floats, default=ALPHA_GRID, metavar="A,B,...", help="LM weights to try")
    s.add_argument("--beta-grid", type=floats, default=BETA_GRID, metavar="A,B,...", help="word bonuses to try")

    s = add_parser(sub, "lm", "train a KenLM n-gram on text/manifests, or import an ARPA file", cmd_lm)
    s.add_argument("--text", nargs="+", help="text files (one sentence a line) or JSONL manifests")
    s.add_argument("--arpa", help="an existing ARPA LM (.arpa or .arpa.gz), lower-cased on import")
    s.add_argument("--out", default="data/lm", help="directory for {N}gram.arpa, .bin, .unigrams.txt")
    s.add_argument("--order", type=int, default=4, help="n-gram order")
    s.add_argument(
        "--prune",
        type=int,
        nargs="+",
        metavar="N",
        help="lmplz count thresholds per order, e.g. 0 0 1 drops singleton 3-grams and up",
    )
    s.add_argument(
        "--discount-fallback", action="store_true", help="lmplz --discount_fallback, for tiny or artificial corpora"
    )
    s.add_argument("--memory", default="10%", help="lmplz sorting memory (-S), e.g. 10%% or 2G")
    s.add_argument(
        "--binary-type",
        choices=["probing", "trie"],
        default="probing",
        help="build_binary data structure (trie: smaller, slower)",
    )

    s = add_parser(sub, "score", "WER/CER of hypotheses against references", cmd_score)
    s.add_argument("--ref", required=True, help="trn, Kaldi text or manifest.jsonl")
    s.add_argument("--hyp", required=True, help="hypotheses, in any format --ref takes")
    s.add_argument("--out", default=None, help="directory for wer.txt and per_utt.tsv")
