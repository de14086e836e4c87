"""Log lines: timestamped on stderr and, for a run, in its exp_dir/log.txt."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(exp_dir: str | Path | None = None) -> None:
    """Timestamped log lines on stderr and, for a run, in exp_dir/log.txt (rank 0 only)."""
    fmt = logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        h = logging.StreamHandler()
        h.setFormatter(fmt)
        root.addHandler(h)
    if exp_dir is not None and os.environ.get("RANK", "0") == "0":
        Path(exp_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(exp_dir) / "log.txt")
        fh.setFormatter(fmt)
        root.addHandler(fh)


def progress_disabled(progress: bool = True) -> bool:
    """tqdm's `disable=`: True when `progress` is off or stderr is not a terminal, so that a bar
    never writes its carriage-return redraws into a log file (a recipe's, a job scheduler's)."""
    if not progress:
        return True
    try:
        return not sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return True
