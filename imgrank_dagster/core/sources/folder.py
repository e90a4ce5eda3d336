"""The `folder` source: a directory of images in which each sub-directory is one sequence."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from imgrank_dagster.core.config.keys import sanitize_sequence_id
from imgrank_dagster.core.sources.base import RAW_COLUMNS, SourceError
from imgrank_dagster.core.sources.images import ImageInspection, inspect_image


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def folder_sequences(root: Path) -> dict[str, Path]:
    """Sequence id -> folder, for every non-hidden sub-directory of root."""
    if not root.is_dir():
        raise SourceError(f"{root}: image folder does not exist")
    sequences: dict[str, Path] = {}
    for folder in sorted(root.iterdir(), key=lambda p: _natural_key(p.name)):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        sequence_id = sanitize_sequence_id(folder.name)
        if sequence_id in sequences:
            raise SourceError(
                f"{root}: folders {sequences[sequence_id].name!r} and {folder.name!r} both map "
                f"to sequence id {sequence_id!r}; rename one of them"
            )
        sequences[sequence_id] = folder
    return sequences


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
    sequence_id: str, root: Path, files: list[Path], workers: int = 2
) -> pd.DataFrame:
    """One raw_image_sequences row per file, in the given order. A file whose name cannot be
    stored is a rejected row without a path (its reason shows the name)."""
    relative = [file.relative_to(root).as_posix() for file in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        inspections: list[ImageInspection] = list(pool.map(_inspect_named, files, relative))
    ids = image_ids_for(sequence_id, [file.name for file in files])
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
            "captured_at": pd.to_datetime([item.captured_at for item in inspections]),
            "lat": pd.array([item.lat for item in inspections], dtype="Float64"),
            "lng": pd.array([item.lng for item in inspections], dtype="Float64"),
            "status": [item.status for item in inspections],
            "reason": [item.reason for item in inspections],
        },
        columns=RAW_COLUMNS,
    )
    return frame


def ingest_folder_sequence(root: Path, sequence_id: str) -> pd.DataFrame:
    """Inspect every file of one sequence folder; bad files become rejected rows."""
    sequences = folder_sequences(root)
    if sequence_id not in sequences:
        raise SourceError(f"{root}: no folder for sequence {sequence_id!r}")
    folder = sequences[sequence_id]
    files = sorted(
        (p for p in sequence_files(folder) if p.is_file() and not p.name.startswith(".")),
        key=lambda p: _natural_key(p.relative_to(folder).as_posix()),
    )
    return inspection_rows(sequence_id, root, files)


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
