"""Sources: where a collection's images come from (a folder, KartaView).

The interface every source fits: list a collection's sequences, ingest one sequence. Each
source's module is imported when it is used (KartaView's needs an HTTP client).
"""

from __future__ import annotations

import pandas as pd

from imgrank_dagster.core.config.collections import Collection, FolderSource, KartaViewSource
from imgrank_dagster.core.sources.base import RAW_COLUMNS, ProgressCallback, SourceError

__all__ = [
    "RAW_COLUMNS",
    "ProgressCallback",
    "SourceError",
    "discover_sequences",
    "ingest_sequence",
]


def discover_sequences(collection: Collection) -> list[str]:
    """The sequence ids a collection's source holds now (KartaView: network queries)."""
    source = collection.source
    if isinstance(source, FolderSource):
        from imgrank_dagster.core.sources.folder import folder_sequences

        return list(folder_sequences(collection.image_root))
    if isinstance(source, KartaViewSource):
        from imgrank_dagster.core.sources.kartaview import KartaViewClient
        from imgrank_dagster.core.sources.kartaview import discover_sequences as discover

        # Base URL from IMGRANK_KARTAVIEW_URL, else the public API.
        with KartaViewClient() as client:
            return discover(client, source)
    raise NotImplementedError(f"source type {source.type!r} has no discovery")


def ingest_sequence(
    collection: Collection, sequence_id: str, progress: ProgressCallback | None = None
) -> pd.DataFrame:
    """raw_image_sequences rows for one sequence; bad images are rejected rows, never errors."""
    source = collection.source
    if isinstance(source, FolderSource):
        from imgrank_dagster.core.sources.folder import ingest_folder_sequence

        frame = ingest_folder_sequence(collection.image_root, sequence_id)
    elif isinstance(source, KartaViewSource):
        from imgrank_dagster.core.sources.kartaview import (
            KartaViewClient,
            download_sequence,
            progress_logger,
        )

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
