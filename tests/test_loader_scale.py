"""bench/loader_scale.py at toy size, so that the LibriSpeech-960 loader simulation cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "loader_scale.py"


def test_loader_scale_toy(tmp_path):
    out = tmp_path / "res.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--utterances", "300",
        "--shard-mb", "16",
        "--workers", "2",
        "--bucket-buffer", "60",
        "--max-batches", "5",
        "--featurize-speed", "0",
        "--max-seconds", "3600",  # a hang guard only: --max-batches ends the run
        "--shards-dir", str(tmp_path / "shards"),
        "--json", str(out),
    ]  # fmt: skip
    # a subprocess: the script replaces FLAC decoding and fbank in the process it runs in
    subprocess.run(cmd, check=True, timeout=3600, capture_output=True, text=True)
    res = json.loads(out.read_text())
    assert res["stand_ins_in_workers"] is True  # the workers ran the stand-ins
    assert res["stopped_by"] == "--max-batches" and res["batches"] == 5
    assert res["shards"]["shards"] >= 2 and res["shards"]["utterances"] == 300
    assert res["corpus"]["utterances"] == 281241 and 12.0 < res["corpus"]["mean_s"] < 12.6
    assert 0 <= res["padding_fraction"] < 1
    assert res["first_batch_s"] > 0 and len(res["batch_log"]) == 5
    assert res["longest_wait_after_warmup_s"] is not None and res["wait_p50_s"] is not None
    # workers are sampled once a second: in a run this short one may end before it is seen
    assert 1 <= len(res["worker_peak_rss_gib"]) <= 2 and res["worker_peak_rss_max_gib"] > 0
    assert res["main_peak_rss_gib"] > 0 and res["audio_hours"] > 0
    for key in ("wait_p99_s", "waits_over_stall", "step_budget_s", "elapsed_s", "dropped_utterances"):
        assert key in res
