"""`astctc <command>`: each command is a thin wrapper over one module."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

log = logging.getLogger("astctc")


def cmd_synth(a: argparse.Namespace) -> None:
    from .data.synth import synthesize_corpus

    info = synthesize_corpus(a.out, a.num_train, a.num_dev, a.num_test, seed=a.seed, jobs=a.jobs,
                             transcript=a.transcript)
    print(json.dumps(info, indent=2, default=str))


def cmd_download(a: argparse.Namespace) -> None:
    """Fetch a corpus (resumable, checksum-verified) and unpack it under --out."""
    if a.corpus == "librispeech":
        from .data import librispeech as ls

        subsets = list(dict.fromkeys(a.subsets))
        info = ls.download(subsets, a.out, a.mirror, a.lm_files, a.lm_mirror, a.checksums, a.keep_archives,
                           a.workers)
    else:
        from .data import fleurs

        info = fleurs.download(a.lang, a.out, a.splits, mirror=a.mirror, endpoint=a.hf_endpoint,
                               revision=a.revision, keep_archives=a.keep_archives)
    print(json.dumps(info, indent=1))


def cmd_prepare(a: argparse.Namespace) -> None:
    """Upstream layout -> manifest.jsonl (transcripts as published, durations from the headers)."""
    if a.corpus == "librispeech":
        from .data.librispeech import prepare

        info = prepare(a.root, a.subsets, a.out)
    else:
        from .data.fleurs import prepare

        info = prepare(a.root, a.lang, a.split, a.out)
    print(json.dumps(info))


def cmd_manifest(a: argparse.Namespace) -> None:
    """Validate a manifest: audio readable (duration from its header), transcript not empty."""
    from .audio import AudioError, audio_duration
    from .data.manifest import read_manifest, write_manifest
    from .text import normalize

    good, bad = [], 0
    for r in read_manifest(a.inp):
        try:
            r["duration"] = round(audio_duration(r["audio"]), 4)
        except AudioError as e:
            log.warning("%s: utterance %s skipped: %s", a.inp, r["id"], e)
            bad += 1
            continue
        if not a.allow_empty_text and not normalize(r["text"]):
            log.warning("%s: utterance %s skipped: empty transcript", a.inp, r["id"])
            bad += 1
            continue
        good.append(r)
    if not good:
        raise ValueError(f"{a.inp}: no usable utterances ({bad} rejected)")
    write_manifest(good, a.out)
    hours = sum(r["duration"] for r in good) / 3600
    print(f"{a.out}: {len(good)} utterances, {hours:.2f} h, {bad} rejected")


def cmd_shards(a: argparse.Namespace) -> None:
    from .data.shards import write_shards

    info = write_shards(a.manifest, a.out, max_shard_mb=a.max_shard_mb, max_shard_count=a.max_shard_count)
    print(f"{a.out}: {info['count']} utterances, {info['seconds'] / 3600:.2f} h, "
          f"{len(info['shards'])} shards, {info['skipped']} skipped")


def cmd_tokenizer(a: argparse.Namespace) -> None:
    from .data.manifest import read_manifest
    from .text import normalize
    from .tokenizer import CharTokenizer, SentencePieceTokenizer

    texts = [normalize(r["text"]) for m in a.manifest for r in read_manifest(m)]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"{', '.join(a.manifest)}: no transcripts to train a tokenizer on")
    if a.type == "char":
        tok = CharTokenizer.train(texts)
    else:
        tok = SentencePieceTokenizer.train(texts, vocab_size=a.vocab_size, model_type=a.type)
    path = tok.save(a.out)
    print(f"{path}: {a.type} tokenizer, {tok.vocab_size} tokens (blank included)")


def cmd_train(a: argparse.Namespace) -> None:
    from .train import train

    summary = train(a.config, a.set or [])
    if summary:
        print(json.dumps(summary))


def cmd_init_check(a: argparse.Namespace) -> None:
    from .models.pretrained import init_check

    print(init_check(a.config, a.set or [], a.init))


def cmd_average(a: argparse.Namespace) -> None:
    from .train import average_checkpoints

    print(average_checkpoints(a.exp, a.last, a.out))


def _beam_config(a: argparse.Namespace):
    from .decode import BeamConfig

    return BeamConfig(beam_width=a.beam_width, alpha=a.alpha, beta=a.beta, beam_prune_logp=a.beam_prune_logp,
                      token_min_logp=a.token_min_logp, prune_history=a.prune_history,
                      hotwords=a.hotwords or [], hotword_weight=a.hotword_weight)


def cmd_decode(a: argparse.Namespace) -> None:
    from .decode import decode_set

    if a.method == "greedy" and (a.lm or a.tune):
        raise ValueError("--lm and --tune need --method beam")
    beam = {}
    if a.method == "beam":
        beam = dict(method="beam", lm=a.lm, beam=_beam_config(a), tune_weights=a.tune,
                    alpha_grid=a.alpha_grid, beta_grid=a.beta_grid, num_workers=a.workers)
    report = decode_set(a.model, a.data, a.out, device=a.device, batch_seconds=a.batch_seconds, plots=a.plots,
                        **beam)
    print(report.summary())


def cmd_lm(a: argparse.Namespace) -> None:
    from .lm import LMConfig, import_arpa, train_lm

    if bool(a.text) == bool(a.arpa):
        raise ValueError("give either --text (files to train on) or --arpa (an existing ARPA LM)")
    if a.arpa:
        files = import_arpa(a.arpa, a.out, a.binary_type)
    else:
        cfg = LMConfig(order=a.order, prune=a.prune or [], discount_fallback=a.discount_fallback,
                       memory=a.memory, binary_type=a.binary_type)
        files = train_lm(a.text, a.out, cfg)
    print(f"{files.model}: KenLM binary ({files.arpa}, words in {files.unigrams})")


def cmd_score(a: argparse.Namespace) -> None:
    from .metrics import score_files

    print(score_files(a.ref, a.hyp, a.out).summary())


def cmd_transcribe(a: argparse.Namespace) -> None:
    from .transcribe import Transcriber

    asr = Transcriber(a.model, a.device)
    if a.lm is None and a.format == "text":
        for f in a.files:
            text = asr(f)
            print(f"{f}\t{text}" if len(a.files) > 1 else text)
        return
    from .decode import BeamSearch, frame_seconds
    from .words import format_transcripts, transcribe_words

    search = None
    if a.lm is not None:
        search = BeamSearch(asr.tokenizer, a.lm, _beam_config(a), frame_seconds(asr.model, asr.features),
                            num_workers=a.workers or os.cpu_count() or 1)
    try:
        hyps = transcribe_words(asr, a.files, search)
    finally:
        if search is not None:
            search.close()
    sys.stdout.write(format_transcripts(a.files, hyps, a.format))


def cmd_classify(a: argparse.Namespace) -> None:
    from .classify import Classifier

    clf = Classifier(a.model, a.head, a.device)
    for f, top in zip(a.files, clf(list(a.files), top_k=a.top_k)):
        for rank, (name, p) in enumerate(top, 1):
            print(f"{f}\t{rank}\t{name}\t{p:.4f}" if len(a.files) > 1 else f"{rank}\t{name}\t{p:.4f}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .classify import evaluate_set, summary

    print(summary(evaluate_set(a.model, a.data, a.out, a.head, a.device, a.batch_seconds)))


def cmd_labels(a: argparse.Namespace) -> None:
    from .data.labels import label_manifests

    classes = label_manifests(a.manifest, a.head, a.from_field, a.labels_file)
    print(f"{a.head}: {len(classes)} classes" + (f" -> {a.labels_file}" if a.labels_file else ""))


def cmd_fsdd(a: argparse.Namespace) -> None:
    from .data import fsdd

    if a.action == "prepare":
        print(json.dumps(fsdd.prepare_fsdd(a.src, a.out, a.test_speakers.split(","), a.dev_takes, a.trim_db)))
    else:
        n = fsdd.synth_digits(a.out, a.voices, a.seed, a.jobs, a.trim_db)
        print(f"{a.out}/manifest.jsonl: {n} clips ({a.voices} voices x 10 words)")


def cmd_combine(a: argparse.Namespace) -> None:
    from .data.combine import combine_shards

    index = combine_shards(a.shards, a.out)
    print(f"{a.out}/index.json: {index['count']} utterances in {len(index['shards'])} shards of {len(a.shards)} sets")


def cmd_speechcommands(a: argparse.Namespace) -> None:
    from .data import speechcommands as sc

    if a.action == "download":
        test_url = sc.TEST_URL if a.test_url is None else a.test_url or None
        dirs = sc.download_speechcommands(a.out, a.url or sc.TRAIN_URL, test_url)
        print(json.dumps({k: str(v) for k, v in dirs.items()}))
    else:
        print(json.dumps(sc.prepare_speechcommands(a.src, a.out, a.classes, a.test_src, a.dev_percent,
                                                   a.test_percent)))


def cmd_esc50(a: argparse.Namespace) -> None:
    from .data import esc50

    if a.action == "download":
        print(esc50.download_esc50(a.out, a.url or esc50.URL))
    elif a.action == "prepare":
        print(json.dumps(esc50.prepare_esc50(a.src, a.out)))
    else:
        print("\n".join(str(d) for d in esc50.make_cv_splits(a.data)))


def _yes_no(v: str) -> bool:
    if v.lower() in ("true", "yes", "1"):
        return True
    if v.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {v!r}")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _beam_options(s: argparse.ArgumentParser) -> None:
    """Beam search + LM options shared by decode and transcribe."""
    from .decode import BeamConfig

    d = BeamConfig()
    s.add_argument("--lm", default=None, help="KenLM model (.bin/.arpa, or a directory with one) for beam search")
    s.add_argument("--alpha", type=float, default=None, help="LM weight (default: tuned value beside the LM, else 0.5)")
    s.add_argument("--beta", type=float, default=None, help="word bonus (default: tuned value, else 1.5)")
    s.add_argument("--beam-width", type=int, default=d.beam_width)
    s.add_argument("--beam-prune-logp", type=float, default=d.beam_prune_logp)
    s.add_argument("--token-min-logp", type=float, default=d.token_min_logp)
    s.add_argument("--prune-history", action="store_true", help="merge beams with equal LM context (faster)")
    s.add_argument("--hotwords", nargs="+", default=None, help="words to favour (may be outside the LM)")
    s.add_argument("--hotword-weight", type=float, default=d.hotword_weight)
    s.add_argument("--workers", type=int, default=None, help="beam search processes (default: all cores)")


def build_parser() -> argparse.ArgumentParser:
    from .data.synth import TRANSCRIPTS
    from .decode import ALPHA_GRID, BETA_GRID

    p = argparse.ArgumentParser(prog="astctc", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="synthesise the mini recipe's English corpus with espeak-ng")
    s.add_argument("--out", required=True)
    s.add_argument("--num-train", type=int, default=2000)
    s.add_argument("--num-dev", type=int, default=100)
    s.add_argument("--num-test", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--jobs", type=int, default=None)
    s.add_argument("--transcript", choices=TRANSCRIPTS, default="words",
                   help="row text: the sentence, or its IPA as the row's voice says it")
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("download", help="download and unpack a corpus (librispeech, fleurs)")
    corpora = s.add_subparsers(dest="corpus", required=True)
    c = corpora.add_parser("librispeech", help="OpenSLR 12 subsets and OpenSLR 11 LM files")
    c.add_argument("--out", required=True, help="directory for archives, LibriSpeech/ and lm/")
    c.add_argument("--subsets", nargs="+", required=True, help="e.g. train-clean-100 dev-clean test-clean")
    c.add_argument("--lm-files", nargs="*", default=[], help="OpenSLR 11 files, e.g. 4-gram.arpa.gz")
    c.add_argument("--mirror", default="https://www.openslr.org/resources/12",
                   help="base URL or directory holding the <subset>.tar.gz files")
    c.add_argument("--lm-mirror", default="https://www.openslr.org/resources/11",
                   help="base URL or directory holding the LM files")
    c.add_argument("--checksums", default=None, help="md5sum-format file overriding the published md5 sums")
    c.add_argument("--keep-archives", type=_yes_no, default=True, help="keep .tar.gz after unpacking (true|false)")
    c.add_argument("--workers", type=int, default=4, help="parallel downloads (each host gets at most 3)")
    c = corpora.add_parser("fleurs", help="google/fleurs audio archives and TSVs from the Hugging Face hub")
    c.add_argument("--out", required=True, help="directory; files land in data/<lang>/ as in the hub repo")
    c.add_argument("--lang", nargs="+", required=True, help="FLEURS language code(s), e.g. en_us fr_fr")
    c.add_argument("--splits", nargs="+", default=["train", "dev", "test"], choices=["train", "dev", "test"])
    c.add_argument("--mirror", default=None,
                   help="base URL or directory with the hub repo's layout (data/<lang>/...) instead of the hub")
    c.add_argument("--hf-endpoint", default=None, help="Hugging Face hub endpoint (default: HF_ENDPOINT or the hub)")
    c.add_argument("--revision", default="main", help="dataset repo revision (branch, tag or commit)")
    c.add_argument("--keep-archives", type=_yes_no, default=True, help="keep .tar.gz after unpacking (true|false)")
    s.set_defaults(fn=cmd_download)

    s = sub.add_parser("prepare", help="manifests from a corpus in its upstream layout (librispeech, fleurs)")
    corpora = s.add_subparsers(dest="corpus", required=True)
    c = corpora.add_parser("librispeech", help="<spk>/<chapter>/*.flac + *.trans.txt -> manifest")
    c.add_argument("--root", required=True, help="directory holding LibriSpeech/<subset> (or <subset>)")
    c.add_argument("--subsets", nargs="+", required=True, help="subsets merged into one manifest")
    c.add_argument("--out", required=True, help="manifest.jsonl to write")
    c = corpora.add_parser("fleurs", help="data/<lang>/<split>.tsv + audio -> manifest")
    c.add_argument("--root", required=True, help="the download directory (holding data/<lang>/)")
    c.add_argument("--lang", nargs="+", required=True, help="one or more (one multilingual manifest)")
    c.add_argument("--split", required=True, choices=["train", "dev", "test"])
    c.add_argument("--out", required=True, help="manifest.jsonl to write")
    s.set_defaults(fn=cmd_prepare)

    s = sub.add_parser("manifest", help="validate a manifest (audio readable, text present)")
    s.add_argument("--in", dest="inp", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--allow-empty-text", action="store_true", help="keep rows without transcript")
    s.set_defaults(fn=cmd_manifest)

    s = sub.add_parser("shards", help="manifest.jsonl -> webdataset tar shards + index.json")
    s.add_argument("--manifest", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--max-shard-mb", type=float, default=256.0)
    s.add_argument("--max-shard-count", type=int, default=None)
    s.set_defaults(fn=cmd_shards)

    s = sub.add_parser("tokenizer", help="train a character or SentencePiece tokenizer")
    s.add_argument("--manifest", required=True, nargs="+")
    s.add_argument("--out", required=True, help="directory for chars.txt / tokenizer.model")
    s.add_argument("--type", choices=["char", "unigram", "bpe"], default="char")
    s.add_argument("--vocab-size", type=int, default=256)
    s.set_defaults(fn=cmd_tokenizer)

    s = sub.add_parser("train", help="train a model from a YAML config")
    s.add_argument("--config", default=None, help="YAML config (defaults otherwise)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("init-check", help="show what `train` would load, adapt and leave new from init:")
    s.add_argument("--init", default=None, help="hf://<repo id> or a directory (default: init: of the config)")
    s.add_argument("--config", default=None, help="training YAML config (defaults otherwise)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    s.set_defaults(fn=cmd_init_check)

    s = sub.add_parser("average", help="average the last N checkpoints into a model directory")
    s.add_argument("--exp", required=True)
    s.add_argument("--last", type=int, default=5)
    s.add_argument("--out", default=None)
    s.set_defaults(fn=cmd_average)

    s = sub.add_parser("decode", help="decode a shard set and score it")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True, help="shard directory")
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-seconds", type=float, default=200.0)
    s.add_argument("--plots", type=int, default=2, help="spectrogram+posterior plots to draw")
    s.add_argument("--method", choices=["greedy", "beam"], default="greedy")
    _beam_options(s)
    s.add_argument("--tune", action="store_true",
                   help="grid-search --alpha-grid x --beta-grid on this set and record the best pair beside the LM")
    s.add_argument("--alpha-grid", type=_floats, default=ALPHA_GRID, metavar="A,B,...")
    s.add_argument("--beta-grid", type=_floats, default=BETA_GRID, metavar="A,B,...")
    s.set_defaults(fn=cmd_decode)

    s = sub.add_parser("lm", help="train a KenLM n-gram on text/manifests, or import an ARPA file")
    s.add_argument("--text", nargs="+", help="text files (one sentence a line) or JSONL manifests")
    s.add_argument("--arpa", help="an existing ARPA LM (.arpa or .arpa.gz), lower-cased on import")
    s.add_argument("--out", default="data/lm", help="directory for {N}gram.arpa, .bin, .unigrams.txt")
    s.add_argument("--order", type=int, default=4)
    s.add_argument("--prune", type=int, nargs="+", metavar="N",
                   help="lmplz count thresholds per order, e.g. 0 0 1 drops singleton 3-grams and up")
    s.add_argument("--discount-fallback", action="store_true",
                   help="lmplz --discount_fallback, for tiny or artificial corpora")
    s.add_argument("--memory", default="10%", help="lmplz sorting memory (-S), e.g. 10%% or 2G")
    s.add_argument("--binary-type", choices=["probing", "trie"], default="probing")
    s.set_defaults(fn=cmd_lm)

    s = sub.add_parser("score", help="WER/CER of hypotheses against references")
    s.add_argument("--ref", required=True, help="trn, Kaldi text or manifest.jsonl")
    s.add_argument("--hyp", required=True)
    s.add_argument("--out", default=None)
    s.set_defaults(fn=cmd_score)

    s = sub.add_parser("transcribe", help="print the transcript of audio files")
    s.add_argument("files", nargs="+")
    s.add_argument("--model", required=True)
    s.add_argument("--device", default="auto")
    s.add_argument("--format", choices=["text", "json", "srt"], default="text",
                   help="json and srt carry word start/end times")
    _beam_options(s)
    s.set_defaults(fn=cmd_transcribe)

    s = sub.add_parser("classify", help="print the top classes of audio files (a classification head)")
    s.add_argument("files", nargs="+")
    s.add_argument("--model", required=True)
    s.add_argument("--head", default=None, help="classifier head (needed when the model has several)")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--device", default="auto")
    s.set_defaults(fn=cmd_classify)

    s = sub.add_parser("evaluate", help="accuracy, macro-F1, confusion matrix / mAP of classifier heads")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True, help="shard directory")
    s.add_argument("--out", required=True)
    s.add_argument("--head", default=None, help="one head (default: all)")
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-seconds", type=float, default=200.0)
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("labels", help="labels of a classifier head in manifests, and its class list")
    s.add_argument("--manifest", required=True, nargs="+", help="manifests, rewritten in place")
    s.add_argument("--head", required=True)
    s.add_argument("--from-field", default=None, help="copy this row field into labels[head] (e.g. language)")
    s.add_argument("--labels-file", default=None, help="write the head's sorted class names here")
    s.set_defaults(fn=cmd_labels)

    s = sub.add_parser("fsdd", help="Free Spoken Digit Dataset: prepare joint digit/CTC manifests")
    fs = s.add_subparsers(dest="action", required=True)
    t = fs.add_parser("prepare", help="recordings -> {train,dev,test}/manifest.jsonl + labels/digit.txt")
    t.add_argument("--src", required=True, help="the recordings/ directory")
    t.add_argument("--out", required=True)
    t.add_argument("--test-speakers", default="theo", help="comma-separated, held out for test")
    t.add_argument("--dev-takes", type=int, default=3, help="takes 0..N-1 of training speakers -> dev")
    t.add_argument("--trim-db", type=float, default=30.0, help="trim silence below peak - N dB (0: keep clips)")
    t = fs.add_parser("synth", help="the ten words in espeak-ng voices, band-limited like FSDD")
    t.add_argument("--out", required=True)
    t.add_argument("--voices", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--jobs", type=int, default=None)
    t.add_argument("--trim-db", type=float, default=30.0)
    s.set_defaults(fn=cmd_fsdd)

    s = sub.add_parser("combine", help="one shard set over several (an index.json, no copies)")
    s.add_argument("shards", nargs="+", help="shard directories (with index.json)")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_combine)

    s = sub.add_parser("speechcommands", help="Speech Commands v0.02: download, prepare 12/35 classes")
    ss = s.add_subparsers(dest="action", required=True)
    t = ss.add_parser("download", help="fetch and unpack the training and test archives")
    t.add_argument("--out", required=True)
    t.add_argument("--url", default=None, help="training archive (default: the public one)")
    t.add_argument("--test-url", default=None, help="12-class test archive (default: the public one; '' skips)")
    t = ss.add_parser("prepare", help="folder-per-class tree -> {train,dev,test}/manifest.jsonl")
    t.add_argument("--src", required=True, help="unpacked training archive, or any folder-per-class tree")
    t.add_argument("--test-src", default=None, help="unpacked 12-class test archive (replaces test)")
    t.add_argument("--out", required=True)
    t.add_argument("--classes", type=int, choices=[12, 35], default=12)
    t.add_argument("--dev-percent", type=float, default=10.0, help="speaker-hash split (no lists)")
    t.add_argument("--test-percent", type=float, default=10.0)
    s.set_defaults(fn=cmd_speechcommands)

    s = sub.add_parser("esc50", help="ESC-50: download, prepare the five folds, cross-validation splits")
    es = s.add_subparsers(dest="action", required=True)
    t = es.add_parser("download", help="fetch and unpack the archive")
    t.add_argument("--out", required=True)
    t.add_argument("--url", default=None, help="archive (default: the public master.zip)")
    t = es.add_parser("prepare", help="meta/esc50.csv -> fold{1..5}/manifest.jsonl + labels/category.txt")
    t.add_argument("--src", required=True, help="the unpacked archive (ESC-50-master/ or its parent)")
    t.add_argument("--out", required=True)
    t = es.add_parser("cv", help="cv{k}/train/index.json over the other folds' shards")
    t.add_argument("--data", required=True, help="directory holding fold{1..5}/shards")
    s.set_defaults(fn=cmd_esc50)
    return p


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting turn any competition for the cores (a DataLoader
    # worker, another job) into 10-200x slower steps on CPU; sleeping waits cost ~nothing.
    # Must be set before torch loads; an explicit value in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    from .train import setup_logging

    setup_logging()
    try:
        args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, OSError, KeyError) as e:
        if args.debug or os.environ.get("ASTCTC_DEBUG"):
            raise
        print(f"astctc {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
