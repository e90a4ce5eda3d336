"""What every asset shows in the Dagster UI beyond what the IO manager records."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg

from imgrank_dagster.lib.io_manager import DATA_VERSION_METADATA

if TYPE_CHECKING:
    import pandas as pd


# Event metadata stays small whatever the input holds (a 50 MB label name once grew the
# Dagster database by 300 MB): one value at most this many characters, a message at most that.
METADATA_VALUE_CHARS = 512_000
MESSAGE_CHARS = 500
SKIP_MESSAGE_CHARS = 4000


def bounded(text: str, limit: int = MESSAGE_CHARS) -> str:
    """text, cut to limit characters with a note of how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters in all)"


def bounded_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata with any value larger than METADATA_VALUE_CHARS replaced by a note."""
    import json

    result: dict[str, Any] = {}
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if isinstance(raw, str | bytes):
            size = len(raw)
        elif isinstance(raw, dict | list):
            size = len(json.dumps(raw, default=str))
        else:
            size = 0
        if size > METADATA_VALUE_CHARS:
            text = raw if isinstance(raw, str) else json.dumps(raw, default=str)[:1000]
            result[key] = dg.MetadataValue.text(
                f"(too large to record: {size} characters) {bounded(str(text), 1000)}"
            )
        else:
            result[key] = value
    return result


def frame_output(
    frame: pd.DataFrame, data_version: str | None = None, **metadata: Any
) -> dg.Output[Any]:
    """Return a frame with its data version (a content hash unless given) and metadata."""
    from imgrank_dagster.lib.parquet import frame_data_version

    version = data_version or frame_data_version(frame)
    return dg.Output(
        frame,
        data_version=dg.DataVersion(version),
        metadata={
            DATA_VERSION_METADATA: dg.MetadataValue.text(version),
            **bounded_metadata(metadata),
        },
    )


def partitions_output(
    context: dg.AssetExecutionContext,
    frames: dict[str, pd.DataFrame],
    own: Mapping[str, Mapping[str, Any]] | None = None,
) -> dg.Output[Any]:
    """One frame per partition of the run, each partition with its own figures.

    own: partition key -> that partition's metadata (counts of its rows, ...). A one-partition
    run stores the frame with its content version; a run over several partitions stores the
    dict (the IO manager gives each file its own version) and adds each partition's figures to
    that partition's materialization only, never the run's totals.
    """
    from imgrank_dagster.lib.parquet import preview_markdown

    own = own or {}
    if len(frames) == 1:
        key, frame = next(iter(frames.items()))
        return frame_output(frame, **own.get(key, {}))
    for key, frame in frames.items():
        context.add_asset_metadata(
            bounded_metadata(
                {
                    "dagster/row_count": dg.MetadataValue.int(len(frame)),
                    "preview": dg.MetadataValue.md(preview_markdown(frame)),
                    **own.get(key, {}),
                }
            ),
            partition_key=key,
        )
    return dg.Output(frames)


def counts_table(counts: Mapping[str, int], key: str, value: str = "count") -> dg.MetadataValue:
    rows = [dg.TableRecord({key: str(k), value: int(v)}) for k, v in counts.items()]
    schema = dg.TableSchema(columns=[dg.TableColumn(key, "string"), dg.TableColumn(value, "int")])
    return dg.MetadataValue.table(rows, schema=schema)


def frame_table(frame: pd.DataFrame, limit: int = 50) -> dg.MetadataValue:
    """A small frame as a UI table (values as text, so any dtype shows)."""
    import pandas as pd

    head = frame.head(limit)
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), "string") for c in head.columns])
    rows = [
        dg.TableRecord({str(c): "" if pd.isna(v) else str(v) for c, v in row.items()})
        for _, row in head.iterrows()
    ]
    return dg.MetadataValue.table(rows, schema=schema)


def png_markdown(png: bytes, title: str = "") -> dg.MetadataValue:
    """A PNG the UI renders inline in markdown."""
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")
