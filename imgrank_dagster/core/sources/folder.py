"""The `folder` source: a directory of images in which each sub-directory is one sequence."""

from __future__ import annotations

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


def image_ids_for(sequence_id: str, file_names: list[str]) -> list[str]:
    """'<sequence>/<stem>', or '<sequence>/<file name>' where two files share a stem."""
    stems = [Path(name).stem for name in file_names]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    return [
        f"{sequence_id}/{name if stem in shared else stem}"
        for name, stem in zip(file_names, stems, strict=True)
    ]


def inspection_rows(
    sequence_id: str, root: Path, files: list[Path], workers: int = 2
) -> pd.DataFrame:
    """One raw_image_sequences row per file, in the given order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        inspections: list[ImageInspection] = list(pool.map(inspect_image, files))
    ids = image_ids_for(sequence_id, [file.name for file in files])
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "sequence_id": sequence_id,
            "sequence_index": range(len(files)),
            "path": [file.relative_to(root).as_posix() for file in files],
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
        (p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")),
        key=lambda p: _natural_key(p.relative_to(folder).as_posix()),
    )
    return inspection_rows(sequence_id, root, files)
