"""What every source shares: the raw_image_sequences columns, its error, progress messages."""

from __future__ import annotations

from collections.abc import Callable

# One row per file of a sequence; a source may add columns of its own after these.
RAW_COLUMNS = [
    "image_id",
    "sequence_id",
    "sequence_index",
    "path",
    "sha256",
    "bytes",
    "width",
    "height",
    "captured_at",
    "lat",
    "lng",
    "status",
    "reason",
]

# A source reports progress as readable lines (a run log, a terminal).
ProgressCallback = Callable[[str], None]


class SourceError(ValueError):
    """A source cannot be read at all (as opposed to one bad image, which is a rejected row)."""
