"""The interface every source fits: list a collection's sequences, ingest one sequence."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from imgrank_dagster.core.collections import Collection, FolderSource, KartaViewSource
from imgrank_dagster.core.folder_source import folder_sequences, ingest_folder_sequence
from imgrank_dagster.core.kartaview import KartaViewClient, download_sequence, progress_logger
from imgrank_dagster.core.kartaview import discover_sequences as discover_kartaview_sequences

ProgressCallback = Callable[[str], None]


def discover_sequences(collection: Collection) -> list[str]:
    """The sequence ids a collection's source holds now (KartaView: network queries)."""
    source = collection.source
    if isinstance(source, FolderSource):
        return list(folder_sequences(collection.image_root))
    if isinstance(source, KartaViewSource):
        # Base URL from IMGRANK_KARTAVIEW_URL, else the public API.
        with KartaViewClient() as client:
            return discover_kartaview_sequences(client, source)
    raise NotImplementedError(f"source type {source.type!r} has no discovery")


def ingest_sequence(
    collection: Collection, sequence_id: str, progress: ProgressCallback | None = None
) -> pd.DataFrame:
    """raw_image_sequences rows for one sequence; bad images are rejected rows, never errors."""
    source = collection.source
    if isinstance(source, FolderSource):
        frame = ingest_folder_sequence(collection.image_root, sequence_id)
    elif isinstance(source, KartaViewSource):
        with KartaViewClient() as client:
            frame = download_sequence(
                client,
                sequence_id,
                collection.image_root,
                source.image_size,
                progress=progress_logger(progress) if progress is not None else None,
            )
    else:
        raise NotImplementedError(f"source type {source.type!r} is not wired yet")
    if progress is not None:
        accepted = int((frame["status"] == "ok").sum())
        progress(f"{sequence_id}: {accepted}/{len(frame)} images accepted")
    return frame
