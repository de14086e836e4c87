"""The training data path at LibriSpeech-960 scale, simulated on a CPU: worker memory, trainer
waits and padding of the real loader (make_loader + Featurizer) with the recipe's settings.

What is real and what is simulated:
  * real: the shards (webdataset tars in write_shards' format, `<key>.flac` + `<key>.json`
    with "id", "duration" and "text", closed at --shard-mb like write_shards), ShardDataset's
    rank x worker split and shuffle buffer, BatchedShardDataset's bucket buffer and batch
    cutting, the Featurizer (SpecAugment, CharTokenizer targets, duration limits), collate,
    the DataLoader with its workers and prefetch, and every byte the loader holds: a `.flac`
    member is as long as real FLAC of its duration (--flac-bytes-per-second, measured on the
    LibriSpeech sample in ../shared/data) and the features are (frames, 128) float32, written;
  * simulated: the durations (281,241 drawn from the quantiles of LibriSpeech's three training
    subsets, see `durations`); the `.flac` payload (a 24-byte header giving the sample count,
    then zeros, stored as holes in sparse tars: little disk, but read into memory in full);
    `astctc.data.shards.load_audio` (returns a written waveform of the recorded length, no
    FLAC decoding) and `astctc.data.pipeline.fbank` (returns a copy of a fixed random block of
    the right shape, and sleeps audio seconds / --featurize-speed to stand for the CPU time of
    FLAC decoding + fbank on a worker's own core: bench/README's data pipeline table measures
    940-980x real time per CPU second for read + decode + fbank); the trainer (sleeps
    batch audio seconds / --speed per batch, 1500x real time: the recipe's GPU target).
The stand-ins are installed before the DataLoader forks its workers, so the workers run them;
each run checks that on the first batch (its features must be the block, its lengths the
recorded durations) and says so in "stand_ins_in_workers".

Reported: warm-up (the first batch; and the first batch of every worker, the DataLoader
taking items from its workers in turn), the waits of the trainer in next() after warm-up
(longest, p50, p99, how many exceed --stall = 0.3 s, about one step; time blocked on items
that are not batches, None or drop records, counts into the next batch's wait), batches and
audio consumed, padding
fraction = 1 - sum(lengths) / sum(batch size x longest), peak RSS of each DataLoader worker
(VmHWM, from /proc; it includes the pages shared with the parent: see "baseline") and of the
main process, and the run's whole footprint: the largest sum of PSS (/proc/<pid>/smaps_rollup,
shared pages divided among their sharers; sampled every 5th sample, it costs CPU) over the main
process and its workers at once.
A run stops at --max-seconds / --max-batches / the end of the data; a watchdog kills the
workers (SIGKILL, by pid) if the machine's available memory drops under --min-available-gib
or the run overruns --max-seconds by --grace seconds.

    .venv/bin/python bench/loader_scale.py --workers 2 --json w2.json
    PYTHONPATH=/tmp/loader_before .venv/bin/python bench/loader_scale.py --workers 2 --json before_w2.json
    .venv/bin/python bench/loader_scale.py --utterances 300 --shard-mb 16 --workers 2 \
        --bucket-buffer 60 --max-batches 5 --featurize-speed 0 --shards-dir /tmp/toy   # seconds

astctc is imported from PYTHONPATH when it is set (to measure another tree), else from this
checkout; the recipe YAML is read from that same tree.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np

try:
    import astctc
except ImportError:  # not installed and no PYTHONPATH: this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import astctc

import torch  # noqa: E402
import yaml  # noqa: E402

import astctc.data.pipeline as pipeline  # noqa: E402
import astctc.data.shards as shards_mod  # noqa: E402
from astctc.config import from_dict  # noqa: E402
from astctc.data.pipeline import DataConfig, Featurizer, make_loader  # noqa: E402
from astctc.data.shards import id_to_key  # noqa: E402
from astctc.features import FeatureConfig  # noqa: E402
from astctc.tokenizer import CharTokenizer  # noqa: E402

TREE = Path(astctc.__file__).resolve().parents[1]
RECIPE = TREE / "recipes/librispeech/conf/ast_base_960h.yaml"
SAMPLE_RATE = 16000

# ------------------------------------------------------------------------------ durations

# Duration quantiles (s) of LibriSpeech's training subsets: lhotse `describe()` of the cuts, as
# listed in icefall's egs/librispeech/ASR/local/display_manifest_statistics.py (those cuts
# carry 0.9/1.0/1.1 speed perturbation; their means are within 0.1% of the subsets' real
# hours / utterances). Each subset is drawn from the piecewise-linear inverse CDF through its
# quantiles, with its real utterance count: 281,241 utterances, mean 12.30 s, 960.9 h.
_Q = (0, 0.001, 0.005, 0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 0.995, 0.999, 1)
SUBSETS = {  # name: (utterances, duration at each of _Q)
    "train-clean-100": (28539, (1.3, 1.9, 2.2, 2.5, 4.2, 6.4, 11.4, 13.8, 15.3, 16.7, 17.3, 18.1, 18.4, 18.8, 27.2)),
    "train-clean-360": (104014, (1.0, 1.8, 2.2, 2.5, 4.2, 6.2, 11.2, 13.7, 15.3, 16.6, 17.3, 18.1, 18.4, 18.8, 33.0)),
    "train-other-500": (148688, (0.8, 1.7, 2.1, 2.3, 3.5, 5.0, 9.8, 13.4, 15.1, 16.5, 17.2, 18.1, 18.4, 18.9, 31.0)),
}
LIBRISPEECH_960 = sum(n for n, _ in SUBSETS.values())  # 281,241


def durations(dist: str, n: int, seed: int) -> np.ndarray:
    """n durations (s) in random order (so any prefix is a fair sample of the corpus).

    "fitted": the LibriSpeech-960 subsets above, in proportion (n = 281,241 gives each subset its
    real count). "librispeech_like": bench/train_throughput.py's mix (80% 14.6 +- 2.3 s, 20% a
    log-normal tail around 6 s, clipped to 2-35 s; mean 13.1 s)."""
    r = np.random.default_rng(seed)
    if dist == "librispeech_like":
        d = np.where(r.random(n) < 0.8, r.normal(14.6, 2.3, n), r.lognormal(np.log(6.0), 0.55, n))
        return np.clip(d, 2.0, 35.0)
    counts = [round(n * c / LIBRISPEECH_960) for c, _ in SUBSETS.values()]
    counts[-1] = n - sum(counts[:-1])
    parts = [np.interp(r.random(k), _Q, q) for k, (_, q) in zip(counts, SUBSETS.values())]
    return r.permutation(np.concatenate(parts))


# --------------------------------------------------------------------------------- shards

MAGIC = b"ASTCTC-SIM-FLAC\0"  # + 8-byte little-endian sample count, then zeros
WORDS = (
    "the and of to a in that he was it his i with as had for you her but him not she is at on "
    "by be all so which have from they this were my me said one there what when their no would "
    "an we upon out little then man could been into them more time very some"
).split()


def flac_bytes_per_second() -> tuple[float, str]:
    """Bytes per second of LibriSpeech FLAC: measured on ../shared/data's sample if present."""
    root = Path(__file__).resolve().parents[2] / "shared/data/librispeech_sample/LibriSpeech"
    files = sorted(root.glob("**/*.flac")) if root.is_dir() else []
    if not files:
        return 17655.0, "default (the LibriSpeech sample's 17,655 B/s)"
    import soundfile as sf

    size = sum(f.stat().st_size for f in files)
    secs = sum(sf.info(str(f)).frames / sf.info(str(f)).samplerate for f in files)
    return size / secs, f"measured on {len(files)} files of {root}"


class _SparseTar:
    """A tar like _ShardWriter's (PAX, mode 0o444, mtime 0, one record-padded stream) whose zero
    runs are holes: the `.flac` payloads are zeros after their header, so a 256 MB shard takes
    a few MB of disk while a reader still gets every byte."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp")
        self.f = open(self.tmp, "wb")
        self.count, self.seconds, self.bytes = 0, 0.0, 0

    def _member(self, name: str, head: bytes, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o444, 0
        self.f.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        self.f.write(head)
        self.f.seek(size - len(head) + (-size % tarfile.BLOCKSIZE), os.SEEK_CUR)  # zeros, padding

    def add(self, key: str, flac_size: int, nsamples: int, meta: bytes) -> None:
        self._member(f"{key}.flac", MAGIC + nsamples.to_bytes(8, "little"), flac_size)
        self._member(f"{key}.json", meta, len(meta))
        self.bytes += flac_size + len(meta) + 2048
        self.count += 1
        self.seconds += nsamples / SAMPLE_RATE

    def close(self) -> dict:
        end = self.f.tell() + 2 * tarfile.BLOCKSIZE  # end-of-archive marker
        end += -end % tarfile.RECORDSIZE
        self.f.truncate(end)
        self.f.close()
        os.replace(self.tmp, self.path)
        return {"name": self.path.name, "count": self.count, "seconds": round(self.seconds, 3)}


def write_sim_shards(out: Path, durs: np.ndarray, bps: float, shard_mb: float, seed: int) -> dict:
    """Shards + index.json (write_shards' layout) for utterances sim-0000000... of `durs`."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.tar"):
        old.unlink()
    r = np.random.default_rng(seed + 1)
    max_bytes = shard_mb * 1024 * 1024
    shards, writer = [], None
    for i, d in enumerate(durs):
        nsamples = int(round(d * SAMPLE_RATE))
        utt = f"sim-{i:07d}"
        text = " ".join(r.choice(WORDS, max(1, round(d * 2.7)))).upper()  # 2.7 words/s as LibriSpeech
        meta = json.dumps({"id": utt, "text": text, "duration": nsamples / SAMPLE_RATE}).encode()
        flac_size = max(len(MAGIC) + 8, int(round(nsamples / SAMPLE_RATE * bps)))
        size = flac_size + len(meta) + 2048
        if writer is not None and writer.bytes + size > max_bytes:
            shards.append(writer.close())
            writer = None
        if writer is None:
            writer = _SparseTar(out / f"{len(shards):06d}.tar")
        writer.add(id_to_key(utt), flac_size, nsamples, meta)
    if writer is not None:
        shards.append(writer.close())
    index = {
        "shards": shards,
        "count": sum(s["count"] for s in shards),
        "seconds": round(sum(s["seconds"] for s in shards), 3),
        "skipped": 0,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def prepare_shards(args) -> tuple[Path, dict, dict, np.ndarray]:
    """The shard directory for these settings (reused when its sim.json matches), the corpus'
    and the shards' figures, and the durations written."""
    bps, bps_note = (args.flac_bytes_per_second, "given") if args.flac_bytes_per_second else flac_bytes_per_second()
    spec = {
        "dist": args.dist,
        "corpus_utterances": args.corpus_utterances,
        "utterances": args.utterances,
        "seed": args.seed,
        "shard_mb": args.shard_mb,
        "flac_bytes_per_second": round(bps, 1),
        "format": 1,
    }
    out = Path(args.shards_dir or f"/tmp/astctc_loader_scale/{args.dist}-{args.utterances}")
    durs = durations(args.dist, args.corpus_utterances, args.seed)
    corpus = {
        "utterances": len(durs),
        "hours": round(float(durs.sum()) / 3600, 1),
        "mean_s": round(float(durs.mean()), 2),
        "quantiles_s": {q: round(float(np.quantile(durs, q)), 2) for q in (0.01, 0.25, 0.5, 0.75, 0.99)},
        "max_s": round(float(durs.max()), 2),
        "flac_bytes_per_second": round(bps, 1),
        "flac_bytes_per_second_source": bps_note,
    }
    sim, index = out / "sim.json", out / "index.json"
    if not (sim.exists() and index.exists() and json.loads(sim.read_text()) == spec):
        t0 = time.perf_counter()
        write_sim_shards(out, durs[: args.utterances], bps, args.shard_mb, args.seed)
        sim.write_text(json.dumps(spec, indent=1) + "\n")
        print(f"wrote {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    idx = json.loads(index.read_text())
    written = {
        "dir": str(out),
        "shards": len(idx["shards"]),
        "utterances": idx["count"],
        "hours": round(idx["seconds"] / 3600, 2),
        "utterances_per_shard": round(idx["count"] / len(idx["shards"]), 1),
    }
    return out, corpus, written, durs[: args.utterances]


# ----------------------------------------------------------------------------- stand-ins

_real_load_audio = shards_mod.load_audio
_real_fbank = pipeline.fbank
_BLOCK: dict[int, torch.Tensor] = {}  # mel bins -> (4000, bins) fixed random features


def _block(bins: int) -> torch.Tensor:
    if bins not in _BLOCK:
        _BLOCK[bins] = torch.randn(4000, bins, generator=torch.Generator().manual_seed(bins))
    return _BLOCK[bins]


def _frames_block(frames: int, bins: int) -> torch.Tensor:
    b = _block(bins)
    return b[:frames] if frames <= len(b) else b.repeat(-(-frames // len(b)), 1)[:frames]


def install_stand_ins(featurize_speed: float, bins: int) -> None:
    """Replace FLAC decoding and fbank (in this process, hence in the workers it forks)."""

    def load_audio(src, sr: int = SAMPLE_RATE, name: str | None = None):
        if isinstance(src, (bytes, bytearray)) and src[: len(MAGIC)] == MAGIC:
            n = int.from_bytes(src[len(MAGIC) : len(MAGIC) + 8], "little")
            return torch.full((n,), 1e-3)  # written, as a decoded clip is
        return _real_load_audio(src, sr=sr, name=name)

    def fbank(wav: torch.Tensor, cfg: FeatureConfig | None = None) -> torch.Tensor:
        cfg = cfg or FeatureConfig()
        frames = cfg.frames(wav.numel())
        if frames < 1:
            raise ValueError(f"waveform of {wav.numel()} samples is shorter than one analysis window")
        if featurize_speed > 0:
            time.sleep(wav.numel() / cfg.sample_rate / featurize_speed)
        return _frames_block(frames, cfg.num_mel_bins).clone()

    _block(bins)  # made before the fork: shared, read-only
    shards_mod.load_audio = load_audio
    pipeline.fbank = fbank


def check_stand_ins(batch: dict, nsamples: dict[str, int], features: FeatureConfig) -> bool:
    """Did the workers run the stand-ins? Lengths must be the recorded durations' frames and
    the features the fixed block wherever SpecAugment left them."""
    for i, utt in enumerate(batch["ids"]):
        n = int(batch["lengths"][i])
        if utt not in nsamples or n != features.frames(nsamples[utt]):
            return False
        f = batch["feats"][i, :n].float()
        keep = f != 0  # SpecAugment's masks are zeros; tolerance: features kept in 16 bits
        if not torch.allclose(f[keep], _frames_block(n, f.shape[1])[keep], rtol=1e-2, atol=1e-2):
            return False
    return True


# ------------------------------------------------------------------------------- monitor


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(set(out))


def _status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS (kB) of a process; {} if it has gone."""
    want = ("VmHWM", "VmRSS")
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in lines if ":" in ln) if k in want}


def _pss_kb(pid: int) -> int:
    """Proportional set size (kB): pages shared between processes counted once over all."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


class Monitor(threading.Thread):
    """Samples the DataLoader workers (this process's children) every `interval` seconds; kills
    them if available memory drops under `min_available_gib` or at `deadline` (perf_counter)."""

    PSS_EVERY = 5  # samples; reading smaps_rollup of a 5 GB process takes ~0.1 s of CPU

    def __init__(self, interval: float, min_available_gib: float, deadline: float):
        super().__init__(daemon=True)
        self.count = 0
        self.interval, self.min_available_gib, self.deadline = interval, min_available_gib, deadline
        self.workers: dict[int, dict] = {}  # pid -> {"first_rss", "hwm", "pss", "cpu"}
        self.peak_total_kb = 0  # largest sum of PSS over this run's processes (main + workers)
        self.sample_s: list[float] = []  # time each sample took
        self.min_available = float("inf")
        self.killed: str | None = None
        self.halt = threading.Event()

    def sample(self) -> None:
        t0 = time.perf_counter()
        with_pss = self.count % self.PSS_EVERY == 0
        self.count += 1
        total = _pss_kb(os.getpid()) if with_pss else 0
        for pid in _children(os.getpid()):
            st = _status(pid)
            if not st:
                continue
            w = self.workers.setdefault(pid, {"first_rss": st.get("VmRSS", 0), "hwm": 0, "pss": 0, "cpu": 0.0})
            w["hwm"] = max(w["hwm"], st.get("VmHWM", 0))
            w["cpu"] = _cpu_seconds(pid) or w["cpu"]
            if with_pss:
                pss = _pss_kb(pid)
                w["pss"] = max(w["pss"], pss)
                total += pss
        self.peak_total_kb = max(self.peak_total_kb, total)
        self.min_available = min(self.min_available, _mem_available_gib())
        self.sample_s.append(time.perf_counter() - t0)

    def kill_workers(self, why: str) -> None:
        self.killed = why
        print(f"watchdog: {why}: killing the DataLoader workers", file=sys.stderr, flush=True)
        for pid in _children(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.sample()
            if self.killed:
                continue
            if self.min_available < self.min_available_gib:
                self.kill_workers(f"available memory {self.min_available:.1f} GiB < {self.min_available_gib} GiB")
            elif time.perf_counter() > self.deadline:
                self.kill_workers("run overran --max-seconds + --grace")


# -------------------------------------------------------------------------------- config


def data_config(args) -> tuple[DataConfig, FeatureConfig, int, str]:
    """The recipe's DataConfig and FeatureConfig (its YAML, through astctc's own config
    reader), with the command line's overrides."""
    raw = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    cfg = from_dict(DataConfig, raw.get("data"))
    features = from_dict(FeatureConfig, raw.get("features"))
    cfg.num_workers = args.workers
    for name in ("bucket_buffer", "max_batch_seconds", "num_buckets", "prefetch"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    return cfg, features, int(raw.get("seed", 0)), str(args.config or "DataConfig defaults")


def tree_version() -> str:
    """Commit of the astctc tree measured, + "-dirty" if its data loader has local changes."""
    try:
        rev = subprocess.run(["git", "-C", str(TREE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(TREE), "status", "--porcelain", "--", "astctc/data"], capture_output=True, text=True
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else "?"
    except OSError:
        return "?"


# ----------------------------------------------------------------------------------- run


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 3) if xs else None


def run(args) -> dict:
    torch.set_num_threads(1)
    cfg, features, seed, config_src = data_config(args)
    shard_dir, corpus, written, durs = prepare_shards(args)
    nsamples = {f"sim-{i:07d}": int(round(d * SAMPLE_RATE)) for i, d in enumerate(durs)}  # for the check
    install_stand_ins(args.featurize_speed, features.num_mel_bins)
    tokenizer = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz'"])
    featurizer = Featurizer(features, tokenizer, cfg.spec_augment, seed, cfg.max_duration, cfg.augment)
    step_budget = cfg.max_batch_seconds / args.speed

    t_start = time.perf_counter()
    monitor = Monitor(args.sample_interval, args.min_available_gib, t_start + args.max_seconds + args.grace)
    loader = make_loader(str(shard_dir), featurizer, cfg, train=True, seed=seed, epoch=0)
    batches_iter = iter(loader)  # forks the workers
    monitor.start()

    log: list[tuple[float, float, int]] = []  # (arrival s, wait s, item index) per batch
    items = others = dropped = 0
    valid = padded = 0
    audio_s, sizes = 0.0, []
    all_workers_at = None
    pending = 0.0  # time waited for items that were not batches (None, drop records)
    stand_ins_ok = None
    stopped_by = "end of data"
    try:
        while True:
            now = time.perf_counter() - t_start
            if now >= args.max_seconds:
                stopped_by = "--max-seconds"
                break
            if args.max_batches and len(log) >= args.max_batches:
                stopped_by = "--max-batches"
                break
            t0 = time.perf_counter()
            try:
                b = next(batches_iter)
            except StopIteration:
                break
            t1 = time.perf_counter()
            items += 1
            pending += t1 - t0
            if items == cfg.num_workers:
                all_workers_at = t1 - t_start
            if not isinstance(b, dict) or "feats" not in b:
                others += 1
                dropped += len(b.get("dropped", ())) if isinstance(b, dict) else 0
                continue
            log.append((t1 - t_start, pending, items))
            pending = 0.0
            dropped += len(b.get("dropped", ()))
            lengths = b["lengths"]
            valid += int(lengths.sum())
            padded += len(lengths) * int(lengths.max())
            sizes.append(len(lengths))
            audio_s += float(b["seconds"])
            if stand_ins_ok is None:
                stand_ins_ok = check_stand_ins(b, nsamples, features)
                if not stand_ins_ok:
                    print("WARNING: the workers did not run the stand-ins; figures are void", file=sys.stderr)
            float(b["feats"].sum())  # read the batch, as a copy to the GPU would
            step = float(b["seconds"]) / args.speed - (time.perf_counter() - t1)
            del b
            if step > 0:
                time.sleep(step)
    except RuntimeError as e:  # a worker killed by the watchdog
        if monitor.killed is None:
            raise
        stopped_by = f"watchdog: {monitor.killed} ({str(e).splitlines()[0]})"
    elapsed = time.perf_counter() - t_start
    open_wait = pending if monitor.killed else 0.0
    monitor.sample()
    monitor.halt.set()
    del batches_iter, loader  # shuts the workers down
    main_status = _status(os.getpid())

    warm_items = cfg.num_workers if cfg.num_workers > 0 else 1
    after = [w for _, w, i in log if i > warm_items]
    hwm = [w["hwm"] / 2**20 for w in monitor.workers.values()]
    pss = [w["pss"] / 2**20 for w in monitor.workers.values()]
    first_rss = [w["first_rss"] / 2**20 for w in monitor.workers.values()]
    stalls = [(round(t, 1), round(w, 2)) for t, w, i in log if i > warm_items and w > args.stall]
    return {
        "astctc": str(TREE),
        "astctc_version": tree_version(),
        "config": config_src,
        "settings": {
            "workers": cfg.num_workers,
            "bucket_buffer": cfg.bucket_buffer,
            "max_batch_seconds": cfg.max_batch_seconds,
            "num_buckets": cfg.num_buckets,
            "prefetch": cfg.prefetch,
            "max_duration": cfg.max_duration,
            "speeds": list(cfg.augment.speeds),
            "speed_x_realtime": args.speed,
            "featurize_speed_x_realtime": args.featurize_speed,
            "max_seconds": args.max_seconds,
            "max_batches": args.max_batches,
            "stall_s": args.stall,
        },
        "corpus": corpus,
        "shards": written,
        "stand_ins_in_workers": stand_ins_ok,
        "stopped_by": stopped_by,
        "elapsed_s": round(elapsed, 1),
        "step_budget_s": round(step_budget, 3),
        "first_batch_s": round(log[0][0], 2) if log else None,
        "all_workers_first_item_s": round(all_workers_at, 2) if all_workers_at is not None else None,
        "longest_wait_after_warmup_s": round(max(after), 3) if after else None,
        "wait_p50_s": _pct(after, 50),
        "wait_p99_s": _pct(after, 99),
        "waits_over_stall": len(stalls),
        "time_waiting_after_warmup_s": round(sum(after), 1),
        "open_wait_s": round(open_wait, 1),
        "stalls": stalls[:200],  # (arrival s, wait s) after warm-up
        "batches": len(log),
        "non_batch_items": others,
        "dropped_utterances": dropped,
        "mean_batch_size": round(float(np.mean(sizes)), 1) if sizes else None,
        "audio_hours": round(audio_s / 3600, 2),
        "padding_fraction": round(1 - valid / padded, 4) if padded else None,
        "worker_peak_rss_gib": sorted(round(h, 2) for h in hwm),
        "worker_peak_rss_max_gib": round(max(hwm), 2) if hwm else None,
        "worker_peak_rss_mean_gib": round(float(np.mean(hwm)), 2) if hwm else None,
        "worker_peak_pss_max_gib": round(max(pss), 2) if pss else None,
        "worker_baseline_rss_gib": round(float(np.mean(first_rss)), 2) if first_rss else None,
        "worker_cpu_s": sorted(round(w["cpu"], 1) for w in monitor.workers.values()),
        "main_peak_rss_gib": round(main_status.get("VmHWM", 0) / 2**20, 2),
        "peak_total_pss_gib": round(monitor.peak_total_kb / 2**20, 2),
        "monitor_sample_ms": round(1000 * float(np.mean(monitor.sample_s)), 1) if monitor.sample_s else None,
        "min_mem_available_gib": round(monitor.min_available, 1),
        "batch_log": [(round(t, 2), round(w, 3)) for t, w, _ in log],
    }


def report(res: dict) -> None:
    s = res["settings"]
    print(
        f"astctc {res['astctc']} ({res['astctc_version']}); {s['workers']} workers, bucket_buffer "
        f"{s['bucket_buffer']}, budget {s['max_batch_seconds']:g} s, prefetch {s['prefetch']}, trainer "
        f"{s['speed_x_realtime']:g}x real time, featurize {s['featurize_speed_x_realtime']:g}x per worker"
    )
    sh = res["shards"]
    print(f"shards: {sh['shards']} x {sh['utterances_per_shard']} utterances ({sh['utterances']}, {sh['hours']} h)")
    rows = [
        ("stand-ins ran in the workers", res["stand_ins_in_workers"]),
        ("stopped by", res["stopped_by"]),
        ("elapsed (s)", res["elapsed_s"]),
        ("first batch (s)", res["first_batch_s"]),
        ("first item of every worker (s)", res["all_workers_first_item_s"]),
        ("step budget (s)", res["step_budget_s"]),
        ("longest wait after warm-up (s)", res["longest_wait_after_warmup_s"]),
        ("wait p50 / p99 (s)", f"{res['wait_p50_s']} / {res['wait_p99_s']}"),
        (f"waits over {s['stall_s']:g} s after warm-up", res["waits_over_stall"]),
        ("time waiting after warm-up (s)", res["time_waiting_after_warmup_s"]),
        ("batches / mean size", f"{res['batches']} / {res['mean_batch_size']}"),
        ("audio consumed (h)", res["audio_hours"]),
        ("padding fraction", res["padding_fraction"]),
        ("worker peak RSS max / mean (GiB)", f"{res['worker_peak_rss_max_gib']} / {res['worker_peak_rss_mean_gib']}"),
        ("worker peak PSS max (GiB)", res["worker_peak_pss_max_gib"]),
        ("worker RSS at start (GiB)", res["worker_baseline_rss_gib"]),
        ("worker CPU (s)", res["worker_cpu_s"]),
        ("main process peak RSS (GiB)", res["main_peak_rss_gib"]),
        ("peak PSS, main + workers (GiB)", res["peak_total_pss_gib"]),
        ("lowest MemAvailable (GiB)", res["min_mem_available_gib"]),
        ("non-batch items / dropped utts", f"{res['non_batch_items']} / {res['dropped_utterances']}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(RECIPE) if RECIPE.exists() else None, help="recipe YAML (data, features)")
    p.add_argument("--workers", type=int, default=12, help="DataLoader workers (the recipe: 12)")
    p.add_argument("--bucket-buffer", dest="bucket_buffer", type=int, help="default: the recipe's (4000)")
    p.add_argument("--budget", dest="max_batch_seconds", type=float, help="max_batch_seconds (recipe: 400)")
    p.add_argument("--num-buckets", dest="num_buckets", type=int, help="default: the recipe's (0)")
    p.add_argument("--prefetch", type=int, help="batches in flight, all workers together (recipe: 32)")
    p.add_argument("--dist", choices=("fitted", "librispeech_like"), default="fitted", help="durations")
    p.add_argument("--corpus-utterances", type=int, default=LIBRISPEECH_960, help="manifest size")
    p.add_argument("--utterances", type=int, default=LIBRISPEECH_960, help="the manifest's first N go into shards")
    p.add_argument("--shard-mb", type=float, default=256.0, help="shard size (MiB), as write_shards")
    p.add_argument("--flac-bytes-per-second", type=float, help="default: measured on the LibriSpeech sample")
    p.add_argument("--shards-dir", help="default /tmp/astctc_loader_scale/<dist>-<utterances>")
    p.add_argument("--speed", type=float, default=1500.0, help="trainer: x real time (step = audio s / speed)")
    p.add_argument("--featurize-speed", type=float, default=960.0, help="decode + fbank x real time; 0: free")
    p.add_argument("--max-seconds", type=float, default=300.0)
    p.add_argument("--max-batches", type=int, default=0, help="0: no limit")
    p.add_argument("--stall", type=float, default=0.3, help="count waits longer than this (s)")
    p.add_argument("--grace", type=float, default=120.0, help="kill workers this long after --max-seconds")
    p.add_argument("--min-available-gib", type=float, default=6.0, help="kill workers under this MemAvailable")
    p.add_argument("--sample-interval", type=float, default=1.0, help="memory sampling period (s)")
    p.add_argument("--seed", type=int, default=0, help="durations and texts")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    res = run(args)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
