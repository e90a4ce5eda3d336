"""The KartaView source: API client, sequence discovery and robust downloads (no Dagster)."""

from imgrank_dagster.core.sources.kartaview.client import (
    ATTRIBUTION,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    LICENCE,
    KartaViewClient,
    KartaViewError,
    Photo,
)
from imgrank_dagster.core.sources.kartaview.download import (
    KARTAVIEW_COLUMNS,
    DownloadProgressCallback,
    SequenceProgress,
    discover_sequences,
    download_sequence,
    grid_points,
    progress_logger,
)

__all__ = [
    "ATTRIBUTION",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "KARTAVIEW_COLUMNS",
    "LICENCE",
    "DownloadProgressCallback",
    "KartaViewClient",
    "KartaViewError",
    "Photo",
    "SequenceProgress",
    "discover_sequences",
    "download_sequence",
    "grid_points",
    "progress_logger",
]
