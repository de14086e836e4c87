"""Webdataset shards: writing them from a manifest, reading them split by rank and worker,
and duration-bucketed dynamic batching.

A shard is a plain tar: `<key>.flac` (16 kHz mono) + `<key>.json` (the manifest row minus
"audio") per utterance, so any tar tool or the `webdataset` library can read it. Streaming
tars instead of opening many small files keeps reading sequential, which is what makes
training fast on network file systems.

Keys: webdataset splits a member name into key and extension at the *first* dot of its
basename, and a '/' would create directories. Ids are therefore percent-encoded into keys
(`%` -> %25, `.` -> %2E, `/` -> %2F, ...; see `id_to_key`), so any id round-trips; the id
itself is also stored in the json.

Reading (`ShardDataset`) groups a tar's files by key as webdataset does, and checks where the
tar ends: Python's tar reader stops without an error at the end of the data, inside a header, at
a corrupt one, or at the first of two joined tars' markers, so a tar that does not close with
its end-of-archive marker (two zero blocks, then only zeros) is a shard error, counted and
named even when no index.json says how many samples it should hold.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import tarfile
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import quote, unquote

import soundfile as sf
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm import tqdm

from astctc.audio import SAMPLE_RATE, AudioError, encode_flac, load_audio
from astctc.data.manifest import read_manifest
from astctc.data.sources import open_shard, resolve_shard_counts, resolve_shards
from astctc.logs import progress_disabled

log = logging.getLogger(__name__)

INDEX = "index.json"
_SHARD_NAME = re.compile(r"^\d{6}\.tar$")


def id_to_key(utt_id: str) -> str:
    """Percent-encode an id into a webdataset-safe key (no '.', no '/')."""
    return quote(utt_id, safe="").replace(".", "%2E")


def key_to_id(key: str) -> str:
    return unquote(key)


# ---------------------------------------------------------------------------------- writing


def _encode(path: str) -> tuple[bytes, float]:
    """FLAC bytes (16 kHz mono) and duration of one clip; AudioError if it cannot be used."""
    wav = load_audio(path)  # also validates files we copy as they are
    try:
        info = sf.info(path)
        as_is = info.format == "FLAC" and info.samplerate == SAMPLE_RATE and info.channels == 1
    except Exception:
        as_is = False
    data = Path(path).read_bytes() if as_is else encode_flac(wav, SAMPLE_RATE)
    return data, wav.numel() / SAMPLE_RATE


def _atomic_json(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _ShardWriter:
    """One tar at a time, written to a temporary name and renamed when complete.

    Plain `tarfile` in PAX format (webdataset's TarWriter defaults to ustar, which limits
    member names to 100 bytes, too few for long percent-encoded ids)."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp{os.getpid()}")
        self.file = open(self.tmp, "wb")
        self.tar = tarfile.open(fileobj=self.file, mode="w|", format=tarfile.PAX_FORMAT)
        self.count, self.seconds, self.bytes = 0, 0.0, 0

    def add(self, key: str, members: dict[str, bytes], seconds: float) -> None:
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mode, info.mtime = len(data), 0o444, 0  # mtime 0: reproducible tars
            self.tar.addfile(info, io.BytesIO(data))
            self.bytes += len(data) + 1024  # header + padding, roughly
        self.count += 1
        self.seconds += seconds

    def close(self) -> dict:
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return {"name": self.path.name, "count": self.count, "seconds": round(self.seconds, 3)}

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def write_shards(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    max_shard_mb: float = 256.0,
    max_shard_count: int | None = None,
    progress: bool = True,
) -> dict:
    """Write the manifest's clips into `out_dir/000000.tar, 000001.tar, ...` plus index.json.

    Audio is decoded and stored as 16 kHz mono FLAC (16 kHz mono FLAC sources are copied as
    they are); "duration" in the json is recomputed from the decoded audio. A clip that cannot
    be read is logged and skipped, and counted in "skipped". A shard is closed when adding the
    next clip would pass `max_shard_mb` (MiB) or when it holds `max_shard_count` clips.
    Shards left in `out_dir` by an earlier, larger run are removed. Returns the index:
    {"shards": [{"name", "count", "seconds"}], "count", "seconds", "skipped"}.

    A manifest without rows, or none of whose clips can be read, is a ValueError naming it,
    and `out_dir` is left as it was (an earlier shard set there stays whole).
    """
    rows = read_manifest(manifest_path)
    if not rows:
        raise ValueError(f"{manifest_path}: no utterances in the manifest; nothing written")
    out = Path(out_dir)
    max_bytes = max_shard_mb * 1024 * 1024
    shards: list[dict] = []
    skipped = 0
    first_error = ""
    writer: _ShardWriter | None = None
    try:
        for row in tqdm(rows, desc=f"shards {out}", unit="utt", disable=progress_disabled(progress)):
            try:
                flac, seconds = _encode(row["audio"])
            except (AudioError, OSError) as e:
                log.warning("skipping %s (%s): %s", row["id"], row["audio"], e)
                skipped += 1
                first_error = first_error or f"{row['id']}: {e}"
                continue
            meta = {k: v for k, v in row.items() if k != "audio"}
            meta["duration"] = seconds
            members = {"flac": flac, "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")}
            size = sum(len(v) + 1024 for v in members.values())
            if writer is not None and (
                writer.bytes + size > max_bytes or (max_shard_count is not None and writer.count >= max_shard_count)
            ):
                shards.append(writer.close())
                writer = None
            if writer is None:
                if not shards:  # the first clip that can be stored: from here on out_dir changes
                    out.mkdir(parents=True, exist_ok=True)
                    (out / INDEX).unlink(missing_ok=True)  # no index pointing at half-rewritten shards
                writer = _ShardWriter(out / f"{len(shards):06d}.tar")
            writer.add(id_to_key(row["id"]), members, seconds)
        if writer is not None:
            shards.append(writer.close())
            writer = None
    finally:
        if writer is not None:
            writer.abort()
    if not shards:
        raise ValueError(
            f"no clip of {manifest_path} could be read; nothing written ({skipped} unreadable, the first {first_error})"
        )
    names = {s["name"] for s in shards}
    for stale in out.iterdir():
        if _SHARD_NAME.match(stale.name) and stale.name not in names:
            stale.unlink()
    index = {
        "shards": shards,
        "count": sum(s["count"] for s in shards),
        "seconds": round(sum(s["seconds"] for s in shards), 3),
        "skipped": skipped,
    }
    _atomic_json(index, out / INDEX)
    if skipped:
        log.warning("%s: %d of %d clips skipped (unreadable)", out, skipped, len(rows))
    return index


# ---------------------------------------------------------------------------------- reading


def _resolve_shards(shards) -> tuple[list[str], int | None]:
    """Shard paths or URLs (and the total sample count when an index says it) from a dir, an
    index.json, one tar, a list of tars, a brace list or a URL: `sources.resolve_shards`."""
    return resolve_shards(shards)


_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # key, extension: webdataset's split at the first dot
_ZEROS = bytes(tarfile.BLOCKSIZE)


class _Tap:
    """tarfile's stream, watched: where its latest read began and what it gave. After the last
    member that is the block where tarfile looked for one more header."""

    def __init__(self, stream):
        self.stream, self.at, self.last = stream, None, b""

    def read(self, size=-1) -> bytes:
        self.at = self.stream.tell()
        self.last = self.stream.read(size)
        return self.last

    def __getattr__(self, name):  # tell, seek, close: the stream's own
        return getattr(self.stream, name)


class TarEndError(tarfile.ReadError):
    """A tar that does not end where tarfile stopped reading it: cut short, or a corrupt header."""


def _end_problem(tar: tarfile.TarFile, tap: _Tap, samples: int) -> str | None:
    """None when the archive ended where tarfile stopped with its end-of-archive marker (two
    zero blocks) and nothing but zeros after it; else what went wrong. tarfile stops without an
    error at the end of the data, inside a header, at a corrupt one or at the marker of the
    first of two tars joined, so such a shard would otherwise look whole."""
    if tap.at is None:  # tarfile met the end at its first block, while opening: a zero block
        block, at = _ZEROS, 0
    elif tap.at == tar.offset:
        block, at = tap.last, tar.offset
    else:
        return None  # not where tarfile looked: nothing to judge by
    if not block:
        return f"truncated: the tar ends without its end-of-archive marker, after {samples} sample(s)"
    if len(block) < tarfile.BLOCKSIZE:
        return f"truncated: the tar ends inside a header at byte {at}"
    if block != _ZEROS:
        return f"a corrupt tar header at byte {at}; the rest of the shard was not read"
    second = tap.read(tarfile.BLOCKSIZE)
    if len(second) < tarfile.BLOCKSIZE:
        return "truncated: the tar ends inside its end-of-archive marker (two zero blocks)"
    while True:  # after the marker only padding: what else is there was not read
        rest = tap.read(1 << 16)
        if not rest:
            return None
        if rest.count(0) != len(rest):
            return f"data after the end-of-archive marker at byte {at} (tars joined with cat?) was not read"


def _tar_samples(shard: str, stream) -> Iterator[dict]:
    """Samples {"__key__", "__url__", ext: bytes, ...} of a tar stream: files grouped by key
    (the name up to the first dot of its base name) while the key stays the same and no
    extension repeats. At the end, a TarEndError unless the archive closed properly."""
    tar = tarfile.open(fileobj=stream, mode="r|*")
    tap = tar.fileobj = _Tap(tar.fileobj)
    sample: dict | None = None
    samples = 0
    for info in tar:
        m = _MEMBER.match(info.name) if info.isreg() else None
        if m is not None and not (info.name.startswith("__") and info.name.endswith("__")):
            key, ext = m.group(1), m.group(2).lower()
            if sample is not None and (sample["__key__"] != key or ext in sample):
                samples += 1
                yield sample
                sample = None
            sample = sample or {"__key__": key, "__url__": shard}
            sample[ext] = tar.extractfile(info).read()
        tar.members = []  # a stream's members need not be kept
    if sample is not None:
        samples += 1
        yield sample
    problem = _end_problem(tar, tap, samples)
    if problem is not None:
        raise TarEndError(problem)


def missing_record(shard: str, missing: int, expected: int) -> tuple[str, str, str]:
    """The drop record of samples an index lists but a tar did not give (ids unknown)."""
    return (shard, "missing", f"{missing} of the {expected} samples its index lists were not read")


def _utterances(kind: str, detail: str) -> int:
    """Utterances one drop record stands for: a shard's missing ones by count, none for a
    shard's read error (its cost shows as missing, or cannot be known without an index)."""
    return int(detail.split()[0]) if kind == "missing" else 0 if kind == "shard_error" else 1


# dropped, but not lost: a sample with nothing for this model's heads to score (e.g. another
# head's labels) has no place in its figures
NOT_LOST = ("no_target",)


def lost_count(dropped: list[tuple[str, str, str]]) -> int:
    """Utterances lost according to drop records."""
    return sum(_utterances(kind, detail) for _, kind, detail in dropped if kind not in NOT_LOST)


def lost_summary(dropped: list[tuple[str, str, str]], first: int = 3, verb: str = "lost") -> str:
    """ "N utterance(s) lost (kind n, ...), e.g. id (kind: detail), ..." for an error or a log
    line (shard read errors are counted as errors, not utterances)."""
    kinds: dict[str, int] = {}
    for _, kind, detail in dropped:
        kinds[kind] = kinds.get(kind, 0) + (1 if kind == "shard_error" else _utterances(kind, detail))
    examples = ", ".join(f"{u} ({kind}: {detail})" for u, kind, detail in dropped[:first])
    counts = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    n = sum(_utterances(kind, detail) for _, kind, detail in dropped)
    return f"{n} utterance(s) {verb} ({counts}), e.g. {examples}"


class IncompleteSetError(ValueError):
    """A pass over a shard set (decode, evaluate, validation) lost utterances; raised after
    everything it could compute was written, unless the caller allows a partial set."""


def loss_report(scored: int, dropped: list[tuple[str, str, str]], expected: int | None) -> str | None:
    """None when a pass over a shard set scored all of it (as far as its index tells); else
    one line saying how much was scored and what was lost, for a reader that must not report
    figures over a silent subset (decode, evaluate, validation)."""
    lost = lost_count(dropped)
    unscorable = sum(kind in NOT_LOST for _, kind, _ in dropped)
    unaccounted = max(0, expected - scored - lost - unscorable) if expected is not None else 0
    broken = any(kind == "shard_error" for _, kind, _ in dropped)
    if not (lost or unaccounted or broken):
        return None
    parts = [f"{scored} of {expected if expected is not None else 'an unknown number of'} utterances scored"]
    if lost or broken:
        parts.append(lost_summary([d for d in dropped if d[1] not in NOT_LOST]))
    if unaccounted:
        parts.append(f"{unaccounted} more that the index lists were never read")
    return "; ".join(parts)


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _buffer_shuffle(items: Iterable, rng: random.Random, size: int) -> Iterator:
    """Streaming shuffle: hold `size` items, emit a random one as each new one arrives."""
    buf: list = []
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        i = rng.randrange(size)
        yield buf[i]
        buf[i] = x
    rng.shuffle(buf)
    yield from buf


class ShardDataset(IterableDataset):
    """Samples from shards, each yielded exactly once per epoch over all (rank, worker) slots.

    Split: slot = rank * num_workers + worker. With at least as many shards as slots, slot s
    reads shards s, s + n_slots, ... of the epoch's shard order: each shard has exactly one
    reader. With fewer shards than slots every slot reads all shards in the same order and
    keeps the samples whose running index % n_slots == s (the index counts every sample of
    the tar, readable or not, so all slots agree on it). Either way the epoch is an exact
    partition. Slots may get different numbers of samples; a DDP trainer has to allow for
    that (e.g. `Join`, or stopping at the shortest rank).

    Order is a function of (seed, epoch, rank, world_size, worker, num_workers) only: shard
    order from (seed, epoch), the sample buffer from that plus the slot. So a resumed run
    replays an epoch exactly. Call `set_epoch` before each epoch (with non-persistent
    DataLoader workers, which get a fresh copy of the dataset each epoch).

    rank/world_size default to torch.distributed's, read when the dataset is built (so build
    it after `init_process_group`). A sample that cannot be decoded, or the rest of a
    truncated tar, is logged and skipped and counted in `self.skipped` (per process: in
    DataLoader workers the count stays in the worker's copy).
    """

    def __init__(
        self,
        shards,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        transform: Callable[[dict], object] | None = None,
        shuffle_buffer: int = 1000,
    ):
        self.shards, counts = resolve_shard_counts(shards)
        if not self.shards:
            raise ValueError(f"no shards found in {shards!r}")
        # what each shard holds by its index: a tar that yields fewer (a corrupt header ends
        # Python's tar reader without an error) is reported, not silently short
        self.expected = {s: c for s, c in zip(self.shards, counts or []) if c is not None}
        known = counts is not None and len(self.expected) == len(self.shards)
        self.num_samples = sum(self.expected.values()) if known else None
        dist_rank, dist_world = _dist_rank_world()
        self.rank = dist_rank if rank is None else int(rank)
        self.world_size = dist_world if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world_size {self.world_size}")
        self.shuffle, self.seed, self.transform = shuffle, seed, transform
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0
        self.skipped = 0
        self.dropped: list[tuple[str, str, str]] = []  # since the last take_dropped()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _slot(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * workers + worker, self.world_size * workers

    def _skip(self, where: str, reason, kind: str = "unreadable") -> None:
        """Log and record a sample that cannot be used, or (kind "shard_error") a tar that
        cannot be opened or read on: what it cost is counted against its index at its end."""
        self.skipped += 1
        reason = str(reason)  # an AudioError already names the sample
        log.warning("skipped %s", reason if reason.startswith(where) else f"{where}: {reason}")
        self.dropped.append((where, kind, reason))

    def take_dropped(self) -> list[tuple[str, str, str]]:
        """(utterance or shard, kind, detail) of every sample dropped since the last call, here
        and in the transform (a Featurizer's over-long, untargeted or infeasible utterances)."""
        out, self.dropped = self.dropped, []
        take = getattr(self.transform, "take_dropped", None)
        return out + (take() if take is not None else [])

    def _read(self, shard: str, report_missing: bool = True) -> Iterator[dict]:
        """Raw samples {"__key__", "__url__", "flac", "json"} of one tar. A tar that cannot be
        opened, breaks off, or ends without its end-of-archive marker (cut short) is recorded
        as a shard error; at its end, fewer samples than the shard's index count as missing."""
        n = 0
        try:
            with open_shard(shard) as f:  # a local file, a URL's or a command's output
                for sample in _tar_samples(shard, f):
                    n += 1
                    yield sample
        except Exception as e:  # tarfile, the stream, the decompressor: the shard ends here
            plain = isinstance(e, (TarEndError, OSError))  # their messages say what happened
            self._skip(shard, str(e) if plain else f"{type(e).__name__}: {e}", "shard_error")
        expected = self.expected.get(shard)
        if report_missing and expected is not None and n < expected:  # read to its end, short
            self.skipped += expected - n
            log.warning("%s: %d of the %d samples its index lists were not read", shard, expected - n, expected)
            self.dropped.append(missing_record(shard, expected - n, expected))

    def _decode(self, raw: dict) -> dict | None:
        key, shard = raw.get("__key__", "?"), raw.get("__url__", "?")
        where = f"{shard}:{key}"
        try:
            meta = json.loads(raw["json"])
            if not isinstance(meta, dict):
                raise ValueError("json is not an object")
            wav = load_audio(raw["flac"], name=where)
        except KeyError as e:
            self._skip(where, f"missing member .{e.args[0]}")
            return None
        except (ValueError, TypeError) as e:  # AudioError, JSONDecodeError, UnicodeDecodeError
            self._skip(where, e)
            return None
        sample = {"id": key_to_id(key), **meta}
        sample["wav"] = wav
        return sample

    def records(self) -> Iterator[dict]:
        """This slot's raw samples in epoch order (split and shuffled), audio still FLAC bytes."""
        slot, n_slots = self._slot()
        shards = list(self.shards)
        if self.shuffle:
            random.Random(f"shards:{self.seed}:{self.epoch}").shuffle(shards)
        if len(shards) >= n_slots:
            raw = (s for shard in shards[slot::n_slots] for s in self._read(shard))
        else:  # every slot reads every shard: one of them reports what a shard lacks
            everything = (s for shard in shards for s in self._read(shard, report_missing=slot == 0))
            raw = (s for i, s in enumerate(everything) if i % n_slots == slot)
        if self.shuffle and self.shuffle_buffer > 1:
            rng = random.Random(f"samples:{self.seed}:{self.epoch}:{slot}:{n_slots}")
            raw = _buffer_shuffle(raw, rng, self.shuffle_buffer)
        return raw

    def prepare(self, raw: dict):
        """A raw sample decoded and transformed, with its "shard"; None if it is dropped (and
        recorded). A transform that fails on one sample (a transcript or label it cannot use,
        audio too short to featurise) drops that sample alone, recorded under shard:key."""
        sample = self._decode(raw)
        if sample is not None and self.transform is not None:
            try:
                sample = self.transform(sample)  # a transform may reject a sample with None
            except Exception as e:  # this sample's content: the others go on
                self._skip(
                    f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}", f"{type(e).__name__}: {e}", "unusable"
                )
                return None
        if isinstance(sample, dict):
            sample["shard"] = raw.get("__url__")  # where it came from, for a reader to name
        return sample

    def seconds(self, raw: dict) -> float | None:
        """How long a raw sample will be once transformed (its json's duration, through the
        transform's `plan`, e.g. speed perturbation), read without decoding the audio; None if
        the transform drops it already (and records why). A sample whose json cannot be read
        counts 0 s: decoding it reports the problem."""
        try:
            meta = json.loads(raw["json"])
            seconds = meta.get("duration") if isinstance(meta, dict) else None
            if seconds is None:  # not written by write_shards: the FLAC header has it
                info = sf.info(io.BytesIO(raw["flac"]))
                seconds = info.frames / info.samplerate
        except Exception:
            return 0.0
        plan = getattr(self.transform, "plan", None)
        if plan is None:
            return float(seconds)
        return plan(
            {"id": key_to_id(raw.get("__key__", "?")), "duration": float(seconds), "repeat": raw.get("__repeat__")}
        )

    def __iter__(self) -> Iterator:
        for r in self.records():  # decode after the buffer: it holds FLAC bytes, not waveforms
            sample = self.prepare(r)
            if sample is not None:
                yield sample


# --------------------------------------------------------------------------------- batching


def sample_duration(sample: dict) -> float:
    """Seconds of a sample: its "duration" field, else the length of its waveform."""
    d = sample.get("duration")
    if d is None:
        d = sample["wav"].shape[-1] / SAMPLE_RATE
    return float(d)


class BatchedShardDataset(IterableDataset):
    """Dynamic batches of similar-length utterances under a padded-seconds budget.

    Holds up to `bucket_buffer` samples, sorts them by duration into `num_buckets` equal-count
    buckets, shuffles within each bucket and cuts batches greedily so that
    len(batch) * longest <= max_batch_seconds, len(batch) * longest**2 <= max_batch_seconds2
    (padded attention work grows with the square of the length) and len <= max_batch_size.
    `num_buckets=0` sorts the whole buffer and cuts it in order, without shuffling (torchtext's
    "pool" batching): the least padding (about 1-2% on a LibriSpeech-like mix, against 7-10%
    with 8 buckets; bench/README.md), while batches still vary across epochs because the
    buffer holds a different random draw of the stream. Batches are yielded in shuffled
    order. The unfinished last batch of each bucket goes back into the buffer to be completed
    by later samples instead of being emitted small. One utterance longer than the budget
    makes a batch alone. Deterministic from (seed, epoch) and the source's order. Use
    `DataLoader(ds, batch_size=None, num_workers=k)`.

    Over a ShardDataset the buffer holds raw samples (FLAC bytes and json, about 20 kB per
    second of speech), sorted by the duration their json gives (through the transform's
    `plan`: speed perturbation); a batch is decoded and featurised only when it is emitted,
    and after each emitted batch as many new samples are read as it held. So a worker's work
    is spread evenly over its batches (no refill burst in which the trainer waits), and its
    memory is the compressed audio of `bucket_buffer` clips, not their features (2.5x more).
    The batches are the same as cutting after a burst refill. Other sources (an iterable of
    sample dicts with "duration") are buffered as they are.

    With the pipeline's dict collate, every emitted batch carries "dropped": the (id, kind,
    detail) of the samples dropped since the previous batch (unreadable, too long, no target,
    infeasible); a batch all of whose samples were dropped is emitted as {"dropped": [...]}
    alone, and so are drops after the last batch, so a reader can count everything it lost.
    """

    def __init__(
        self,
        source: Iterable[dict],
        collate: Callable[[list], object],
        max_batch_seconds: float,
        max_batch_size: int | None = None,
        num_buckets: int = 8,
        bucket_buffer: int = 2000,
        seed: int = 0,
        shuffle: bool = True,
        max_batch_seconds2: float | None = None,
    ):
        if max_batch_seconds <= 0:
            raise ValueError("max_batch_seconds must be > 0")
        self.source, self.collate = source, collate
        self.max_batch_seconds, self.max_batch_size = float(max_batch_seconds), max_batch_size
        self.max_batch_seconds2 = max_batch_seconds2
        self.num_buckets, self.bucket_buffer = max(0, num_buckets), max(1, bucket_buffer)
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def _cut(self, items: list, rng: random.Random, final: bool) -> tuple[list, list]:
        """(batches ready to emit, samples to keep) from (duration, sample) pairs."""
        items.sort(key=lambda x: x[0])
        n = len(items)
        k = min(self.num_buckets, n) if self.num_buckets else 1
        closed, open_ = [], []
        for b in range(k):
            bucket = items[b * n // k : (b + 1) * n // k]
            if self.shuffle and self.num_buckets:
                rng.shuffle(bucket)
            batch, longest = [], 0.0
            for d, s in bucket:
                top = max(longest, d)
                full = self.max_batch_size is not None and len(batch) >= self.max_batch_size
                full = full or (len(batch) + 1) * top > self.max_batch_seconds
                if self.max_batch_seconds2 is not None:
                    full = full or (len(batch) + 1) * top * top > self.max_batch_seconds2
                if batch and full:
                    closed.append(batch)
                    batch, top = [], d
                batch.append((d, s))
                longest = top
            if batch:
                open_.append(batch)
        if final or not closed:  # nothing would leave the buffer: emit everything
            closed, open_ = closed + open_, []
        if self.shuffle:
            rng.shuffle(closed)
        return closed, [x for batch in open_ for x in batch]

    def _prepare(self, item, lazy: bool):
        return self.source.prepare(item) if lazy else item

    def _emit(self, batch: list, lazy: bool):
        items = [s for s in (self._prepare(x, lazy) for _, x in batch) if s is not None]
        out = self.collate(items) if items else None
        take = getattr(self.source, "take_dropped", None)
        dropped = take() if take is not None else []
        if out is None:
            return {"dropped": dropped}
        if isinstance(out, dict):
            out["dropped"] = dropped
        return out

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rank = getattr(self.source, "rank", 0)
        rng = random.Random(f"batches:{self.seed}:{self.epoch}:{rank}:{worker}")
        lazy = isinstance(self.source, ShardDataset)
        stream = iter(self.source.records() if lazy else self.source)
        buf: list = []

        def read(n: int) -> bool:
            """Up to n more (duration, sample) pairs into buf; False once the stream has ended."""
            while n > 0:
                x = next(stream, None)
                if x is None:
                    return False
                d = self.source.seconds(x) if lazy else sample_duration(x)
                if d is not None:  # None: the transform dropped it (recorded there)
                    buf.append((d, x))
                    n -= 1
            return True

        ended = not read(self.bucket_buffer)
        while not ended:
            batches, buf = self._cut(buf, rng, final=False)
            batches.reverse()
            while batches:  # popped, so an emitted batch's samples are freed: one buffer held, not two
                batch = batches.pop()
                yield self._emit(batch, lazy)
                ended = ended or not read(len(batch))  # refill as we go, not in one burst
        batches, _ = self._cut(buf, rng, final=True)
        batches.reverse()
        while batches:
            yield self._emit(batches.pop(), lazy)
        take = getattr(self.source, "take_dropped", None)
        dropped = take() if take is not None else []
        if dropped:
            yield {"dropped": dropped}
