"""The `folder` source: a directory of images, as people keep them.

- Each non-hidden sub-directory is one sequence (one capture run), its files in name order.
- Images directly in the directory form sequences too: by capture time where it is known
  (EXIF, or a sidecar), a new sequence after a gap longer than `sequence_gap_s`, each named
  `run-<start time>`; images without a capture time form one sequence named after the folder.
- Sidecar metadata (CSV or GeoJSON naming the files, see sidecars.py) in the directory, in a
  sequence's own folder, or listed in the collection's settings gives capture time, position
  and heading where EXIF has none (the sidecar wins where both have a value).
A folder that holds no image files is not a sequence, and is reported as such.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from imgrank_dagster.core.config.keys import sanitize_sequence_id
from imgrank_dagster.core.sources.base import RAW_COLUMNS, SourceError
from imgrank_dagster.core.sources.images import (
    IMAGE_SUFFIXES,
    ImageInspection,
    exif_capture_time,
    inspect_image,
)
from imgrank_dagster.core.sources.sidecars import (
    SIDECAR_SUFFIXES,
    SidecarRecord,
    lookup,
    sidecar_files,
    sidecar_index,
)

DEFAULT_SEQUENCE_GAP_S = 300.0
RUN_PREFIX = "run-"
HEADING_COLUMN = "heading"  # added when a sidecar gives headings


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class FolderScan:
    """A folder's sequences (id -> files in sequence order) and notes for people."""

    sequences: dict[str, list[Path]]
    notes: list[str] = field(default_factory=list)


def _sequence_files(folder: Path) -> list[Path]:
    """Every non-hidden file below a sequence folder (sidecars excluded), in name order."""
    files = (
        path
        for path in sequence_files(folder)
        if path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() not in SIDECAR_SUFFIXES
    )
    return sorted(files, key=lambda p: _natural_key(p.relative_to(folder).as_posix()))


def _capture_time(file: Path, sidecars: dict) -> datetime | None:
    record = lookup(sidecars, file)
    if record is not None and record.captured_at is not None:
        return record.captured_at
    return exif_capture_time(file)


def _time_runs(
    files: list[Path], sidecars: dict, gap_s: float, untimed_id: str
) -> dict[str, list[Path]]:
    """Split files by capture-time gaps; files without a time go to untimed_id."""
    timed: list[tuple[datetime, Path]] = []
    untimed: list[Path] = []
    for file in files:
        captured_at = _capture_time(file, sidecars)
        if captured_at is None:
            untimed.append(file)
        else:
            timed.append((captured_at, file))
    timed.sort(key=lambda item: (item[0], _natural_key(item[1].name)))
    runs: dict[str, list[Path]] = {}
    current: list[Path] = []
    start = previous = None
    for captured_at, file in timed:
        if previous is not None and (captured_at - previous).total_seconds() > gap_s:
            runs[f"{RUN_PREFIX}{start:%Y%m%d-%H%M%S}"] = current
            current = []
            start = None
        start = start or captured_at
        current.append(file)
        previous = captured_at
    if current:
        runs[f"{RUN_PREFIX}{start:%Y%m%d-%H%M%S}"] = current
    if untimed:
        runs[untimed_id] = untimed
    return runs


def scan_folder(
    root: Path,
    *,
    sequence_gap_s: float = DEFAULT_SEQUENCE_GAP_S,
    sidecars: tuple[Path, ...] = (),
) -> FolderScan:
    """The sequences of a folder source (see the module docstring)."""
    if not root.is_dir():
        raise SourceError(f"{root}: image folder does not exist")
    if sequence_gap_s <= 0:
        raise ValueError(f"sequence_gap_s must be positive, got {sequence_gap_s}")
    sequences: dict[str, list[Path]] = {}
    origin: dict[str, str] = {}  # sequence id -> what made it, for collision messages
    notes: list[str] = []

    def add(sequence_id: str, files: list[Path], what: str) -> None:
        if sequence_id in sequences:
            raise SourceError(
                f"{root}: {origin[sequence_id]} and {what} both map to sequence id "
                f"{sequence_id!r}; rename one of them"
            )
        sequences[sequence_id] = files
        origin[sequence_id] = what

    entries = sorted(root.iterdir(), key=lambda p: _natural_key(p.name))
    loose = [
        entry
        for entry in entries
        if entry.is_file()
        and not entry.name.startswith(".")
        and entry.suffix.lower() in IMAGE_SUFFIXES
    ]
    if loose:
        index = sidecar_index([*sidecars, *sidecar_files([root])])
        untimed_id = sanitize_sequence_id(root.name) if re.search(r"\w", root.name) else "images"
        for sequence_id, files in _time_runs(loose, index, sequence_gap_s, untimed_id).items():
            add(sequence_id, files, f"the images directly in the folder ({sequence_id})")
    for folder in entries:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        files = _sequence_files(folder)
        if not files:
            notes.append(f"{folder}: holds no image files; it is not a sequence")
            continue
        add(sanitize_sequence_id(folder.name), files, f"folder {folder.name!r}")
    if not sequences:
        notes.append(f"{root}: holds no image files (directly or in sub-folders)")
    return FolderScan(sequences, notes)


def folder_sequences(root: Path, **scan: object) -> dict[str, list[Path]]:
    """Sequence id -> its files, in sequence order (scan_folder's keyword parameters)."""
    return scan_folder(root, **scan).sequences  # type: ignore[arg-type]


def stored_name(name: str) -> str:
    """A file name as text that can be stored: bytes that are not UTF-8 become \\xNN escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8_name(name: str) -> bool:
    return stored_name(name) == name


def image_ids_for(sequence_id: str, file_names: list[str]) -> list[str]:
    """'<sequence>/<stem>', or '<sequence>/<file name>' where two files share a stem."""
    file_names = [stored_name(name) for name in file_names]
    stems = [Path(name).stem for name in file_names]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    return [
        f"{sequence_id}/{name if stem in shared else stem}"
        for name, stem in zip(file_names, stems, strict=True)
    ]


def _inspect_named(file: Path, relative: str) -> ImageInspection:
    if not is_utf8_name(relative):
        # Its path could not be stored (Parquet text is UTF-8), so it could never be read back.
        return ImageInspection(
            status="rejected",
            reason=f"file or folder name is not valid UTF-8 ({stored_name(relative)}): rename it",
            sha256="",
            bytes=0,
        )
    return inspect_image(file)


def inspection_rows(
    sequence_id: str,
    root: Path,
    files: list[Path],
    workers: int = 2,
    sidecars: dict | None = None,
) -> pd.DataFrame:
    """One raw_image_sequences row per file, in the given order; sidecar values win. A file
    whose name cannot be stored is a rejected row without a path (its reason shows the name)."""
    relative = [file.relative_to(root).as_posix() for file in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        inspections: list[ImageInspection] = list(pool.map(_inspect_named, files, relative))
    records = [lookup(sidecars, file) if sidecars else None for file in files]
    blank = SidecarRecord()
    records = [record or blank for record in records]
    ids = image_ids_for(sequence_id, [file.name for file in files])

    def pick(own: list, given: list) -> list:
        return [g if g is not None else o for o, g in zip(own, given, strict=True)]

    lat = pick([i.lat for i in inspections], [r.lat for r in records])
    lng = pick([i.lng for i in inspections], [r.lng for r in records])
    with_position = [a is not None and b is not None for a, b in zip(lat, lng, strict=True)]
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "sequence_id": sequence_id,
            "sequence_index": range(len(files)),
            "path": [path if is_utf8_name(path) else None for path in relative],
            "sha256": [item.sha256 for item in inspections],
            "bytes": [item.bytes for item in inspections],
            "width": pd.array([item.width for item in inspections], dtype="Int64"),
            "height": pd.array([item.height for item in inspections], dtype="Int64"),
            "captured_at": pd.to_datetime(
                pick([i.captured_at for i in inspections], [r.captured_at for r in records])
            ),
            "lat": pd.array(
                [v if ok else None for v, ok in zip(lat, with_position, strict=True)],
                dtype="Float64",
            ),
            "lng": pd.array(
                [v if ok else None for v, ok in zip(lng, with_position, strict=True)],
                dtype="Float64",
            ),
            "status": [item.status for item in inspections],
            "reason": [item.reason for item in inspections],
        },
        columns=RAW_COLUMNS,
    )
    headings = [record.heading for record in records]
    if any(heading is not None for heading in headings):
        frame[HEADING_COLUMN] = pd.array(headings, dtype="Float64")
    return frame


def ingest_folder_sequence(
    root: Path,
    sequence_id: str,
    *,
    sequence_gap_s: float = DEFAULT_SEQUENCE_GAP_S,
    sidecars: tuple[Path, ...] = (),
) -> pd.DataFrame:
    """Inspect every file of one sequence; bad files become rejected rows."""
    scan = scan_folder(root, sequence_gap_s=sequence_gap_s, sidecars=sidecars)
    if sequence_id not in scan.sequences:
        raise SourceError(
            f"{root}: no folder for sequence {sequence_id!r} (nor a capture run of that name)"
        )
    files = scan.sequences[sequence_id]
    folders = {root, *(file.parent for file in files)}
    index = sidecar_index([*sidecars, *sidecar_files(sorted(folders))])
    return inspection_rows(sequence_id, root, files, sidecars=index)


def sequence_files(folder: Path) -> list[Path]:
    """Every file under folder (symlinked folders are not followed). A folder that cannot be
    listed is an error naming it: its images would otherwise be left out without a word."""

    def unreadable(error: OSError) -> None:
        raise SourceError(f"{error.filename}: cannot list folder: {error.strerror or error}")

    return [
        Path(here) / name
        for here, _, names in os.walk(folder, onerror=unreadable)
        for name in names
    ]
