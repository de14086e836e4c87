"""One shard set made of several, by reference: an index.json whose shard names point into
the other sets' directories (the reader joins each name to the index's directory), so a
training set can be the union of corpora, or of cross-validation folds, without copies.

The names climb out of the index's directory with '..', which a local index may do; an index
read by URL or through a `pipe:` command may not (`sources._name_problem`), so a combined set is
read from disk, and remote sets are joined with a brace list instead: https://host/{a,b}/{...}.tar."""

from __future__ import annotations

import json
import os
from pathlib import Path


def combine_shards(shard_dirs, out_dir: str | Path) -> dict:
    """Write out_dir/index.json over the shards of every directory in `shard_dirs`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards, count, seconds, skipped = [], 0, 0.0, 0
    for d in shard_dirs:
        index = json.loads((Path(d) / "index.json").read_text(encoding="utf-8"))
        for s in index["shards"]:
            rel = os.path.relpath(Path(d) / s["name"], out)
            shards.append(dict(s, name=Path(rel).as_posix()))
        count += index["count"]
        seconds += index["seconds"]
        skipped += index.get("skipped", 0)
    combined = {"shards": shards, "count": count, "seconds": round(seconds, 3), "skipped": skipped}
    (out / "index.json").write_text(json.dumps(combined, indent=1) + "\n", encoding="utf-8")
    return combined
