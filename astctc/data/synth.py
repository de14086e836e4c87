"""The mini recipe's corpus: English sentences from a small grammar, spoken by espeak-ng.

Why synthetic: the mini recipe must train on CPU in minutes and still be a real test of the
pipeline, so it needs speech that is cheap to make, needs no download, and is learnable by a
tiny model. Two properties keep the scores honest:

* **Unseen voices.** A voice is an espeak-ng accent plus a variant (`en-us+m3`). Variants
  (formant sets, pitch ranges, the Klatt synthesiser) play the role of speakers; four of them
  (m3, m4, f4, Belinda: two male, two female, plain formant/pitch changes) are held out and
  used, with every accent, only for dev and test. Train never hears them.
* **Structured text.** Sentences come from a small English grammar (agreement, tense, word
  classes in fixed slots), so an n-gram LM trained on the training text has something to
  learn; test and dev sentences never occur verbatim in train.

Phoneme transcripts (`transcript="phonemes"`): the text of each row is espeak-ng's IPA for the
sentence *as that row's voice says it* (its accent's vowels: `tuː` in en-us, `tʉː` in Scottish
English), stress marks dropped, words kept apart by spaces; the sentence itself is kept as
`words`. A model pretrained to hear phones needs no spelling: on the FSDD recipe's pretraining
(1,600 steps) the dev phone error rate reached 19% where the letter error rate of the same
model on the words reached 29%.

Variants left out entirely: whisper, croak and other breathy/noisy ones (whisperf, Alicia,
Annie), and the novelty voices, because they are too degraded to be fair test material and add
little as training data. Homophones (to/too/two, for/four, there/their, ...) are kept out of the
vocabulary because a character CTC model cannot tell them apart from the audio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPLITS = ("train", "dev", "test")
TRANSCRIPTS = ("words", "phonemes")
VERSION = 2  # bump when the grammar, voices or audio processing change: old corpora are redone

# --- the grammar ----------------------------------------------------------------------------

ADJECTIVES = """small big old young new red blue green yellow brown black white happy quiet
busy tired clever tall heavy bright dark warm cold gentle noisy friendly
empty""".split()

# animate nouns can be subjects; all nouns can be objects or places
ANIMATE = [
    ("dog", "dogs"),
    ("cat", "cats"),
    ("bird", "birds"),
    ("horse", "horses"),
    ("cow", "cows"),
    ("rabbit", "rabbits"),
    ("mouse", "mice"),
    ("fox", "foxes"),
    ("duck", "ducks"),
    ("frog", "frogs"),
    ("child", "children"),
    ("man", "men"),
    ("woman", "women"),
    ("farmer", "farmers"),
    ("teacher", "teachers"),
    ("doctor", "doctors"),
    ("baker", "bakers"),
    ("sailor", "sailors"),
    ("girl", "girls"),
    ("boy", "boys"),
    ("friend", "friends"),
]
THINGS = [
    ("box", "boxes"),
    ("ball", "balls"),
    ("book", "books"),
    ("chair", "chairs"),
    ("table", "tables"),
    ("window", "windows"),
    ("door", "doors"),
    ("cup", "cups"),
    ("apple", "apples"),
    ("letter", "letters"),
    ("basket", "baskets"),
    ("lamp", "lamps"),
    ("egg", "eggs"),
    ("picture", "pictures"),
    ("shoe", "shoes"),
    ("coat", "coats"),
    ("car", "cars"),
    ("boat", "boats"),
]
PLACES = [
    ("house", "houses"),
    ("garden", "gardens"),
    ("river", "rivers"),
    ("tree", "trees"),
    ("bridge", "bridges"),
    ("hill", "hills"),
    ("village", "villages"),
    ("kitchen", "kitchens"),
    ("market", "markets"),
    ("forest", "forests"),
    ("road", "roads"),
    ("city", "cities"),
    ("island", "islands"),
    ("train", "trains"),
]

# (third person singular, base, past)
TRANSITIVE = [
    ("sees", "see", "saw"),
    ("finds", "find", "found"),
    ("takes", "take", "took"),
    ("brings", "bring", "brought"),
    ("carries", "carry", "carried"),
    ("watches", "watch", "watched"),
    ("likes", "like", "liked"),
    ("wants", "want", "wanted"),
    ("pulls", "pull", "pulled"),
    ("pushes", "push", "pushed"),
    ("follows", "follow", "followed"),
    ("paints", "paint", "painted"),
    ("cleans", "clean", "cleaned"),
    ("opens", "open", "opened"),
    ("holds", "hold", "held"),
    ("catches", "catch", "caught"),
    ("drops", "drop", "dropped"),
    ("keeps", "keep", "kept"),
    ("loves", "love", "loved"),
    ("helps", "help", "helped"),
    ("visits", "visit", "visited"),
    ("builds", "build", "built"),
    ("calls", "call", "called"),
    ("throws", "throw", "threw"),
    ("makes", "make", "made"),
]
INTRANSITIVE = [
    ("sleeps", "sleep", "slept"),
    ("runs", "run", "ran"),
    ("sits", "sit", "sat"),
    ("waits", "wait", "waited"),
    ("sings", "sing", "sang"),
    ("jumps", "jump", "jumped"),
    ("walks", "walk", "walked"),
    ("plays", "play", "played"),
    ("laughs", "laugh", "laughed"),
    ("swims", "swim", "swam"),
    ("dances", "dance", "danced"),
    ("works", "work", "worked"),
]
COPULA = {("sg", "present"): "is", ("pl", "present"): "are", ("sg", "past"): "was", ("pl", "past"): "were"}

DET_SG = "the a this that every my your his her our their".split()
DET_PL = "the these those some many my your his her our their".split()
NUMBERS = "two three four five six seven eight nine ten eleven twelve twenty".split()
PREPOSITIONS = "near behind under over beside inside across along with on in from".split()
ADVERBS = {
    "present": "today again slowly quickly quietly happily often".split(),
    "past": "yesterday again slowly quickly quietly happily later".split(),
}
CONJUNCTIONS = "and but while".split()


class SentenceGenerator:
    """Seeded sentences from a small English grammar, 4-12 lower-case words, no punctuation.

    The same seed always gives the same sequence, so a corpus can be rebuilt exactly.
    """

    min_words, max_words = 4, 12

    def __init__(self, seed: int | str = 0):
        self.rng = random.Random(seed)

    @staticmethod
    def vocabulary() -> set[str]:
        """Every word the grammar can emit (the LM and tests use it)."""
        words = set(ADJECTIVES) | set(DET_SG) | set(DET_PL) | set(NUMBERS) | {"an"}
        for table in (ANIMATE, THINGS, PLACES, TRANSITIVE, INTRANSITIVE):
            for forms in table:
                words.update(forms)
        words |= set(COPULA.values()) | set(PREPOSITIONS) | set(CONJUNCTIONS)
        words |= set(ADVERBS["present"]) | set(ADVERBS["past"])
        return words

    def _np(self, nouns, number: str) -> list[str]:
        r = self.rng
        noun = r.choice(nouns)[0 if number == "sg" else 1]
        adjs = []
        if r.random() < 0.5:
            adjs.append(r.choice(ADJECTIVES))
            if r.random() < 0.15:
                adjs.append(r.choice([a for a in ADJECTIVES if a != adjs[0]]))
        if number == "sg":
            det = r.choice(DET_SG)
        else:
            det = r.choice(NUMBERS) if r.random() < 0.4 else r.choice(DET_PL)
        words = [det, *adjs, noun]
        if det == "a" and words[1][0] in "aeiou":
            words[0] = "an"
        return words

    def _number(self) -> str:
        return "sg" if self.rng.random() < 0.55 else "pl"

    def _clause(self, tense: str) -> list[str]:
        r = self.rng
        number = self._number()
        subject = self._np(ANIMATE, number)
        kind = r.random()
        if kind < 0.5:
            verb = r.choice(TRANSITIVE)
            words = subject + [self._verb(verb, number, tense)]
            words += self._np(r.choice((ANIMATE, THINGS, PLACES)), self._number())
        elif kind < 0.8:
            words = subject + [self._verb(r.choice(INTRANSITIVE), number, tense)]
        else:
            words = subject + [COPULA[number, tense], r.choice(ADJECTIVES)]
        if r.random() < 0.4:
            words += [r.choice(PREPOSITIONS)] + self._np(r.choice((PLACES, THINGS)), self._number())
        return words

    @staticmethod
    def _verb(forms, number: str, tense: str) -> str:
        if tense == "past":
            return forms[2]
        return forms[0] if number == "sg" else forms[1]

    def sentence(self) -> str:
        """One sentence; redraws until its length is within [min_words, max_words]."""
        r = self.rng
        while True:
            tense = "present" if r.random() < 0.6 else "past"
            words = self._clause(tense)
            if r.random() < 0.2:
                words += [r.choice(CONJUNCTIONS)] + self._clause(tense)
            elif r.random() < 0.3:
                words.append(r.choice(ADVERBS[tense]))
            if self.min_words <= len(words) <= self.max_words:
                return " ".join(words)

    def sentences(self, n: int, exclude: set[str] = frozenset()) -> list[str]:
        """`n` distinct sentences, none of them in `exclude` (other splits' sentences)."""
        out, seen = [], set(exclude)
        while len(out) < n:
            s = self.sentence()
            if s not in seen:
                seen.add(s)
                out.append(s)
        return out


# --- voices ---------------------------------------------------------------------------------

# `en-gb` ignores "+variant" in espeak-ng 1.51, so British English is spelt `en`.
ACCENTS = ["en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
# Many speakers generalise better to unseen ones than many utterances per speaker: every
# intelligible variant that is not held out trains (whispered, robotic and novelty ones are out).
TRAIN_VARIANTS = [
    "",
    "m1",
    "m2",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt5",
    "klatt6",
    "Andy",
    "Lee",
    "Mike",
    "robert",
    "steph",
    "steph2",
    "steph3",
    "adam",
    "Alex",
    "Andrea",
    "antonio",
    "aunty",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "Denis",
    "ed",
    "edward",
    "Gene",
    "gustave",
    "Henrique",
    "Hugo",
    "iven",
    "iven2",
    "Jacky",
    "john",
    "linda",
    "Marco",
    "max",
    "Michael",
    "miguel",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "zac",
    "anika",
    "norbert",
    "shelby",
    "travis",
    "victor",
    "grandma",
    "grandpa",
]
HELDOUT_VARIANTS = ["m3", "m4", "f4", "belinda"]
RATE_WPM = (140, 190)
PITCH = (30, 70)


def _voices(variants) -> list[str]:
    return [a + (f"+{v}" if v else "") for v in variants for a in ACCENTS]


def split_voices(split: str) -> list[str]:
    """The espeak-ng voices (`-v` names) a split draws from; train never shares with dev/test."""
    return _voices(TRAIN_VARIANTS if split == "train" else HELDOUT_VARIANTS)


def check_espeak() -> str:
    """Path of espeak-ng; fails clearly if it or one of our voices is missing.

    espeak-ng silently ignores an unknown variant, so variants are checked against its list.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng not found on PATH; install it (Debian/Ubuntu: `apt-get install espeak-ng`)")
    listing = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True).stdout
    have = set(re.findall(r"!v/(\S+)", listing))
    missing = [v for v in TRAIN_VARIANTS + HELDOUT_VARIANTS if v and v not in have]
    for accent in ACCENTS:
        if not subprocess.run([exe, "-v", accent, "--stdout", "a"], capture_output=True).stdout:
            missing.append(accent)
    if missing:
        raise RuntimeError(
            f"espeak-ng at {exe} lacks voices {missing}; install the full "
            "espeak-ng-data package (`apt-get install espeak-ng`)"
        )
    return exe


# --- synthesis ------------------------------------------------------------------------------


def _trim(wav: np.ndarray, sr: int, margin: float = 0.1, rel: float = 0.02) -> np.ndarray:
    """Cut leading/trailing silence (espeak-ng ends with ~0.25 s of it), keeping a margin."""
    loud = np.nonzero(np.abs(wav) > rel * max(float(np.abs(wav).max()), 1e-6))[0]
    if loud.size == 0:
        return wav
    pad = int(margin * sr)
    return wav[max(0, loud[0] - pad) : loud[-1] + pad + 1]


def _init_worker():
    import torch

    torch.set_num_threads(1)  # one process per core already
    # oneDNN caches a conv primitive per input length, so resampling thousands of utterances
    # of different lengths grows each worker by hundreds of MB; the plain kernel is 3x faster too
    torch.backends.mkldnn.enabled = False


_STRESS = re.compile("[\u02c8\u02cc]")  # IPA primary and secondary stress


def _clean_ipa(out: str) -> str:
    """espeak-ng's --ipa output -> stress marks dropped, one space between words (it breaks long
    sentences over lines)."""
    return " ".join(_STRESS.sub("", out).split())


def phonemes(exe: str, voice: str, text: str) -> str:
    """espeak-ng's IPA for `text` in `voice`'s accent (what `transcript="phonemes"` writes)."""
    proc = subprocess.run([exe, "-q", "--ipa", "-v", voice, text], capture_output=True, text=True)
    ipa = _clean_ipa(proc.stdout)
    if proc.returncode != 0 or not ipa:
        raise RuntimeError(f"espeak-ng gave no phonemes for {text!r} in voice {voice}: {proc.stderr.strip()}")
    return ipa


def _synth_one(job: dict) -> tuple[str, float, str | None]:
    """Speak one sentence to a 16 kHz mono FLAC file; returns (id, duration in seconds, its
    phonemes when job["phonemes"] is set, else None)."""
    import torch

    from astctc.audio import SAMPLE_RATE, encode_flac, load_audio

    path = Path(job["path"])
    # -a 75 (default 100) leaves headroom: loud variants (Andy, Lee) otherwise reach full scale
    cmd = [job["exe"], "-v", job["voice"], "-s", str(job["rate"]), "-p", str(job["pitch"]), "-a", "75"]
    # phonemes come from the same call (--ipa prints them while -w writes the audio): one process
    # an utterance, not two
    espeak_wav = path.with_suffix(".espeak.wav") if job.get("phonemes") else None
    cmd += ["--ipa", "-w", str(espeak_wav)] if espeak_wav else ["--stdout"]
    proc = subprocess.run(cmd + [job["text"]], capture_output=True)
    audio = proc.stdout
    if espeak_wav:
        audio = espeak_wav.read_bytes() if espeak_wav.exists() else b""
        espeak_wav.unlink(missing_ok=True)
    ipa = _clean_ipa(proc.stdout.decode(errors="replace")) if espeak_wav else None
    if proc.returncode != 0 or len(audio) < 100 or ipa == "":
        raise RuntimeError(
            f"espeak-ng failed for {job['id']} ({' '.join(cmd)}): {proc.stderr.decode(errors='replace').strip()}"
        )
    wav = load_audio(audio, SAMPLE_RATE, name=job["id"]).numpy()
    wav = _trim(wav, SAMPLE_RATE)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(encode_flac(torch.from_numpy(np.ascontiguousarray(wav)), SAMPLE_RATE))
    os.replace(tmp, path)
    return job["id"], len(wav) / SAMPLE_RATE, ipa


def _split_sentences(seed: int, counts: dict[str, int]) -> dict[str, list[str]]:
    """Test first, then dev, then train, each excluding the ones before: no test sentence
    occurs in train, and test does not change when only num_train changes."""
    used: set[str] = set()
    out = {}
    for split in ("test", "dev", "train"):
        out[split] = SentenceGenerator(f"{seed}/{split}").sentences(counts[split], used)
        used.update(out[split])
    return out


def synthesize_corpus(
    out_dir,
    num_train: int = 2000,
    num_dev: int = 100,
    num_test: int = 200,
    seed: int = 0,
    jobs: int | None = None,
    progress: bool = True,
    transcript: str = "words",
) -> dict:
    """Write `out_dir/{train,dev,test}/manifest.jsonl` and `audio/*.flac` (16 kHz mono).

    transcript: "words" (the sentence) or "phonemes" (its IPA in the row's voice; module doc).

    Idempotent: a split whose `.done` marker records the same size, seed and version is
    skipped; any other existing split is wiped and redone. Returns, per split, the manifest
    path, utterance count, hours of audio and whether it was skipped.
    """
    from tqdm import tqdm

    from ..logs import progress_disabled

    if transcript not in TRANSCRIPTS:
        raise ValueError(f"transcript must be one of {TRANSCRIPTS}, not {transcript!r}")
    exe = check_espeak()
    out_dir = Path(out_dir)
    counts = {"train": num_train, "dev": num_dev, "test": num_test}
    jobs = max(1, jobs or os.cpu_count() or 1)
    result, todo, work = {}, {}, []
    texts = None
    for split in SPLITS:
        split_dir = out_dir / split
        manifest, marker = split_dir / "manifest.jsonl", split_dir / ".done"
        # a split's sentences depend on those drawn before it (test, dev, train order)
        before = ("test", "dev", "train")[: ("test", "dev", "train").index(split) + 1]
        params = {"counts": {k: counts[k] for k in before}, "seed": seed, "version": VERSION}
        if transcript != "words":  # markers of word corpora written before the option stay valid
            params["transcript"] = transcript
        if marker.exists() and manifest.exists():
            done = json.loads(marker.read_text())
            if done.get("params") == params:
                result[split] = {
                    "manifest": str(manifest),
                    "count": done["count"],
                    "hours": done["hours"],
                    "skipped": True,
                }
                continue
        if split_dir.exists():  # stale or interrupted: start the split afresh
            marker.unlink(missing_ok=True)
            manifest.unlink(missing_ok=True)
            shutil.rmtree(split_dir / "audio", ignore_errors=True)
        (split_dir / "audio").mkdir(parents=True, exist_ok=True)

        texts = texts or _split_sentences(seed, counts)
        rng = random.Random(f"{seed}/{split}/voice")
        voices = split_voices(split)
        rows = []
        for i, text in enumerate(texts[split]):
            uid = f"{split}-{i:06d}"
            voice = rng.choice(voices)
            rate, pitch = rng.randint(*RATE_WPM), rng.randint(*PITCH)
            rows.append(
                {
                    "id": uid,
                    "audio": f"audio/{uid}.flac",
                    "duration": None,
                    "text": text,
                    "speaker": voice,
                    "language": "en",
                    "labels": {},
                }
            )
            work.append(
                {
                    "exe": exe,
                    "id": uid,
                    "voice": voice,
                    "rate": rate,
                    "pitch": pitch,
                    "text": text,
                    "path": str(split_dir / "audio" / f"{uid}.flac"),
                    "phonemes": transcript == "phonemes",
                }
            )
        todo[split] = (rows, params)

    # one pool for all splits: starting workers (torch import) costs about a second each
    durations, ipa = {}, {}
    bar = tqdm(
        total=len(work), desc=f"synth {'+'.join(todo)}", unit="utt", disable=progress_disabled(progress) or not work
    )
    if jobs == 1 or len(work) < 8:
        import torch

        was, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False
        try:  # see _init_worker; restored because this is the caller's process
            for job in work:
                uid, durations[uid], ipa[uid] = _synth_one(job)
                bar.update()
        finally:
            torch.backends.mkldnn.enabled = was
    else:
        # spawn, not fork: forking a process that has used torch threads can deadlock
        with mp.get_context("spawn").Pool(jobs, initializer=_init_worker) as pool:
            for uid, dur, ph in pool.imap_unordered(_synth_one, work, chunksize=8):
                durations[uid], ipa[uid] = dur, ph
                bar.update()
    bar.close()

    for split, (rows, params) in todo.items():
        split_dir = out_dir / split
        for row in rows:
            row["duration"] = round(durations[row["id"]], 4)
            if ipa[row["id"]] is not None:
                row["words"], row["text"] = row["text"], ipa[row["id"]]
        manifest = split_dir / "manifest.jsonl"
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        os.replace(tmp, manifest)
        hours = sum(r["duration"] for r in rows) / 3600
        (split_dir / ".done").write_text(json.dumps({"params": params, "count": len(rows), "hours": hours}))
        result[split] = {"manifest": str(manifest), "count": len(rows), "hours": hours, "skipped": False}
    return {split: result[split] for split in SPLITS}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="astctc synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="corpus directory")
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--num-dev", type=int, default=100)
    p.add_argument("--num-test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--transcript", choices=TRANSCRIPTS, default="words")
    a = p.parse_args(argv)
    start = time.time()
    try:
        res = synthesize_corpus(a.out, a.num_train, a.num_dev, a.num_test, a.seed, a.jobs, transcript=a.transcript)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, r in res.items():
        note = " (already done)" if r["skipped"] else ""
        print(f"{split}: {r['count']} utterances, {r['hours']:.3f} h -> {r['manifest']}{note}")
    print(f"total {sum(r['hours'] for r in res.values()):.3f} h of audio in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
