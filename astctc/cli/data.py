"""Data commands: synth, download, prepare, manifest, shards, combine, tokenizer, labels."""

from __future__ import annotations

import argparse
import json
import logging

from .common import TRANSCRIPTS, add_parser, yes_no

log = logging.getLogger("astctc")

SPLITS = ["train", "dev", "test"]


def cmd_synth(a: argparse.Namespace) -> None:
    from ..data.synth import synthesize_corpus

    info = synthesize_corpus(
        a.out, a.num_train, a.num_dev, a.num_test, seed=a.seed, jobs=a.jobs, transcript=a.transcript
    )
    print(json.dumps(info, indent=2, default=str))


def cmd_download(a: argparse.Namespace) -> None:
    """Fetch a corpus (resumable, checksum-verified) and unpack it under --out."""
    if a.corpus == "librispeech":
        from ..corpora import librispeech as ls

        subsets = list(dict.fromkeys(a.subsets))
        info = ls.download(subsets, a.out, a.mirror, a.lm_files, a.lm_mirror, a.checksums, a.keep_archives, a.workers)
        print(json.dumps(info, indent=1))
    elif a.corpus == "fleurs":
        from ..corpora import fleurs

        info = fleurs.download(
            a.lang,
            a.out,
            a.splits,
            mirror=a.mirror,
            endpoint=a.hf_endpoint,
            revision=a.revision,
            keep_archives=a.keep_archives,
            checksums=a.checksums,
        )
        print(json.dumps(info, indent=1))
    elif a.corpus == "speechcommands":
        from ..corpora import speechcommands as sc

        test_url = sc.TEST_URL if a.test_url is None else a.test_url or None
        dirs = sc.download_speechcommands(a.out, a.url or sc.TRAIN_URL, test_url, a.checksums)
        print(json.dumps({k: str(v) for k, v in dirs.items()}))
    elif a.corpus == "mini_librispeech":
        from ..corpora import librispeech as ls

        subsets = list(dict.fromkeys(a.subsets + a.test_subsets))
        info = ls.download(
            subsets,
            a.out,
            a.ls_mirror,
            a.lm_files,
            a.lm_mirror,
            a.checksums,
            a.keep_archives,
            a.workers,
            mini_mirror=a.mirror,
        )
        print(json.dumps(info, indent=1))
    elif a.corpus == "ljspeech":
        from ..corpora import ljspeech
        from ..corpora.download import digest_kw, read_checksums

        sums = read_checksums(a.checksums) if a.checksums else {}
        print(ljspeech.download(a.out, a.url or ljspeech.URL, **digest_kw(sums.get("LJSpeech-1.1.tar.bz2"))))
    elif a.corpus == "an4":
        from ..corpora import an4
        from ..corpora.download import digest_kw, read_checksums

        sums = read_checksums(a.checksums) if a.checksums else {}
        print(an4.download(a.out, a.url or an4.URL, **digest_kw(sums.get(an4.ARCHIVE))))
    else:
        from ..corpora import esc50
        from ..corpora.download import digest_kw, read_checksums

        sums = read_checksums(a.checksums) if a.checksums else {}
        print(esc50.download_esc50(a.out, a.url or esc50.URL, **digest_kw(sums.get("ESC-50-master.zip"))))


def cmd_prepare(a: argparse.Namespace) -> None:
    """Upstream layout -> manifest(s) (transcripts/labels as published, durations from the headers)."""
    if a.corpus == "librispeech":
        from ..corpora.librispeech import prepare

        info = prepare(a.root, a.subsets, a.out)
    elif a.corpus == "fleurs":
        from ..corpora.fleurs import prepare

        info = prepare(a.root, a.lang, a.split, a.out)
    elif a.corpus == "speechcommands":
        from ..corpora.speechcommands import prepare_speechcommands

        info = prepare_speechcommands(a.src, a.out, a.classes, a.test_src, a.dev_percent, a.test_percent)
    elif a.corpus == "mini_librispeech":
        from ..corpora.librispeech import MINI_DEV_SPEAKERS, prepare_mini

        dev_speakers = MINI_DEV_SPEAKERS if a.dev_speakers is None else a.dev_speakers
        info = prepare_mini(a.root, a.out, a.test_src, dev_speakers, a.lm_text)
    elif a.corpus == "ljspeech":
        from ..corpora.ljspeech import DEV, TEST, prepare

        info = prepare(a.root, a.out, a.dev or DEV, a.test or TEST)
    elif a.corpus == "an4":
        from ..corpora.an4 import prepare

        info = prepare(a.root, a.out, a.num_dev)
    elif a.corpus == "esc50":
        from ..corpora.esc50 import prepare_esc50

        info = prepare_esc50(a.src, a.out)
    else:
        from ..corpora import fsdd

        if a.synth is not None:
            n = fsdd.synth_digits(a.out, a.synth, a.seed, a.jobs, a.trim_db)
            print(f"{a.out}/manifest.jsonl: {n} clips ({a.synth} voices x 10 words)")
            return
        if not a.test_speakers:
            raise ValueError("--src needs --test-speakers (comma-separated speakers held out for test)")
        info = fsdd.prepare_fsdd(a.src, a.out, a.test_speakers.split(","), a.dev_takes, a.trim_db)
    print(json.dumps(info))


def cmd_manifest(a: argparse.Namespace) -> None:
    """Validate a manifest: audio readable (duration from its header), transcript not empty."""
    from ..audio import AudioError, audio_duration
    from ..data.manifest import read_manifest, write_manifest
    from ..text import normalize

    good, bad, first = [], 0, ""
    for r in read_manifest(a.inp):
        try:
            r["duration"] = round(audio_duration(r["audio"]), 4)
            if r["duration"] <= 0:
                raise AudioError(f"{r['audio']}: audio has zero samples")
            why = "empty transcript" if not a.allow_empty_text and not normalize(r["text"]) else None
        except AudioError as e:
            why = str(e)
        if why is not None:
            log.warning("%s: utterance %s skipped: %s", a.inp, r["id"], why)
            bad += 1
            first = first or f"{r['id']}: {why}"
            continue
        good.append(r)
    if not good:
        detail = f"{bad} rejected, the first {first}" if bad else "it has no rows"
        raise ValueError(f"{a.inp}: no usable utterances ({detail}); nothing written")
    write_manifest(good, a.out)
    hours = sum(r["duration"] for r in good) / 3600
    print(f"{a.out}: {len(good)} utterances, {hours:.2f} h, {bad} rejected")


def cmd_shards(a: argparse.Namespace) -> None:
    from ..data.shards import write_shards

    info = write_shards(a.manifest, a.out, max_shard_mb=a.max_shard_mb, max_shard_count=a.max_shard_count)
    print(
        f"{a.out}: {info['count']} utterances, {info['seconds'] / 3600:.2f} h, "
        f"{len(info['shards'])} shards, {info['skipped']} skipped"
    )


def cmd_combine(a: argparse.Namespace) -> None:
    from ..data.combine import combine_shards

    index = combine_shards(a.shards, a.out)
    print(f"{a.out}/index.json: {index['count']} utterances in {len(index['shards'])} shards of {len(a.shards)} sets")


def cmd_tokenizer(a: argparse.Namespace) -> None:
    from ..data.manifest import read_manifest
    from ..text import normalize
    from ..tokenizer import CharTokenizer, SentencePieceTokenizer

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


def cmd_labels(a: argparse.Namespace) -> None:
    from ..data.labels import label_manifests

    classes = label_manifests(a.manifest, a.head, a.from_field, a.labels_file)
    print(f"{a.head}: {len(classes)} classes" + (f" -> {a.labels_file}" if a.labels_file else ""))


def _corpus_verb(sub, verb: str, help: str, handler):
    """`astctc <verb> <corpus>`: the verb's parser, whose subparsers are the corpora."""
    return add_parser(sub, verb, help, handler).add_subparsers(dest="corpus", required=True, metavar="<corpus>")


def _download(sub) -> None:
    corpora = _corpus_verb(sub, "download", "download and unpack a corpus (resumable, checksum-verified)", cmd_download)
    c = add_parser(corpora, "librispeech", "OpenSLR 12 subsets and OpenSLR 11 LM files", cmd_download)
    c.add_argument("--out", required=True, help="directory for archives, LibriSpeech/ and lm/")
    c.add_argument("--subsets", nargs="+", required=True, help="e.g. train-clean-100 dev-clean test-clean")
    c.add_argument("--lm-files", nargs="*", default=[], help="OpenSLR 11 files, e.g. 4-gram.arpa.gz")
    c.add_argument(
        "--mirror",
        default="https://www.openslr.org/resources/12",
        help="base URL or directory holding the <subset>.tar.gz files",
    )
    c.add_argument(
        "--lm-mirror", default="https://www.openslr.org/resources/11", help="base URL or directory holding the LM files"
    )
    c.add_argument("--checksums", default=None, help="md5sum/sha256sum-format file overriding the published md5 sums")
    c.add_argument("--keep-archives", type=yes_no, default=True, help="keep .tar.gz after unpacking (true|false)")
    c.add_argument("--workers", type=int, default=4, help="parallel downloads (each host gets at most 3)")
    c = add_parser(corpora, "fleurs", "google/fleurs audio archives and TSVs from the Hugging Face hub", cmd_download)
    c.add_argument("--out", required=True, help="directory; files land in data/<lang>/ as in the hub repo")
    c.add_argument("--lang", nargs="+", required=True, help="FLEURS language code(s), e.g. en_us fr_fr")
    c.add_argument("--splits", nargs="+", default=SPLITS, choices=SPLITS, help="splits to fetch")
    c.add_argument(
        "--mirror",
        default=None,
        help="base URL or directory with the hub repo's layout (data/<lang>/...) instead of the hub",
    )
    c.add_argument("--hf-endpoint", default=None, help="Hugging Face hub endpoint (default: HF_ENDPOINT or the hub)")
    c.add_argument("--revision", default="main", help="dataset repo revision (branch, tag or commit)")
    c.add_argument("--keep-archives", type=yes_no, default=True, help="keep .tar.gz after unpacking (true|false)")
    c.add_argument(
        "--checksums",
        default=None,
        help="md5sum/sha256sum-format file of repo paths (data/<lang>/audio/train.tar.gz) for --mirror files",
    )
    c = add_parser(
        corpora, "speechcommands", "Speech Commands v0.02: the training and 12-class test archives", cmd_download
    )
    c.add_argument("--out", required=True, help="directory for the archives and their unpacked trees")
    c.add_argument("--url", default=None, help="training archive (default: the public one)")
    c.add_argument("--test-url", default=None, help="12-class test archive (default: the public one; '' skips)")
    c.add_argument("--checksums", default=None, help="md5sum/sha256sum-format file for archives from other URLs")
    c = add_parser(corpora, "esc50", "ESC-50: the archive (master.zip), unpacked", cmd_download)
    c.add_argument("--out", required=True, help="directory for the archive and ESC-50-master/")
    c.add_argument("--url", default=None, help="archive (default: the public master.zip)")
    c.add_argument(
        "--checksums", default=None, help="md5sum/sha256sum-format file with ESC-50-master.zip for another --url"
    )

    c = add_parser(corpora, "ljspeech", "LJSpeech 1.1: the archive (LJSpeech-1.1.tar.bz2), unpacked", cmd_download)
    c.add_argument("--out", required=True, help="directory for the archive and LJSpeech-1.1/")
    c.add_argument("--url", default=None, help="archive (default: the published one)")
    c.add_argument(
        "--checksums", default=None, help="md5sum/sha256sum-format file with LJSpeech-1.1.tar.bz2 for another --url"
    )
    c = add_parser(
        corpora,
        "mini_librispeech",
        "Mini LibriSpeech (OpenSLR 31: train-clean-5, dev-clean-2), OpenSLR 12 subsets to test on "
        "and OpenSLR 11 LM files, md5-checked",
        cmd_download,
    )
    c.add_argument("--out", required=True, help="directory for archives, LibriSpeech/ and lm/")
    c.add_argument("--subsets", nargs="*", default=["train-clean-5", "dev-clean-2"], help="OpenSLR 31 subsets")
    c.add_argument("--test-subsets", nargs="*", default=[], help="OpenSLR 12 subsets too, e.g. test-clean")
    c.add_argument("--lm-files", nargs="*", default=[], help="OpenSLR 11 files, e.g. 4-gram.arpa.gz")
    c.add_argument(
        "--mirror", default="https://www.openslr.org/resources/31", help="base URL or directory of OpenSLR 31"
    )
    c.add_argument(
        "--ls-mirror", default="https://www.openslr.org/resources/12", help="base URL or directory of OpenSLR 12"
    )
    c.add_argument(
        "--lm-mirror", default="https://www.openslr.org/resources/11", help="base URL or directory of OpenSLR 11"
    )
    c.add_argument("--checksums", default=None, help="md5sum/sha256sum-format file overriding the published md5 sums")
    c.add_argument("--keep-archives", type=yes_no, default=True, help="keep .tar.gz after unpacking (true|false)")
    c.add_argument("--workers", type=int, default=4, help="parallel downloads (each host gets at most 3)")
    c = add_parser(corpora, "an4", "CMU AN4: the archive (an4_sphere.tar.gz), unpacked", cmd_download)
    c.add_argument("--out", required=True, help="directory for the archive and an4/")
    c.add_argument("--url", default=None, help="archive (default: CMU's, which has no published checksum)")
    c.add_argument(
        "--checksums", default=None, help="md5sum/sha256sum-format file with an4_sphere.tar.gz, to verify it"
    )


def _prepare(sub) -> None:
    corpora = _corpus_verb(sub, "prepare", "manifests from a corpus in its upstream layout", cmd_prepare)
    c = add_parser(corpora, "librispeech", "<spk>/<chapter>/*.flac + *.trans.txt -> manifest", cmd_prepare)
    c.add_argument("--root", required=True, help="directory holding LibriSpeech/<subset> (or <subset>)")
    c.add_argument("--subsets", nargs="+", required=True, help="subsets merged into one manifest")
    c.add_argument("--out", required=True, help="manifest.jsonl to write")
    c = add_parser(corpora, "fleurs", "data/<lang>/<split>.tsv + audio -> manifest", cmd_prepare)
    c.add_argument("--root", required=True, help="the download directory (holding data/<lang>/)")
    c.add_argument("--lang", nargs="+", required=True, help="one or more (one multilingual manifest)")
    c.add_argument("--split", required=True, choices=SPLITS, help="the split to prepare")
    c.add_argument("--out", required=True, help="manifest.jsonl to write")
    c = add_parser(
        corpora,
        "speechcommands",
        "folder-per-class tree -> {train,dev,test}/manifest.jsonl + labels/command.txt (12 or 35 classes)",
        cmd_prepare,
    )
    c.add_argument("--src", required=True, help="unpacked training archive, or any folder-per-class tree")
    c.add_argument("--test-src", default=None, help="unpacked 12-class test archive (replaces test)")
    c.add_argument("--out", required=True, help="directory for {train,dev,test}/ and labels/")
    c.add_argument("--classes", type=int, choices=[12, 35], default=12, help="the 12-class task or all 35 words")
    c.add_argument("--dev-percent", type=float, default=10.0, help="speaker-hash split (no lists)")
    c.add_argument("--test-percent", type=float, default=10.0, help="speaker-hash split (no lists)")
    c = add_parser(
        corpora,
        "ljspeech",
        "metadata.csv + wavs/ -> {train,dev,test}/manifest.jsonl (held out by chapter or clip range)",
        cmd_prepare,
    )
    c.add_argument("--root", required=True, help="LJSpeech-1.1/ (or its parent): metadata.csv and wavs/")
    c.add_argument("--out", required=True, help="directory for {train,dev,test}/")
    c.add_argument("--dev", nargs="+", default=None, help="chapters or id ranges A..B held out (default: LJ049)")
    c.add_argument("--test", nargs="+", default=None, help="chapters or id ranges A..B held out (default: LJ050)")
    c = add_parser(
        corpora,
        "mini_librispeech",
        "train-clean-5 (+ dev-clean-2) -> {train,dev,test}/manifest.jsonl; dev: dev-clean-2, or "
        "speakers of train-clean-5 held out whole where it is missing; test: --test-src",
        cmd_prepare,
    )
    c.add_argument("--root", required=True, help="directory holding LibriSpeech/train-clean-5 (or train-clean-5)")
    c.add_argument("--out", required=True, help="directory for {train,dev,test}/ (and lm_text.txt)")
    c.add_argument(
        "--test-src",
        nargs="+",
        required=True,
        help="directories whose <spk>/<chapter>/ trees are the test set (e.g. LibriSpeech/test-clean)",
    )
    c.add_argument(
        "--dev-speakers",
        nargs="+",
        default=None,
        help="without dev-clean-2: speakers of train-clean-5 held out for dev (default: 6272 (F) 3242 (M))",
    )
    c.add_argument(
        "--lm-text",
        nargs="*",
        default=[],
        help="LM text files (.gz too) -> OUT/lm_text.txt, less the dev and test transcripts",
    )
    c = add_parser(
        corpora,
        "an4",
        "etc/an4_{train,test}.transcription + wav/ -> {train,dev,test}/manifest.jsonl (ESPnet's split)",
        cmd_prepare,
    )
    c.add_argument("--root", required=True, help="an4/ (or its parent): etc/ and wav/")
    c.add_argument("--out", required=True, help="directory for {train,dev,test}/")
    c.add_argument("--num-dev", type=int, default=100, help="the first N sorted training utterances -> dev (ESPnet)")
    c = add_parser(
        corpora,
        "esc50",
        "meta/esc50.csv -> fold{1..5}/manifest.jsonl + labels/category.txt "
        "(cross-validation sets: `astctc combine` over the other folds' shards)",
        cmd_prepare,
    )
    c.add_argument("--src", required=True, help="the unpacked archive (ESC-50-master/ or its parent)")
    c.add_argument("--out", required=True, help="directory for fold{1..5}/ and labels/")
    c = add_parser(
        corpora,
        "fsdd",
        "Free Spoken Digit Dataset: recordings -> {train,dev,test}/manifest.jsonl "
        "+ labels/digit.txt (--src), or the ten words in espeak-ng voices (--synth)",
        cmd_prepare,
    )
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--src", help="the recordings/ directory ({digit}_{speaker}_{take}.wav)")
    what.add_argument(
        "--synth",
        type=int,
        metavar="VOICES",
        help="instead: the ten words in this many espeak-ng voices, band-limited like FSDD, -> OUT/manifest.jsonl",
    )
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--test-speakers", default=None, help="with --src: comma-separated speakers held out for test")
    c.add_argument("--dev-takes", type=int, default=3, help="takes 0..N-1 of training speakers -> dev")
    c.add_argument("--trim-db", type=float, default=30.0, help="trim silence below peak - N dB (0: keep clips)")
    c.add_argument("--seed", type=int, default=0, help="with --synth: voice, rate and pitch draws")
    c.add_argument("--jobs", type=int, default=None, help="with --synth: espeak-ng processes (default: all cores)")


def register(sub) -> None:
    s = add_parser(sub, "synth", "synthesise the mini recipe's English corpus with espeak-ng", cmd_synth)
    s.add_argument("--out", required=True, help="corpus directory ({train,dev,test}/manifest.jsonl + audio)")
    s.add_argument("--num-train", type=int, default=2000, help="training utterances")
    s.add_argument("--num-dev", type=int, default=100, help="dev utterances")
    s.add_argument("--num-test", type=int, default=200, help="test utterances (voices unseen in train/dev)")
    s.add_argument("--seed", type=int, default=0, help="sentence and voice draws")
    s.add_argument("--jobs", type=int, default=None, help="espeak-ng processes (default: all cores)")
    s.add_argument(
        "--transcript",
        choices=TRANSCRIPTS,
        default="words",
        help="row text: the sentence, or its IPA as the row's voice says it",
    )

    _download(sub)
    _prepare(sub)

    s = add_parser(sub, "manifest", "validate a manifest (audio readable, text present)", cmd_manifest)
    s.add_argument("--in", dest="inp", required=True, help="manifest.jsonl to check")
    s.add_argument("--out", required=True, help="manifest.jsonl of the usable rows (durations from the audio)")
    s.add_argument("--allow-empty-text", action="store_true", help="keep rows without transcript")

    s = add_parser(sub, "shards", "manifest.jsonl -> webdataset tar shards + index.json", cmd_shards)
    s.add_argument("--manifest", required=True, help="manifest.jsonl to pack")
    s.add_argument("--out", required=True, help="shard directory")
    s.add_argument("--max-shard-mb", type=float, default=256.0, help="start a new shard past this size")
    s.add_argument("--max-shard-count", type=int, default=None, help="start a new shard past this many utterances")

    s = add_parser(sub, "combine", "one shard set over several (an index.json, no copies)", cmd_combine)
    s.add_argument("shards", nargs="+", help="shard directories (with index.json)")
    s.add_argument("--out", required=True, help="directory for the combined index.json")

    s = add_parser(sub, "tokenizer", "train a character or SentencePiece tokenizer", cmd_tokenizer)
    s.add_argument("--manifest", required=True, nargs="+", help="manifests whose transcripts it learns from")
    s.add_argument("--out", required=True, help="directory for chars.txt / tokenizer.model")
    s.add_argument("--type", choices=["char", "unigram", "bpe"], default="char", help="tokenizer kind")
    s.add_argument("--vocab-size", type=int, default=256, help="SentencePiece vocabulary size")

    s = add_parser(sub, "labels", "labels of a classifier head in manifests, and its class list", cmd_labels)
    s.add_argument("--manifest", required=True, nargs="+", help="manifests, rewritten in place")
    s.add_argument("--head", required=True, help="classifier head name (the labels key)")
    s.add_argument("--from-field", default=None, help="copy this row field into labels[head] (e.g. language)")
    s.add_argument("--labels-file", default=None, help="write the head's sorted class names here")
