"""Peak memory and wall time of `astctc transcribe` on one long file (bench/README.md).

    .venv/bin/python bench/transcribe_memory.py --hours 3
    .venv/bin/python bench/transcribe_memory.py --hours 1 --code /tmp/old_tx   # another checkout

Builds (once, cached under --work) a 16 kHz mono FLAC of real speech, the LJSpeech LJ001 clips
of ../shared/data concatenated and repeated to --hours, written block by block so that building
it holds one clip at a time; and a model directory with the mini recipe's architecture
(recipes/mini/conf/train.yaml) and random weights: memory and time do not depend on the weights,
only on the architecture, the window length and the file. Then runs `astctc transcribe` on the
file in a child process (`python -m astctc.cli`, with --code first on PYTHONPATH when given) and
prints its peak RSS (the kernel's ru_maxrss of that child, from wait4) and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASTCTC_SHARED_DATA", REPO.parent / "shared" / "data"))


def build_audio(path: Path, hours: float) -> float:
    """Write `hours` of real speech (LJ001 clips, repeated) to `path`; returns its seconds."""
    import soundfile as sf

    clips = sorted((SHARED / "ljspeech_lj001" / "wavs").glob("*.flac"))
    if not clips:
        sys.exit(f"no LJSpeech clips under {SHARED / 'ljspeech_lj001' / 'wavs'} (set ASTCTC_SHARED_DATA)")
    target = int(hours * 3600 * 16000)
    written = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.flac")
    with sf.SoundFile(str(tmp), "w", samplerate=16000, channels=1, format="FLAC", subtype="PCM_16") as out:
        while written < target:
            for clip in clips:
                data, sr = sf.read(str(clip), dtype="int16")
                if sr != 16000 or data.ndim != 1:
                    sys.exit(f"{clip}: expected 16 kHz mono, got {sr} Hz {data.shape}")
                data = data[: target - written]
                out.write(data)
                written += len(data)
                if written >= target:
                    break
    tmp.rename(path)
    return written / 16000


def build_model(directory: Path) -> None:
    """The mini recipe's model (random weights, seed 0) with a character tokenizer."""
    import torch
    import yaml

    from astctc.config import from_dict
    from astctc.features import FeatureConfig
    from astctc.models.model import ASTModel, ModelConfig
    from astctc.tokenizer import CharTokenizer

    conf = yaml.safe_load((REPO / "recipes" / "mini" / "conf" / "train.yaml").read_text())
    tok = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz' "])
    conf["model"].setdefault("ctc", {})["vocab_size"] = tok.vocab_size
    cfg = from_dict(ModelConfig, conf["model"])
    torch.manual_seed(0)
    ASTModel(cfg).save(directory, FeatureConfig(), tok)


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float, float]:
    """(exit status, peak RSS in bytes, wall seconds) of `cmd` run as a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_maxrss * 1024, wall  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=3.0, help="length of the test file")
    ap.add_argument("--work", type=Path, default=Path("/tmp/astctc_transcribe_memory"), help="cache directory")
    ap.add_argument("--code", type=Path, default=None, help="checkout whose astctc to run (default: this one)")
    ap.add_argument("--format", default="text", choices=["text", "json", "srt"], help="transcribe's --format")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()

    a.work = a.work.resolve()
    audio = a.work / f"speech_{a.hours:g}h.flac"
    if not audio.exists():
        t0 = time.perf_counter()
        seconds = build_audio(audio, a.hours)
        took = time.perf_counter() - t0
        print(f"built {audio}: {seconds / 3600:.2f} h, {audio.stat().st_size / 1e6:.0f} MB in {took:.0f} s")
    model = a.work / "mini_random"
    if not (model / "model.safetensors").exists():
        build_model(model)

    code = (a.code or REPO).resolve()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, "-m", "astctc.cli", "transcribe", "--model", str(model), "--device", a.device]
    cmd += ["--format", a.format, str(audio)]
    # the code that will run: run from `code` (the script's directory comes first on sys.path,
    # then PYTHONPATH, then the editable install's finder)
    probe = [sys.executable, "-c", "import astctc; print(astctc.__file__)"]
    where = subprocess.run(probe, env=env, cwd=code, capture_output=True, text=True).stdout.strip()
    print(f"running {' '.join(cmd)}\n  astctc from {where}")
    rc, rss, wall = measure(cmd, env, code)
    fig = {
        "hours": a.hours,
        "format": a.format,
        "code": str(code),
        "exit": rc,
        "peak_rss_gb": round(rss / 1e9, 3),
        "peak_rss_gib": round(rss / 2**30, 3),
        "wall_s": round(wall, 1),
        "audio_s_per_s": round(a.hours * 3600 / wall, 1),
    }
    print(json.dumps(fig))
    if a.json:
        a.json.write_text(json.dumps(fig, indent=2) + "\n")
    if rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()
