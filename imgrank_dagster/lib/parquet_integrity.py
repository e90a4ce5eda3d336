"""Integrity of the Parquet files: a corrupt file fails its read, naming the file and the fix.

Two layers, both cheap enough for every read (benchmarks/bench_integrity.py):
- Parquet page checksums (CRC32 of every data and dictionary page), written and verified by
  pyarrow: a flipped bit in the data fails the read.
- The footer is not covered by page checksums, so each file also carries `imgrank.integrity`:
  its row count, every column's name and type, and a SHA-256 of the other key-value metadata
  (the lineage, the attrs, pandas' metadata). A read compares the table it got with them.

Files imgrank wrote before this check existed have a lineage but no `imgrank.integrity`
entry; they are read as before (materialize them again to protect them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

INTEGRITY_METADATA_KEY = b"imgrank.integrity"
INTEGRITY_MARKER_KEY = b"imgrank.integrity_checked"
LINEAGE_KEY = b"imgrank.lineage"  # lib.parquet.LINEAGE_METADATA_KEY: every file imgrank writes
INTEGRITY_FORMAT = 1
# What pyarrow raises for a file it cannot decode (or whose footer decodes to nonsense).
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    pa.ArrowException,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    UnicodeDecodeError,
)


class CorruptFileError(ValueError):
    """A stored file is unreadable or does not match its own integrity record."""


def canonical_type(data_type: pa.DataType) -> str:
    """A column type as text, as a Parquet round trip gives it back: without the child field
    names it renames, seconds stored as milliseconds (Parquet has no seconds), large and plain
    strings alike (a categorical's dictionary comes back as plain strings)."""
    if pa.types.is_timestamp(data_type):
        unit = "ms" if data_type.unit == "s" else data_type.unit
        return f"timestamp[{unit}{', tz=' + data_type.tz if data_type.tz else ''}]"
    if pa.types.is_large_string(data_type) or pa.types.is_string(data_type):
        return "string"
    if pa.types.is_large_binary(data_type) or pa.types.is_binary(data_type):
        return "binary"
    if pa.types.is_dictionary(data_type):
        return f"dictionary<{canonical_type(data_type.value_type)}, {data_type.index_type}>"
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return f"list<{canonical_type(data_type.value_type)}>"
    if pa.types.is_fixed_size_list(data_type):
        return f"fixed_size_list<{canonical_type(data_type.value_type)}>[{data_type.list_size}]"
    if pa.types.is_struct(data_type):
        fields = ", ".join(
            f"{data_type.field(i).name}: {canonical_type(data_type.field(i).type)}"
            for i in range(data_type.num_fields)
        )
        return f"struct<{fields}>"
    return str(data_type)


def metadata_digest(metadata: dict[bytes, bytes]) -> str:
    """SHA-256 of every key-value entry except the integrity record itself."""
    digest = hashlib.sha256()
    for key in sorted(metadata):
        if key != INTEGRITY_METADATA_KEY:
            digest.update(key + b"\0" + metadata[key] + b"\0")
    return digest.hexdigest()


def with_integrity_record(table: pa.Table) -> pa.Table:
    """The table with `imgrank.integrity` added to its schema metadata (call it last).

    The record goes first in the footer's key-value list, so a flipped list length drops the
    other entries (caught by the digest), never the record; the marker entry, covered by the
    digest, tells a file whose record was damaged from a file written before records existed.
    """
    metadata = {**(table.schema.metadata or {}), INTEGRITY_MARKER_KEY: b"1"}
    record = {
        "format": INTEGRITY_FORMAT,
        "rows": table.num_rows,
        "columns": [[field.name, canonical_type(field.type)] for field in table.schema],
        "metadata_sha256": metadata_digest(metadata),
    }
    return table.replace_schema_metadata(
        {INTEGRITY_METADATA_KEY: json.dumps(record).encode(), **metadata}
    )


def integrity_problem(table: pa.Table) -> str | None:
    """What in a table read back disagrees with its integrity record (None: all agrees)."""
    return schema_integrity_problem(table.schema, table.num_rows)


def schema_integrity_problem(schema: pa.Schema, rows: int) -> str | None:
    """What in a schema and row count read back disagrees with the schema's integrity record
    (None: all agrees); the schema may hold only some of the written columns."""
    metadata = dict(schema.metadata or {})
    stored = metadata.get(INTEGRITY_METADATA_KEY)
    if stored is None:
        if INTEGRITY_MARKER_KEY in metadata:
            return "its integrity record is missing from the footer"
        if LINEAGE_KEY not in metadata:
            return "its footer has neither an integrity record nor a lineage"
        return None  # written by imgrank before integrity records existed
    record: dict[str, Any] = json.loads(stored)
    if metadata_digest(metadata) != record["metadata_sha256"]:
        return "its key-value metadata (lineage, attrs) does not match its checksum"
    if rows != record["rows"]:
        return f"it has {rows} rows but was written with {record['rows']}"
    written = {name: kind for name, kind in record["columns"]}
    for field in schema:
        if written.get(field.name) != canonical_type(field.type):
            return (
                f"column {field.name!r} reads as {canonical_type(field.type)} but was written "
                f"as {written.get(field.name, 'no such column')}"
            )
    return None


def corrupt_file_message(path: object, asset: str, cause: str) -> str:
    """The message of a failed read: the file, what is wrong, and how to repair it."""
    return (
        f"{asset}: the stored file {path} is corrupt or unreadable ({cause}); its data cannot "
        f"be trusted. Fix: materialize {asset} again for this partition (the run rewrites the "
        "file); if the read still fails, delete the file first."
    )
