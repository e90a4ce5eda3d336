"""The interface every source fits: list a collection's sequences, ingest one sequence."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from imgrank_dagster.core.collections import Collection, FolderSource
from imgrank_dagster.core.folder_source import folder_sequences, ingest_folder_sequence

ProgressCallback = Callable[[str], None]


def discover_sequences(collection: Collection) -> list[str]:
    """The sequence ids a collection's source holds now."""
    if isinstance(collection.source, FolderSource):
        return list(folder_sequences(collection.image_root))
    raise NotImplementedError(f"source type {collection.source.type!r} discovers in its own sensor")


def ingest_sequence(
    collection: Collection, sequence_id: str, progress: ProgressCallback | None = None
) -> pd.DataFrame:
    """raw_image_sequences rows for one sequence; bad images are rejected rows, never errors."""
    if isinstance(collection.source, FolderSource):
        frame = ingest_folder_sequence(collection.image_root, sequence_id)
    else:
        raise NotImplementedError(f"source type {collection.source.type!r} is not wired yet")
    if progress is not None:
        accepted = int((frame["status"] == "ok").sum())
        progress(f"{sequence_id}: {accepted}/{len(frame)} images accepted")
    return frame
