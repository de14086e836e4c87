"""A run's records: rows in exp_dir/metrics.jsonl, the same as TensorBoard scalars, curves.png.
Only rank 0 keeps them; on the other ranks a Logbook does nothing."""

from __future__ import annotations

import json
from pathlib import Path


class Logbook:
    def __init__(self, exp: Path, rank: int, purge_step: int | None = None):
        self.exp = exp
        self.writer = None
        if rank == 0:
            # TensorBoard takes seconds to import: only a run (not `import astctc.train`) pays
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(exp / "tensorboard"), purge_step=purge_step)

    def write(self, row: dict) -> None:
        """A {"split", "step", "epoch", figure: value, ...} row: a line of metrics.jsonl, and a
        <split>/<figure> scalar for each figure."""
        if self.writer is None:
            return
        with open(self.exp / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k not in ("split", "step", "epoch"):
                self.writer.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def plot(self) -> None:
        if self.writer is None or not (self.exp / "metrics.jsonl").exists():
            return
        # matplotlib takes a second to import: only the first plot pays
        from ..plots import plot_curves

        plot_curves(self.exp / "metrics.jsonl", self.exp / "curves.png")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
