"""Matching label names to a collection's images.

Names are matched by exact id, exact relative path, the longest unique suffix of path
components (tolerates ``./``, absolute paths and an images-root prefix), and finally by file
name where it is unique. Names that fit several images are reported as ambiguous, names that
fit none as unknown: neither is guessed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from imgrank_dagster.core.labels.formats import LabelEntry, list_label_files, read_files

MATCH_KINDS = ("id", "path", "file_name")
# class: the image's class (its most frequent, ties by first appearance), None without one;
# classes: every distinct class the entry gives it, in order of appearance.
_LABELLED_COLUMNS = ("image_id", "source_file", "line", "matched_by", "class", "classes")


@dataclass(frozen=True)
class LabelMatch:
    labelled: pd.DataFrame  # _LABELLED_COLUMNS; one row per image
    unknown: list[str]  # names matching no image, sorted
    ambiguous: dict[str, list[str]]  # name -> candidate image ids, both sorted
    skipped_files: list[str]
    labels_missing: bool = False
    # Where each unknown or ambiguous name first appears: name -> (source file, line).
    where: dict[str, tuple[str, int]] = field(default_factory=dict)
    # image id -> the other classes later entries give it (the first entry with classes wins)
    class_conflicts: dict[str, list[list[str]]] = field(default_factory=dict)

    @property
    def image_ids(self) -> list[str]:
        return self.labelled["image_id"].tolist()

    @property
    def image_classes(self) -> dict[str, list[str]]:
        """image id -> its classes (empty without)."""
        return dict(zip(self.image_ids, map(list, self.labelled["classes"]), strict=True))

    def summary(self, max_examples: int = 10) -> dict[str, Any]:
        """Counts and a few examples, JSON-serialisable (for run metadata and logs)."""
        counts = self.labelled["matched_by"].value_counts()
        classes = self.labelled["class"].value_counts()
        return {
            "labelled": len(self.labelled),
            "with_class": int(self.labelled["class"].notna().sum()),
            "classes": {str(name): int(count) for name, count in classes.items()},
            "class_conflicts": len(self.class_conflicts),
            "class_conflict_examples": dict(list(self.class_conflicts.items())[:max_examples]),
            "matched_by": {kind: int(counts.get(kind, 0)) for kind in MATCH_KINDS},
            "unknown": len(self.unknown),
            "unknown_examples": [short_name(name) for name in self.unknown[:max_examples]],
            "ambiguous": len(self.ambiguous),
            "ambiguous_examples": {
                short_name(name): candidates[:EXAMPLE_CANDIDATES]
                for name, candidates in list(self.ambiguous.items())[:max_examples]
            },
            "skipped_files": list(self.skipped_files),
            "labels_missing": self.labels_missing,
        }

    def problems(self) -> list[dict[str, Any]]:
        """One row per unknown or ambiguous name: name, file, line, problem."""
        rows = []
        for name in self.unknown:
            source, line = self.where.get(name, ("", 0))
            rows.append({"name": name, "file": source, "line": line, "problem": "matches no image"})
        for name, candidates in self.ambiguous.items():
            source, line = self.where.get(name, ("", 0))
            shown = ", ".join(candidates[:3]) + (" ..." if len(candidates) > 3 else "")
            problem = f"matches {len(candidates)} images: {shown}"
            rows.append({"name": name, "file": source, "line": line, "problem": problem})
        return rows


EXAMPLE_NAME_CHARS = 200
EXAMPLE_CANDIDATES = 20


def short_name(name: str, limit: int = EXAMPLE_NAME_CHARS) -> str:
    """A label name for a message: a name longer than limit is cut, with its length noted."""
    return name if len(name) <= limit else f"{name[:limit]}... ({len(name)} characters)"


def _normalise(name: str) -> str:
    """Forward slashes, no empty or "." components: "./a//b" and "/a/b" become "a/b"."""
    parts = name.strip().replace("\\", "/").split("/")
    return "/".join(part for part in parts if part not in ("", "."))


class _ImageIndex:
    def __init__(self, images: pd.DataFrame) -> None:
        missing = {"image_id", "path"} - set(images.columns)
        if missing:
            raise ValueError(f"images needs columns image_id and path; missing: {sorted(missing)}")
        image_ids = images["image_id"].tolist()
        # A rejected image without a file (a failed download, a name that is not UTF-8) has
        # no path: it is matched by its id only.
        paths = [path if isinstance(path, str) and path else None for path in images["path"]]
        bad = [value for value in image_ids if not isinstance(value, str) or not value]
        if bad:
            raise ValueError(f"images.image_id must hold non-empty strings, got {bad[:3]!r}")
        self.ids: set[str] = set(image_ids)
        if len(self.ids) != len(image_ids):
            duplicated = pd.Series(image_ids)[pd.Series(image_ids).duplicated()]
            raise ValueError(f"images.image_id has duplicates, e.g. {sorted(duplicated)[:5]}")
        self.by_path: dict[str, str] = {}
        for image_id, path in zip(image_ids, paths, strict=True):
            if path is None:
                continue
            normalised = _normalise(path)
            if normalised in self.by_path:
                raise ValueError(f"images.path has duplicates, e.g. {normalised!r}")
            self.by_path[normalised] = image_id

    @cached_property
    def by_suffix(self) -> dict[str, list[str]]:
        """Every suffix of two or more path components (the whole path included) -> image ids.

        Built on first use: label files that name images by id never need it.
        """
        by_suffix: dict[str, list[str]] = {}
        for normalised, image_id in self.by_path.items():
            parts = normalised.split("/")
            for size in range(2, len(parts) + 1):
                by_suffix.setdefault("/".join(parts[-size:]), []).append(image_id)
        return by_suffix

    @cached_property
    def by_file_name(self) -> dict[str, list[str]]:
        by_file_name: dict[str, list[str]] = {}
        for normalised, image_id in self.by_path.items():
            by_file_name.setdefault(normalised.rsplit("/", 1)[-1], []).append(image_id)
        return by_file_name

    def candidates(self, name: str) -> tuple[str | None, list[str]]:
        """(how it matched, candidate image ids): one id is a match, several are ambiguous."""
        key = _normalise(name)
        if not key:
            return None, []
        if key in self.ids:
            return "id", [key]
        if key in self.by_path:
            return "path", [self.by_path[key]]
        parts = key.split("/")
        # Longest suffix first: "root/images/seq-1/a.jpg" tries "images/seq-1/a.jpg", then
        # "seq-1/a.jpg"; it also finds "seq-1/a.jpg" when the image path is "city/seq-1/a.jpg".
        for size in range(len(parts), 1, -1):
            found = self.by_suffix.get("/".join(parts[-size:]))
            if found:
                return "path", found
        found = self.by_file_name.get(parts[-1])
        if found:
            return "file_name", found
        return None, []


def match_labels(entries: list[LabelEntry], images: pd.DataFrame) -> LabelMatch:
    """Match label entries to images (columns image_id, path). The first entry naming an
    image (files in name order, lines in order) is its provenance."""
    index = _ImageIndex(images)
    provenance: dict[str, tuple[str, int, str]] = {}
    classes: dict[str, tuple[str, ...]] = {}
    conflicts: dict[str, list[list[str]]] = {}
    unknown: set[str] = set()
    ambiguous: dict[str, list[str]] = {}
    resolved: dict[str, tuple[str | None, list[str]]] = {}
    where: dict[str, tuple[str, int]] = {}
    for entry in entries:
        if entry.name not in resolved:
            resolved[entry.name] = index.candidates(entry.name)
        matched_by, found = resolved[entry.name]
        if matched_by is not None and len(found) == 1:
            provenance.setdefault(found[0], (entry.source_file, entry.line, matched_by))
            if entry.classes:
                known = classes.setdefault(found[0], entry.classes)
                if _distinct(known) != _distinct(entry.classes):
                    conflicts.setdefault(found[0], []).append(_distinct(entry.classes))
        elif found:
            ambiguous[entry.name] = sorted(found)
            where.setdefault(entry.name, (entry.source_file, entry.line))
        else:
            unknown.add(entry.name)
            where.setdefault(entry.name, (entry.source_file, entry.line))
    image_ids = sorted(provenance)
    labelled = pd.DataFrame(
        {
            "image_id": pd.Series(image_ids, dtype="str"),
            "source_file": pd.Series([provenance[i][0] for i in image_ids], dtype="str"),
            "line": pd.Series([provenance[i][1] for i in image_ids], dtype="int64"),
            "matched_by": pd.Series([provenance[i][2] for i in image_ids], dtype="str"),
            "class": pd.Series([_main_class(classes.get(i, ())) for i in image_ids], dtype="str"),
            "classes": pd.Series(
                [_distinct(classes.get(i, ())) for i in image_ids], dtype="object"
            ),
        },
        columns=list(_LABELLED_COLUMNS),
    )
    return LabelMatch(
        labelled=labelled,
        unknown=sorted(unknown),
        ambiguous=dict(sorted(ambiguous.items())),
        skipped_files=[],
        where=where,
        class_conflicts=dict(sorted(conflicts.items())),
    )


def _distinct(classes: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(classes))


def _main_class(classes: tuple[str, ...]) -> str | None:
    """The most frequent class (three car boxes and one bus: car); ties by first appearance."""
    if not classes:
        return None
    counts = Counter(classes)
    return max(_distinct(classes), key=lambda name: counts[name])  # max keeps the first tie


def load_labels(path: Path | None, images: pd.DataFrame) -> LabelMatch:
    """Read the labels path and match it to images, reporting skipped files and a missing path."""
    label_files = list_label_files(path)
    match = match_labels(read_files(label_files), images)
    return replace(
        match, skipped_files=list(label_files.skipped_files), labels_missing=label_files.missing
    )
