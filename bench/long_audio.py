"""Long files vs. the same utterances one by one: WER (greedy and beam) and word times.

    .venv/bin/python bench/long_audio.py                 # test sets, default context
    .venv/bin/python bench/long_audio.py --split dev --contexts 0.5 1 1.5 2   # choose the context

Builds long files by concatenating held-out utterances in order, with --gap seconds of faint
noise (seeded, 1e-4 rms: digital silence is not what a microphone records) between them, cut
into files of about --minutes each; writes them as float WAV (the same samples the one-by-one
decode sees) and transcribes each file whole through `WindowedModel.item_log_probs` (streamed
reading, overlapping windows, one stitched matrix, one decode). Sets:
  synthetic  recipes/mini: data/{dev,test}/manifest.jsonl, model exp/mini/model, LM data/lm/
             when stage 7 has built it (else beam search without an LM, said so)
  real       recipes/ljspeech exp/lj001/model and its tuned LM exp/lj001/lm/4gram.bin
             (alpha/beta from the recipe's dev tuning, 4gram.tuned.json); dev: LJ001-0151..0168;
             test: LJ001-0169..0186 and the 4 LibriSpeech test-clean clips of the shared data
WER is scored with astctc.metrics over each long file's concatenated reference, for the long
transcript and for the one-by-one hypotheses joined in order, so both are aligned alike. Word
times: every word the long and one-by-one transcripts agree on (difflib matching within each
utterance's span, runs of two or more) compares its long-file start with its one-by-one start plus the utterance's
offset. context=0 is the old behaviour (consecutive windows, no overlap).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from astctc.audio import load_audio
from astctc.decode import BeamSearch
from astctc.inference import WindowedModel
from astctc.metrics import score
from astctc.words import greedy_words

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASTCTC_SHARED_DATA", REPO.parent / "shared" / "data"))
NOISE = float(os.environ.get("LONG_AUDIO_NOISE", 1e-4))  # rms of the gaps
# window seconds chosen on the dev long files: both models' position tables cover 20.48 s, but
# the mini model was trained on clips of at most 5.6 s, the LJ001 one on clips of at most 10 s
DEV_WINDOW = {"synthetic": 4.0, "real": 10.0}
MINI, LJ = REPO / "recipes" / "mini", REPO / "recipes" / "ljspeech"


def utterances(name: str, split: str) -> list[tuple[str, Path, str]]:
    """(id, audio, reference) of a set's held-out utterances, in order."""
    if name == "synthetic":
        rows = [json.loads(line) for line in (MINI / "data" / split / "manifest.jsonl").open()]
        return [(r["id"], Path(r["audio"]), r["text"]) for r in rows]
    rows = [json.loads(line) for line in (LJ / "data" / "lj001" / split / "manifest.jsonl").open()]
    out = [(r["id"], Path(r["audio"]), r["text"]) for r in rows]
    if split == "test":
        for trans in sorted((SHARED / "librispeech_sample").rglob("*.trans.txt")):
            for line in trans.read_text().splitlines():
                uid, text = line.split(" ", 1)
                out.append((uid, trans.parent / f"{uid}.flac", text))
    return out


def setup(name: str) -> tuple[Path, Path | None]:
    if name == "synthetic":
        lm = MINI / "data" / "lm" / "4gram.bin"
        return MINI / "exp" / "mini" / "model", lm if lm.exists() else None
    return LJ / "exp" / "lj001" / "model", LJ / "exp" / "lj001" / "lm" / "4gram.bin"


def build_long(utts, wavs, minutes: float, gap: float, out_dir: Path):
    """Long files of about `minutes` each: [(path, [(utt index, offset seconds)], reference)]."""
    rng = np.random.default_rng(0)
    files, cur, parts, t = [], [], [], 0.0

    def flush():
        if parts:
            path = out_dir / f"long{len(files):02d}.wav"
            sf.write(str(path), torch.cat(parts).numpy(), 16000, subtype="FLOAT")
            files.append((path, list(cur), " ".join(utts[i][2] for i, _ in cur)))

    for i, w in enumerate(wavs):
        if t > 0 and t + w.numel() / 16000 > minutes * 60:
            flush()
            cur, parts, t = [], [], 0.0
        pad = torch.from_numpy(rng.normal(0, NOISE, int(gap * 16000)).astype(np.float32))
        parts += [pad, w]
        t += gap
        cur.append((i, t))
        t += w.numel() / 16000
    flush()
    return files


def decode(lp, model, search):
    return (
        search.decode_one(lp.numpy()) if search is not None else greedy_words(lp, model.tokenizer, model.frame_seconds)
    )


def word_time_errors(long_hyp, singles, spans) -> list[float]:
    """|long start - (one-by-one start + offset)| of the words both agree on."""
    errs = []
    for (off, dur), h in zip(spans, singles):
        lw = [w for w in long_hyp.words if off - 0.5 <= w.start < off + dur + 0.5]
        a, b = [w.word for w in h.words], [w.word for w in lw]
        for m in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
            if m.size < 2:  # a lone common word ("the") may be matched to another occurrence
                continue
            for k in range(m.size):
                errs.append(abs(lw[m.b + k].start - (h.words[m.a + k].start + off)))
    return errs


def run_set(
    name: str,
    split: str,
    contexts: list[float],
    windows: list[float],
    minutes: float,
    gap: float,
    beam: bool,
    work: Path,
):
    model_dir, lm = setup(name)
    utts = utterances(name, split)
    wavs = [load_audio(p) for _, p, _ in utts]
    files = build_long(utts, wavs, minutes, gap, work)
    refs = {f.stem: ref for f, _, ref in files}
    seconds = sum(w.numel() for w in wavs) / 16000
    print(
        f"\n== {name} {split}: {len(utts)} utterances, {seconds:.0f} s in {len(files)} files "
        f"({', '.join(f'{sf.info(str(f)).duration:.0f}' for f, _, _ in files)} s); model {model_dir.relative_to(REPO)}"
        f"; beam LM: {lm.relative_to(REPO) if lm else 'none (no LM built for this recipe)'}"
    )
    base = WindowedModel(model_dir, device="cpu")
    search = BeamSearch(base.tokenizer, lm, frame_seconds=base.frame_seconds) if beam else None
    if search is not None:
        print(f"   beam: width {search.cfg.beam_width}, alpha {search.alpha:g}, beta {search.beta:g}")
    searches = {"greedy": None} | ({"beam": search} if beam else {})
    # one by one
    t0 = time.time()
    lps = [lp for _, lp in base.item_log_probs(wavs)]
    single = {k: [decode(lp, base, s) for lp in lps] for k, s in searches.items()}
    rows = [("one by one", "-", single, None)]
    # diagnostic: each utterance alone again, with the long file's gaps before and after it
    rng = np.random.default_rng(1)
    pads = [torch.from_numpy(rng.normal(0, NOISE, int(gap * 16000)).astype(np.float32)) for _ in range(2)]
    padded = [lp for _, lp in base.item_log_probs([torch.cat([pads[0], w, pads[1]]) for w in wavs])]
    rows.append(
        ("one by one, with gaps", "-", {k: [decode(lp, base, s) for lp in padded] for k, s in searches.items()}, None)
    )
    print(f"   one by one: {time.time() - t0:.0f} s")
    for win, c in [(w, c) for w in windows for c in contexts]:
        t0 = time.time()
        m = WindowedModel(model_dir, device="cpu", context=c, window=win or None)
        long_lps = [lp for _, lp in m.item_log_probs([str(f) for f, _, _ in files])]
        hyps = {k: [decode(lp, m, s) for lp in long_lps] for k, s in searches.items()}
        label = f"{m.seconds(m.window):g} s window, context " + (
            f"{m.context * m.frame_seconds:g} s ({m.context} frames)" if c else "0 (old: no overlap)"
        )
        rows.append(("long file", label, hyps, m))
        print(f"   long, context {label}: {time.time() - t0:.0f} s")
    print(
        f"\n| {name} {split} | context | "
        + " | ".join(f"{k} WER" for k in searches)
        + " | "
        + " | ".join(f"{k} start diff mean/max (s, n)" for k in searches)
        + " |"
    )
    print("|---|---|" + "---|" * (2 * len(searches)))
    for what, label, hyps, m in rows:
        wers, times = [], []
        for k in searches:
            if m is None:  # the one-by-one hypotheses of each long file, joined in order
                h = {f.stem: " ".join(hyps[k][i].text for i, _ in members) for f, members, _ in files}
                wers.append(f"{score(refs, h).wer:.2f}")
                times.append("-")
                continue
            wers.append(f"{score(refs, {f.stem: x.text for (f, _, _), x in zip(files, hyps[k])}).wer:.2f}")
            errs = []
            for (f, members, _), lh in zip(files, hyps[k]):
                spans = [(off, wavs[i].numel() / 16000) for i, off in members]
                errs += word_time_errors(lh, [single[k][i] for i, _ in members], spans)
            times.append(f"{np.mean(errs):.3f} / {np.max(errs):.3f} ({len(errs)})" if errs else "-")
        print(f"| {what} | {label} | " + " | ".join(wers) + " | " + " | ".join(times) + " |")
    if search is not None:
        search.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", nargs="+", default=["synthetic", "real"], choices=["synthetic", "real"], help="which sets")
    p.add_argument("--split", default="test", choices=["dev", "test"], help="held-out split to build files from")
    p.add_argument("--contexts", type=float, nargs="+", default=[1.0, 0.0], help="context seconds per side (0: old)")
    p.add_argument(
        "--windows",
        type=float,
        nargs="+",
        default=None,
        help="window seconds (0: the position table's length); default: chosen on dev, synthetic 4, real 10",
    )
    p.add_argument("--minutes", type=float, default=3.0, help="about this many minutes per long file")
    p.add_argument("--gap", type=float, default=0.4, help="seconds of faint noise between utterances")
    p.add_argument("--no-beam", action="store_true", help="greedy only")
    a = p.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.sets:
            work = Path(tmp) / name
            work.mkdir()
            run_set(name, a.split, a.contexts, a.windows or [DEV_WINDOW[name]], a.minutes, a.gap, not a.no_beam, work)
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
