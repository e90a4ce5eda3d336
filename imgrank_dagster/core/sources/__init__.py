"""Sources: where a collection's images come from (a folder, KartaView).

The interface every source fits: list a collection's sequences, ingest one sequence. Each
source's module is imported when it is used (KartaView's needs an HTTP client).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from imgrank_dagster.core.config.collections import Collection, FolderSource, KartaViewSource
from imgrank_dagster.core.sources.base import RAW_COLUMNS, ProgressCallback, SourceError

__all__ = [
    "RAW_COLUMNS",
    "Discovery",
    "ProgressCallback",
    "SourceError",
    "discover",
    "discover_sequences",
    "ingest_sequence",
]


@dataclass(frozen=True)
class Discovery:
    """The sequence ids a source holds now, and notes for people (empty folders...)."""

    sequence_ids: list[str]
    notes: list[str] = field(default_factory=list)


def discover(collection: Collection) -> Discovery:
    """The sequences a collection's source holds now (KartaView: network queries)."""
    source = collection.source
    if isinstance(source, FolderSource):
        from imgrank_dagster.core.sources.folder import scan_folder

        scan = scan_folder(
            collection.image_root,
            sequence_gap_s=source.sequence_gap_s,
            sidecars=tuple(source.sidecars),
        )
        return Discovery(list(scan.sequences), scan.notes)
    if isinstance(source, KartaViewSource):
        from imgrank_dagster.core.sources.kartaview import KartaViewClient
        from imgrank_dagster.core.sources.kartaview import discover_sequences as discover_kv

        # Base URL from IMGRANK_KARTAVIEW_URL, else the public API.
        with KartaViewClient() as client:
            found = discover_kv(client, source)
        notes = [] if found else [f"no KartaView sequence found for {collection.name}"]
        return Discovery(found, notes)
    raise NotImplementedError(f"source type {source.type!r} has no discovery")


def discover_sequences(collection: Collection) -> list[str]:
    """The sequence ids a collection's source holds now."""
    return discover(collection).sequence_ids


def ingest_sequence(
    collection: Collection, sequence_id: str, progress: ProgressCallback | None = None
) -> pd.DataFrame:
    """raw_image_sequences rows for one sequence; bad images are rejected rows, never errors."""
    source = collection.source
    if isinstance(source, FolderSource):
        from imgrank_dagster.core.sources.folder import ingest_folder_sequence

        frame = ingest_folder_sequence(
            collection.image_root,
            sequence_id,
            sequence_gap_s=source.sequence_gap_s,
            sidecars=tuple(source.sidecars),
        )
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
