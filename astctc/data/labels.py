"""Classifier labels in manifests: copy a row field into `labels`, and write a head's class list.

The hook for heads beside CTC whose label is already a manifest field, e.g. FLEURS language
identification: `language: "en_us"` -> `labels: {"lang": "en_us"}`, and the sorted language
list -> data/labels/lang.txt, which a head reads with `labels_file:`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .manifest import read_manifest, write_manifest
from .sampling import sample_classes


class LabelSpec(Protocol):
    """What making a target from a row's label needs to know of a head (models.heads.ClassifierConfig)."""

    num_classes: int
    multi_label: bool
    classes: list[str] | None  # names, index = class id; None: labels are class indices


def label_from_field(rows: list[dict], head: str, field: str) -> list[dict]:
    """labels[head] = row[field] for every row where the field is set (rows changed in place)."""
    for r in rows:
        if r.get(field) not in (None, ""):
            r.setdefault("labels", {})[head] = r[field]
    return rows


def head_classes(manifests, head: str) -> list[str]:
    """Sorted class names that rows of the manifests give `head`."""
    names = set()
    for m in manifests:
        for r in read_manifest(m):
            names.update(sample_classes(r, head))
    return sorted(names)


def write_labels_file(classes: list[str], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
    return path


def label_manifests(manifests, head: str, field: str | None, labels_file: str | Path | None) -> list[str]:
    """Rewrite each manifest with labels[head] from `field` (if given); write the class list of
    `head` over all of them to `labels_file` (if given). Returns the classes."""
    for m in manifests:
        rows = read_manifest(m)
        if field:
            label_from_field(rows, head, field)
        write_manifest(rows, m)
    classes = head_classes(manifests, head)
    if not classes:
        raise ValueError(f"{', '.join(map(str, manifests))}: no row has a label for head {head!r}")
    if labels_file:
        write_labels_file(classes, labels_file)
    return classes
