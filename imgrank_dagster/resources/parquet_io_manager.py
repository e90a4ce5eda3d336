"""The one IO manager: every asset partition is one Parquet file that carries its own lineage.

Layout: `<base_path>/<asset key path>/<partition key>.parquet` (unpartitioned: `<asset>.parquet`).
`base_path` is any fsspec URL (a local folder, `s3://bucket/prefix`, `memory://...`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster._core.storage.upath_io_manager import escape_dotdot_segments
from pydantic import Field
from upath import UPath

LINEAGE_METADATA_KEY = b"imgrank.lineage"
DATA_VERSION_METADATA = "data_version"
# Input metadata flag: a collection partition reads only the sequence partitions of its own
# collection ("<collection>.<sequence>") out of an AllPartitionMapping fan-in.
OWN_SEQUENCES_ONLY = "own_sequences_only"
# Input metadata: read only these columns (the ranking needs no embeddings).
COLUMNS_METADATA = "columns"
PREVIEW_ROWS = 10
FAN_IN_READERS = 8


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
    return digest.hexdigest()[:24]


def read_lineage(path: str | UPath) -> dict[str, Any]:
    """The lineage a Parquet file written by this IO manager carries."""
    upath = UPath(path)
    with upath.open("rb") as handle:
        metadata = pq.read_schema(handle).metadata or {}
    return json.loads(metadata[LINEAGE_METADATA_KEY]) if LINEAGE_METADATA_KEY in metadata else {}


def _schema_metadata(table: pa.Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name=field.name, type=str(field.type)) for field in table.schema]
    )


def _preview_markdown(frame: pd.DataFrame) -> str:
    preview = frame.head(PREVIEW_ROWS).copy()
    for name in preview.columns:
        first = preview[name].iloc[0] if len(preview) else None
        if isinstance(first, np.ndarray | list):
            preview[name] = preview[name].map(lambda v: f"[{len(v)} values]")
    return preview.to_markdown(index=False) if len(preview) else "(no rows)"


def _safe_join(base_path: UPath, partition: str) -> UPath:
    # A partition key can never climb out of its asset's folder.
    return base_path / escape_dotdot_segments(partition.lstrip("/"))


class PartitionedParquetIOManager(dg.UPathIOManager):
    extension = ".parquet"

    def __init__(self, base_path: UPath) -> None:
        super().__init__(base_path=base_path)
        # What each step loaded: written into the lineage of what that step outputs.
        self._loaded_by_step: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def make_safe_partition_path(self, base_path: UPath, partition: str) -> UPath:
        return _safe_join(base_path, partition)

    # -- writing ---------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not (context.has_asset_partitions and isinstance(obj, dict)):
            super().handle_output(context, obj)
            return
        # A run over several partitions (a multi-partition backfill) returns one frame each.
        expected = set(context.asset_partition_keys)
        if set(obj) != expected:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: the output has partitions "
                f"{sorted(obj)} but the run materializes {sorted(expected)}"
            )
        paths = self._get_paths_for_partitions(context)
        for key, frame in obj.items():
            self.make_directory(paths[key].parent)
            self._write(context, frame, paths[key], key, frame_data_version(frame))
        context.add_output_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(sum(len(f) for f in obj.values())),
                "partitions_written": dg.MetadataValue.int(len(obj)),
                "folder": dg.MetadataValue.path(str(next(iter(paths.values())).parent)),
            }
        )

    def dump_to_path(self, context: dg.OutputContext, obj: pd.DataFrame, path: UPath) -> None:
        data_version = self._output_data_version(context, obj)
        partition = context.partition_key if context.has_partition_key else None
        table, upstream = self._write(context, obj, path, partition, data_version)
        context.add_output_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(len(obj)),
                "dagster/column_schema": _schema_metadata(table),
                "preview": dg.MetadataValue.md(_preview_markdown(obj)),
                DATA_VERSION_METADATA: dg.MetadataValue.text(data_version),
                "upstream_partitions": dg.MetadataValue.int(len(upstream)),
            }
        )

    def _write(
        self,
        context: dg.OutputContext,
        obj: pd.DataFrame,
        path: UPath,
        partition: str | None,
        data_version: str,
    ) -> tuple[pa.Table, list[dict[str, Any]]]:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: the Parquet IO manager stores pandas "
                f"DataFrames, got {type(obj).__name__}"
            )
        table = pa.Table.from_pandas(obj, preserve_index=False)
        loaded = self._loaded_by_step.get(context.step_key, [])
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            # In a multi-partition run, a partition's lineage is its own upstream partition.
            loaded = [item for item in loaded if item["partition"] == partition] or loaded
        upstream = sorted(loaded, key=lambda item: (item["asset_key"], item["partition"] or ""))
        lineage = {
            "asset_key": context.asset_key.to_user_string(),
            "partition": partition,
            "run_id": context.run_id,
            "code_version": context.step_context.job_def.asset_layer.get(
                context.asset_key
            ).code_version,
            "data_version": data_version,
            "upstream": upstream,
            "created_at": datetime.now(UTC).isoformat(),
        }
        metadata = dict(table.schema.metadata or {})
        metadata[LINEAGE_METADATA_KEY] = json.dumps(lineage).encode()
        table = table.replace_schema_metadata(metadata)
        # Write beside the target and rename: readers never see half a file, and a failed
        # write leaves the previous file as it was.
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with temporary.open("wb") as handle:
                pq.write_table(table, handle)
            temporary.rename(path)
        except BaseException:
            if temporary.exists():
                temporary.unlink()
            raise
        return table, upstream

    @staticmethod
    def _output_data_version(context: dg.OutputContext, obj: pd.DataFrame) -> str:
        given = (context.output_metadata or {}).get(DATA_VERSION_METADATA)
        if given is None:
            return frame_data_version(obj)
        return str(getattr(given, "value", given))

    # -- reading ---------------------------------------------------------------------------
    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        columns = (context.definition_metadata or {}).get(COLUMNS_METADATA)
        asset = context.asset_key.to_user_string() if context.has_asset_key else context.name
        table = _read_table(path, columns, asset)
        lineage_bytes = (table.schema.metadata or {}).get(LINEAGE_METADATA_KEY)
        lineage = json.loads(lineage_bytes) if lineage_bytes else {}
        if context.has_asset_key:
            self._loaded_by_step[context.step_context.step.key].append(
                {
                    "asset_key": context.asset_key.to_user_string(),
                    "partition": lineage.get("partition"),
                    "data_version": lineage.get("data_version"),
                    "path": str(path),
                }
            )
        return table.to_pandas()

    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_key or not context.has_asset_partitions:
            return super().load_input(context)
        keys = list(context.asset_partition_keys)
        if (context.definition_metadata or {}).get(OWN_SEQUENCES_ONLY):
            prefix = f"{context.partition_key}."
            keys = [key for key in keys if key.startswith(prefix)]
        paths = self._get_paths_for_partitions(context)
        if self._is_fan_in(context):
            # Always a dict for a fan-in, also when exactly one partition is mapped. A partition
            # that was never written (its run failed) is left out, not fatal: the consumer sees
            # which keys arrived.
            def load(key: str) -> pd.DataFrame | None:
                try:
                    return self.load_from_path(context, paths[key])
                except FileNotFoundError:
                    context.log.warning(f"{context.asset_key.to_user_string()} [{key}]: no file")
                    return None

            # Many small files: reading them concurrently hides the per-file latency.
            with ThreadPoolExecutor(max_workers=FAN_IN_READERS) as pool:
                loaded = dict(zip(keys, pool.map(load, keys), strict=True))
            return {key: frame for key, frame in loaded.items() if frame is not None}
        frames = {key: self.load_from_path(context, paths[key]) for key in keys}
        if len(frames) == 1:
            return next(iter(frames.values()))
        return frames  # a run over several partitions of the same definition

    @staticmethod
    def _is_fan_in(context: dg.InputContext) -> bool:
        """A fan-in is decided by the partitions definitions, never by how many keys arrived."""
        return context.asset_partitions_def != context.step_context.run_partitions_def

    def read_partitions(
        self, asset: str, partition_keys: Iterable[str], columns: list[str] | None = None
    ) -> dict[str, pd.DataFrame]:
        """Stored partitions of an asset, read outside a run (sensors, the CLI).

        Partitions never written are left out, as in a fan-in.
        """
        folder = self._base_path / asset
        frames: dict[str, pd.DataFrame] = {}
        for key in partition_keys:
            path = _safe_join(folder, f"{key}{self.extension}")
            if path.exists():
                frames[key] = _read_table(path, columns, asset).to_pandas()
        return frames


def _read_table(path: UPath, columns: list[str] | None, asset: str) -> pa.Table:
    with path.open("rb") as handle:
        try:
            return pq.read_table(handle, columns=columns)
        except pa.ArrowInvalid:
            handle.seek(0)
            missing = sorted(set(columns or []) - set(pq.read_schema(handle).names))
            if not missing:
                raise
    raise ValueError(
        f"{asset}: {path} has no column(s) {missing}; it was written by an earlier version "
        f"of {asset}: materialize {asset} again"
    )


class ParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet files with lineage under `base_path` (a local folder or any fsspec URL)."""

    base_path: str = Field(description="Folder or fsspec URL (s3://...) for the asset files.")
    storage_options: dict[str, Any] = Field(default_factory=dict)

    def create_io_manager(self, context: dg.InitResourceContext) -> PartitionedParquetIOManager:
        return PartitionedParquetIOManager(UPath(self.base_path, **self.storage_options))
