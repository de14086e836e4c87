"""bench/gpu_check.sh, the one script a GPU session runs, kept from rotting: it runs here at toy
size on the CPU (every section; the CUDA-only ones say so)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_at_toy_size_on_cpu(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--toy", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=3600,  # a hang guard only: the toy run has no time budget
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["failed"] == [] and result["skipped"] == []
    for section in ("varlen", "features", "backends", "decode", "smoke", "ddp", "resume", "trainer", "loader"):
        assert section in result["figures"], section
    rows = result["figures"]["backends"]
    assert "not_run" in rows["ast_s5/fa4/eager"]  # no CUDA here: the row says why
    assert all("audio_s_per_s" in rows[k] for k in rows if "/sdpa/" in k), rows  # eager, compiled, bf16 residual
    assert set(result["figures"]["decode"]) >= {"device", "loader"}  # log-mel on the device, and in the loader
    assert re.search(r"^\| check +\| result \| status \|$", proc.stdout, re.M)  # the one table
