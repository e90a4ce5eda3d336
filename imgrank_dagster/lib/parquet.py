"""Parquet files that carry their own lineage: the file format of the IO manager, no Dagster.

Each file holds one frame. Its schema metadata carries the lineage (which run wrote it, from
which upstream files and data versions) and the frame's `attrs` (small facts about the whole
table, such as how the number of clusters was chosen), as JSON.

Matrix columns (a vector per row: embeddings, a neighbour graph's rows; see core.arrays) are
stored as FIXED_LEN_BYTE_ARRAY, one value per row holding the row's vector (576 float32 =
2,304 bytes), uncompressed, and read back into one preallocated matrix that the frame's
fixed-size list column then wraps without a copy. `imgrank.arrays` in the schema metadata
records each such column's dtype and length. Why not Parquet's own list type: pyarrow decodes
a list column value by value with repetition and definition levels; a 1,000,000 x 576 float32
column took 18-27 s and 9.5 GB of peak memory to read that way, against 1.6 s and the matrix
plus one batch (2.5 GB) here.
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

from imgrank_dagster.core.arrays import is_matrix_column
from imgrank_dagster.lib.parquet_integrity import (
    READ_ERRORS,
    CorruptFileError,
    corrupt_file_message,
    schema_integrity_problem,
    with_integrity_record,
)

LINEAGE_METADATA_KEY = b"imgrank.lineage"
ATTRS_METADATA_KEY = b"imgrank.attrs"
ARRAYS_METADATA_KEY = b"imgrank.arrays"
PREVIEW_ROWS = 10
PREVIEW_TEXT_CHARS = 200  # a longer cell (a 50 MB label name) is cut: metadata stays small
# write_frame's temporary files: ".<name>.<uuid>.tmp" beside the target.
TEMP_SUFFIX = ".tmp"
# Rows of a matrix column decoded at once while reading it into its preallocated matrix (19 MB
# of 576-d float32), and the read buffer: the file is streamed, never held whole in memory.
ARRAY_READ_BATCH = 8_192
READ_BUFFER_BYTES = 4 << 20


def frame_data_version(frame: pd.DataFrame) -> str:
    """A content hash of a frame: equal frames give equal versions, whatever run wrote them."""
    digest = hashlib.sha256()
    digest.update(",".join(f"{name}:{dtype}" for name, dtype in frame.dtypes.items()).encode())
    for name in frame.columns:
        column = frame[name]
        if is_matrix_column(column):
            for chunk in column.array.__arrow_array__().chunks:
                digest.update(memoryview(np.ascontiguousarray(_chunk_matrix(chunk))).cast("B"))
                if chunk.null_count:
                    digest.update(chunk.is_valid().to_numpy(zero_copy_only=False).tobytes())
            continue
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
    table, arrays = _arrow_table(frame)
    metadata = dict(table.schema.metadata or {})
    metadata[LINEAGE_METADATA_KEY] = json.dumps(lineage).encode()
    if frame.attrs:
        metadata[ATTRS_METADATA_KEY] = json.dumps(frame.attrs, default=str).encode()
    if arrays:
        metadata[ARRAYS_METADATA_KEY] = json.dumps(arrays).encode()
    table = with_integrity_record(table.replace_schema_metadata(metadata))
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        with temporary.open("wb") as handle:
            # Page checksums: a flipped bit in the data fails the read (lib.parquet_integrity).
            pq.write_table(
                table,
                handle,
                write_page_checksum=True,
                **_write_options(table.column_names, arrays),
            )
        temporary.rename(path)
    except BaseException:
        if temporary.exists():
            temporary.unlink()
        raise
    return table


def read_table(path: UPath, columns: list[str] | None, asset: str) -> pa.Table:
    """The stored table (only `columns` when given), checked against its page checksums and
    integrity record; a missing column or a corrupt file names the fix.

    Matrix columns come back as fixed-size lists over one contiguous buffer each.
    """
    with path.open("rb") as handle:
        try:
            parquet = pq.ParquetFile(
                handle,
                buffer_size=READ_BUFFER_BYTES,
                pre_buffer=False,
                page_checksum_verification=True,
            )
            schema = parquet.schema_arrow
        except READ_ERRORS as error:
            raise CorruptFileError(corrupt_file_message(path, asset, _cause(error))) from error
        wanted = list(schema.names) if columns is None else list(columns)
        missing = sorted(set(wanted) - set(schema.names))
        if missing:
            raise ValueError(
                f"{asset}: {path} has no column(s) {missing}; it was written by an earlier "
                f"version of {asset}: materialize {asset} again"
            )
        try:
            arrays = _array_specs(schema)
            plain = parquet.read(columns=[name for name in wanted if name not in arrays])
            columns_read = []
            for name in wanted:
                if name in arrays:
                    matrix, valid = _read_matrix(parquet, name, arrays[name])
                    columns_read.append(pa.chunked_array([_fixed_size_list(matrix, valid)]))
                else:
                    columns_read.append(plain.column(name))
            rows = len(columns_read[0]) if columns_read else parquet.metadata.num_rows
            # The record describes the file as stored (matrix columns as fixed-size binary).
            stored = pa.schema([schema.field(name) for name in wanted], metadata=schema.metadata)
            problem = schema_integrity_problem(stored, rows)
        except READ_ERRORS as error:
            raise CorruptFileError(corrupt_file_message(path, asset, _cause(error))) from error
    if problem is not None:
        raise CorruptFileError(corrupt_file_message(path, asset, problem))
    table = pa.Table.from_arrays(columns_read, names=wanted)
    return table.replace_schema_metadata(schema.metadata)


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """The table as a frame; fixed-size list columns stay Arrow-backed (no per-row objects)."""
    return table.to_pandas(types_mapper=_matrix_dtype)


def read_matrix_rows(path: UPath, column: str, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (positions in the file) of one matrix column, as an (len(rows), D) array.

    Files written before matrix columns were stored this way hold a list column; it is read
    and stacked.
    """
    with path.open("rb") as handle:
        parquet = pq.ParquetFile(
            handle,
            buffer_size=READ_BUFFER_BYTES,
            pre_buffer=False,
            page_checksum_verification=True,
        )
        spec = _array_specs(parquet.schema_arrow).get(column)
        if spec is None:
            values = parquet.read(columns=[column]).column(0).to_pylist()
            return np.asarray([values[row] for row in np.asarray(rows)], dtype=np.float32)
        matrix, _ = _read_matrix(parquet, column, spec)
    return matrix[np.asarray(rows)]


def _cause(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


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
    frame = table_to_frame(table)
    if with_attrs:
        frame.attrs = table_attrs(table)
    return frame


def read_lineage(path: str | UPath) -> dict[str, Any]:
    """The lineage a Parquet file written by the IO manager carries."""
    with UPath(path).open("rb") as handle:
        metadata = pq.read_schema(handle).metadata or {}
    return json.loads(metadata[LINEAGE_METADATA_KEY]) if LINEAGE_METADATA_KEY in metadata else {}


def schema_columns(table: pa.Table) -> list[tuple[str, str]]:
    """(name, type) of every column, for the UI's column schema (a matrix column shows as
    the fixed-size list it is read as)."""
    arrays = _array_specs(table.schema)
    return [
        (
            field.name,
            f"fixed_size_list<{np.dtype(arrays[field.name]['dtype']).name}>"
            f"[{arrays[field.name]['length']}]"
            if field.name in arrays
            else str(field.type),
        )
        for field in table.schema
    ]


def _matrix_dtype(arrow_type: pa.DataType) -> pd.ArrowDtype | None:
    return pd.ArrowDtype(arrow_type) if pa.types.is_fixed_size_list(arrow_type) else None


def _chunk_matrix(chunk: pa.FixedSizeListArray) -> np.ndarray:
    """The (len, D) values of one fixed-size list chunk, null rows included, without a copy."""
    width = chunk.type.list_size
    values = chunk.values.slice(chunk.offset * width, len(chunk) * width)
    dtype = np.dtype(values.type.to_pandas_dtype())
    data = values.buffers()[1]
    return np.frombuffer(
        data, dtype=dtype, count=len(values), offset=values.offset * dtype.itemsize
    ).reshape(len(chunk), width)


def _matrix_of(column: pd.Series) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(matrix, valid rows or None) of a matrix column or of an object column of equal-length
    numeric 1-d arrays (None where missing); None for any other column."""
    if is_matrix_column(column):
        chunks = column.array.__arrow_array__().chunks
        width = column.dtype.pyarrow_dtype.list_size
        dtype = np.dtype(column.dtype.pyarrow_dtype.value_type.to_pandas_dtype())
        if not chunks:
            return np.zeros((0, width), dtype=dtype), None
        parts = [_chunk_matrix(chunk) for chunk in chunks]
        matrix = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if not any(chunk.null_count for chunk in chunks):
            return matrix, None
        return matrix, np.concatenate([c.is_valid().to_numpy(zero_copy_only=False) for c in chunks])
    if column.dtype != object or column.empty:
        return None
    values = column.to_numpy()
    valid = np.array([value is not None for value in values])
    present = values[valid]
    if not len(present) or not all(
        isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "biuf" for v in present
    ):
        return None
    if len({(v.shape, v.dtype) for v in present}) > 1:
        return None
    first = present[0]
    matrix = np.zeros((len(values), len(first)), dtype=first.dtype)
    matrix[valid] = np.stack(present)
    return matrix, None if valid.all() else valid


def _arrow_table(frame: pd.DataFrame) -> tuple[pa.Table, dict[str, dict[str, Any]]]:
    """The frame as an Arrow table whose matrix columns are fixed-size binary (one row's
    vector per value), and those columns' dtype and length."""
    packed: dict[str, pa.Array] = {}
    arrays: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        found = _matrix_of(frame[name])
        if found is None:
            continue
        matrix, valid = found
        matrix = np.ascontiguousarray(matrix)
        row_bytes = matrix.shape[1] * matrix.dtype.itemsize
        validity = None if valid is None else pa.array(valid).buffers()[1]
        packed[name] = pa.Array.from_buffers(
            pa.binary(row_bytes), len(matrix), [validity, pa.py_buffer(matrix)]
        )
        arrays[name] = {"dtype": matrix.dtype.str, "length": int(matrix.shape[1])}
    table = pa.Table.from_pandas(frame.drop(columns=list(packed)), preserve_index=False)
    for position, name in enumerate(frame.columns):
        if name in packed:
            table = table.add_column(position, name, pa.chunked_array([packed[name]]))
    return table, arrays


def _write_options(columns: list[str], arrays: dict[str, Any]) -> dict[str, Any]:
    """Matrix columns: no compression (float vectors barely compress), no dictionary, no
    min/max statistics of 2 KB values."""
    if not arrays:
        return {}
    others = [name for name in columns if name not in arrays]
    return {
        "compression": {name: "none" if name in arrays else "snappy" for name in columns},
        "use_dictionary": others,
        "write_statistics": others,
    }


def _array_specs(schema: pa.Schema) -> dict[str, dict[str, Any]]:
    stored = (schema.metadata or {}).get(ARRAYS_METADATA_KEY)
    return json.loads(stored) if stored else {}


def _read_matrix(
    parquet: pq.ParquetFile, column: str, spec: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None]:
    """One matrix column read batch by batch into a preallocated matrix (peak: the matrix
    plus one batch); the valid-row mask when some rows are missing."""
    dtype, width = np.dtype(spec["dtype"]), int(spec["length"])
    matrix = np.empty((parquet.metadata.num_rows, width), dtype=dtype)
    valid = np.ones(len(matrix), dtype=bool)
    start = 0
    for batch in parquet.iter_batches(batch_size=ARRAY_READ_BATCH, columns=[column]):
        values = batch.column(0)
        stop = start + len(values)
        if values.null_count:
            valid[start:stop] = values.is_valid().to_numpy(zero_copy_only=False)
        matrix[start:stop] = np.frombuffer(
            values.buffers()[1],
            dtype=dtype,
            count=len(values) * width,
            offset=values.offset * width * dtype.itemsize,
        ).reshape(len(values), width)
        start = stop
    if start != len(matrix):  # pages hold fewer rows than the footer says
        raise ValueError(f"column {column!r} has {start} rows, the footer says {len(matrix)}")
    return matrix, None if valid.all() else valid


def _fixed_size_list(matrix: np.ndarray, valid: np.ndarray | None) -> pa.FixedSizeListArray:
    values = pa.Array.from_buffers(
        pa.from_numpy_dtype(matrix.dtype), matrix.size, [None, pa.py_buffer(matrix)]
    )
    mask = None if valid is None else pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(values, matrix.shape[1], mask=mask)


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
        if is_matrix_column(preview[name]):
            width = preview[name].dtype.pyarrow_dtype.list_size
            preview[name] = [
                f"[{width} values]" if valid else "" for valid in preview[name].notna()
            ]
            continue
        dtype = preview[name].dtype
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
            preview[name] = preview[name].map(_cell_preview)
    return preview.to_markdown(index=False) if len(preview) else "(no rows)"
