"""The environment is the one uv.lock describes, and torchaudio's compiled library loads in it.

`make` installs exactly uv.lock; a package upgraded or added by hand afterwards makes every
later figure unreproducible, so the suite says so first. Set ASTCTC_SKIP_LOCK_CHECK=1 to run the
tests in an environment of your own (a pip install of the library's ranges).
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_differences(lock_path: Path, dists) -> list[str]:
    """Installed distributions that uv.lock does not pin at that version, one line each."""
    with open(lock_path, "rb") as f:
        lock = tomllib.load(f)
    pinned: dict[str, set[str]] = {}
    for pkg in lock["package"]:  # a package can be locked at two versions (one per Python fork)
        pinned.setdefault(_norm(pkg["name"]), set()).add(pkg["version"])
    problems = []
    for d in dists:
        name, version = _norm(d.metadata["Name"]), d.version
        if name not in pinned:
            problems.append(f"{name}=={version} is installed but not in uv.lock")
        elif version not in pinned[name]:
            want = " or ".join(sorted(pinned[name]))
            problems.append(f"{name}=={version} is installed but uv.lock pins {want}")
    return sorted(problems)


def _installed():
    # site-packages itself: setuptools puts its _vendor folder (own dist-infos) on sys.path once imported
    return [d for d in metadata.distributions(path=[p for p in sys.path if Path(p).name == "site-packages"])]


@pytest.mark.skipif(os.environ.get("ASTCTC_SKIP_LOCK_CHECK") == "1", reason="ASTCTC_SKIP_LOCK_CHECK=1")
def test_environment_matches_lock():
    problems = lock_differences(REPO / "uv.lock", _installed())
    assert not problems, (
        "the environment differs from uv.lock (`make sync` restores it; `make lock` refreshes the "
        "lock):\n  " + "\n  ".join(problems)
    )


def test_lock_check_names_a_changed_package(tmp_path):
    """The check itself: a version bumped by hand and a package added by hand are both named."""
    (tmp_path / "uv.lock").write_text(
        'version = 1\n[[package]]\nname = "jiwer"\nversion = "4.0.0"\n'
        '[[package]]\nname = "Torch_Audio"\nversion = "2.11.0"\n'
    )

    class Dist:
        def __init__(self, name, version):
            self.metadata, self.version = {"Name": name}, version

    assert lock_differences(tmp_path / "uv.lock", [Dist("jiwer", "4.0.0"), Dist("torch.audio", "2.11.0")]) == []
    assert lock_differences(tmp_path / "uv.lock", [Dist("jiwer", "4.1.0"), Dist("six", "1.16.0")]) == [
        "jiwer==4.1.0 is installed but uv.lock pins 4.0.0",
        "six==1.16.0 is installed but not in uv.lock",
    ]


def test_torch_and_torchaudio_are_the_locked_pair():
    import torch
    import torchaudio

    with open(REPO / "uv.lock", "rb") as f:
        lock = {p["name"]: p["version"] for p in tomllib.load(f)["package"]}
    assert torch.__version__.split("+")[0] == lock["torch"]
    assert torchaudio.__version__.split("+")[0] == lock["torchaudio"]


def test_torchaudio_compiled_ops_on_a_real_clip(shared_data):
    """libtorchaudio loads (the failure a mismatched torch gives), and resampling and Kaldi
    fbank run on real speech with the expected shapes and sane values."""
    import torch
    import torchaudio
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as AF
    from torchaudio._extension import _IS_TORCHAUDIO_EXT_AVAILABLE

    from astctc.audio import load_audio

    assert _IS_TORCHAUDIO_EXT_AVAILABLE, f"torchaudio {torchaudio.__version__}'s compiled library did not load"
    # forced_align and lfilter's loop are libtorchaudio's compiled kernels
    y = AF.lfilter(torch.randn(1, 400), torch.tensor([1.0, -0.5]), torch.tensor([0.5, 0.0]))
    assert y.shape == (1, 400) and torch.isfinite(y).all()
    log_probs = torch.full((1, 6, 3), -10.0)
    log_probs[0, [0, 1, 2, 3, 4, 5], [1, 1, 0, 2, 2, 0]] = 0.0  # frames say a a - b b -
    path, _ = AF.forced_align(log_probs, torch.tensor([[1, 2]], dtype=torch.int32), blank=0)
    assert path.tolist() == [[1, 1, 0, 2, 2, 0]]

    clip = next((shared_data / "ljspeech_lj001").rglob("*.flac"))
    wav = load_audio(str(clip))  # 16 kHz mono float
    assert wav.dim() == 1 and wav.numel() > 16000, clip
    down = AF.resample(wav, 16000, 8000)
    assert abs(down.numel() - wav.numel() / 2) <= 1
    # a band-limited round trip keeps most of the speech energy (it lies below 4 kHz)
    back = AF.resample(down, 8000, 16000)[: wav.numel()]
    assert float((back - wav).pow(2).sum() / wav.pow(2).sum()) < 0.2
    feats = kaldi.fbank(
        wav.unsqueeze(0) * 32768,
        num_mel_bins=128,
        sample_frequency=16000,
        frame_length=25,
        frame_shift=10,
        dither=0.0,
        window_type="hanning",
        htk_compat=True,
    )
    assert feats.shape == (1 + (wav.numel() - 400) // 160, 128)
    assert torch.isfinite(feats).all() and feats.std() > 1.0
