"""Parquet files that carry their own lineage: the file format of the IO manager, no Dagster.

Each file holds one frame. Its schema metadata carries the lineage (which run wrote it, from
which upstream files and data versions) and the frame's `attrs` (small facts about the whole
table, such as how the number of clusters was chosen), as JSON.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from imgrank_dagster.lib.parquet_integrity import (
    READ_ERRORS,
    CorruptFileError,
    corrupt_file_message,
    integrity_problem,
    with_integrity_record,
)

LINEAGE_METADATA_KEY = b"imgrank.lineage"
ATTRS_METADATA_KEY = b"imgrank.attrs"
PREVIEW_ROWS = 10
PREVIEW_TEXT_CHARS = 200  # a longer cell (a 50 MB label name) is cut: metadata stays small
# write_frame's temporary files: ".<name>.<uuid>.tmp" beside the target.
TEMP_SUFFIX = ".tmp"


def frame_data_version(frame: pd.DataFrame) -> str:
    """A content hash of a frame: equal frames give equal versions, whatever run wrote them."""
    digest = hashlib.sha256()
    digest.update(",".join(f"{name}:{dtype}" for name, dtype in frame.dtypes.items()).encode())
    for name in frame.columns:
        column = frame[name]
        first = column.iloc[0] if len(column) else None
        if isinstance(first, np.ndarray | list):
            for value in column:
                digest.update(np.asarray(value).tobytes())
                digest.update(b"|")
            continue
        try:
            hashed = pd.util.hash_pandas_object(column, index=False)
        except TypeError:  # unhashable values (dicts, mixed objects): hash their text
            hashed = pd.util.hash_pandas_object(column.astype(str), index=False)
        digest.update(hashed.to_numpy().tobytes())
    if frame.attrs:  # frames without attrs keep the version they always had
        digest.update(json.dumps(frame.attrs, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def write_frame(frame: pd.DataFrame, path: UPath, lineage: dict[str, Any]) -> pa.Table:
    """Write frame (with its attrs and the lineage) to path atomically; return the table.

    The file is written beside the target and renamed: readers never see half a file, and a
    failed write leaves the previous file as it was.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[LINEAGE_METADATA_KEY] = json.dumps(lineage).encode()
    if frame.attrs:
        metadata[ATTRS_METADATA_KEY] = json.dumps(frame.attrs, default=str).encode()
    table = with_integrity_record(table.replace_schema_metadata(metadata))
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        with temporary.open("wb") as handle:
            # Page checksums: a flipped bit in the data fails the read (lib.parquet_integrity).
            pq.write_table(table, handle, write_page_checksum=True)
        temporary.rename(path)
    except BaseException:
        if temporary.exists():
            temporary.unlink()
        raise
    return table


def read_table(path: UPath, columns: list[str] | None, asset: str) -> pa.Table:
    """The stored table (only `columns` when given), checked against its page checksums and
    integrity record; a missing column or a corrupt file names the fix."""
    with path.open("rb") as handle:
        try:
            table = pq.read_table(handle, columns=columns, page_checksum_verification=True)
            problem = integrity_problem(table)
        except READ_ERRORS as error:
            missing = _missing_columns(handle, columns)
            if not missing:
                raise CorruptFileError(corrupt_file_message(path, asset, _cause(error))) from error
        else:
            if problem is not None:
                raise CorruptFileError(corrupt_file_message(path, asset, problem))
            return table
    raise ValueError(
        f"{asset}: {path} has no column(s) {missing}; it was written by an earlier version "
        f"of {asset}: materialize {asset} again"
    )


def _cause(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _missing_columns(handle: Any, columns: list[str] | None) -> list[str]:
    """Requested columns the file does not have ([] also when its schema cannot be read)."""
    if not columns:
        return []
    try:
        handle.seek(0)
        return sorted(set(columns) - set(pq.read_schema(handle).names))
    except READ_ERRORS:
        return []


def table_lineage(table: pa.Table) -> dict[str, Any]:
    stored = (table.schema.metadata or {}).get(LINEAGE_METADATA_KEY)
    return json.loads(stored) if stored else {}


def table_attrs(table: pa.Table) -> dict[str, Any]:
    stored = (table.schema.metadata or {}).get(ATTRS_METADATA_KEY)
    return json.loads(stored) if stored else {}


def read_frame(
    path: UPath, columns: list[str] | None = None, asset: str = "", with_attrs: bool = False
) -> pd.DataFrame:
    """The stored frame; with_attrs restores the attrs it was written with."""
    table = read_table(path, columns, asset or str(path))
    frame = table.to_pandas()
    if with_attrs:
        frame.attrs = table_attrs(table)
    return frame


def read_lineage(path: str | UPath) -> dict[str, Any]:
    """The lineage a Parquet file written by the IO manager carries."""
    with UPath(path).open("rb") as handle:
        metadata = pq.read_schema(handle).metadata or {}
    return json.loads(metadata[LINEAGE_METADATA_KEY]) if LINEAGE_METADATA_KEY in metadata else {}


def schema_columns(table: pa.Table) -> list[tuple[str, str]]:
    """(name, type) of every column, for the UI's column schema."""
    return [(field.name, str(field.type)) for field in table.schema]


def _cell_preview(value: object) -> object:
    """Array and list cells show their length; missing ones (an image not embedded) show so."""
    if isinstance(value, np.ndarray | list | tuple):
        return f"[{len(value)} values]"
    if isinstance(value, str) and len(value) > PREVIEW_TEXT_CHARS:
        return f"{value[:PREVIEW_TEXT_CHARS]}... ({len(value)} characters)"
    return value


def preview_markdown(frame: pd.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    """The first rows as markdown; array and list cells show their length."""
    preview = frame.head(rows).copy()
    for name in preview.columns:
        dtype = preview[name].dtype
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            preview[name] = preview[name].map(_cell_preview)
    return preview.to_markdown(index=False) if len(preview) else "(no rows)"
