"""The one IO manager: every asset partition is one Parquet file that carries its own lineage.

Layout: `<base_path>/<asset key path>/<partition key>.parquet` (unpartitioned: `<asset>.parquet`).
`base_path` is any fsspec URL (a local folder, `s3://bucket/prefix`, `memory://...`). The file
format lives in lib.parquet; this module is the Dagster side: which files a step reads and
writes, the lineage that links them, and what the UI shows about them.

Inputs can ask for less through their metadata (build them with `columns_of` and
`own_sequences`): only some columns, only the upstream partitions a selector of
lib.partitions picks, and the frame's attrs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field
from upath import UPath

from imgrank_dagster.lib.columns import describe
from imgrank_dagster.lib.partitions import SEQUENCES_OF_COLLECTION, select_upstream_partitions

DATA_VERSION_METADATA = "data_version"
# Input metadata: read only these columns.
COLUMNS_METADATA = "columns"
# Input metadata: the name of a lib.partitions selector that picks the upstream partitions.
UPSTREAM_PARTITIONS_METADATA = "upstream_partitions"
# Input metadata: restore the frame's attrs (facts about the whole table stored with it).
ATTRS_METADATA = "attrs"
FAN_IN_READERS = 8


def columns_of(asset: str, columns: list[str], attrs: bool = False) -> dg.AssetIn:
    """An input that reads only these columns of an asset's file (and its attrs if asked)."""
    metadata: dict[str, object] = {COLUMNS_METADATA: columns}
    if attrs:
        metadata[ATTRS_METADATA] = True
    return dg.AssetIn(asset, metadata=metadata)


def own_sequences(columns: list[str] | None = None) -> dg.AssetIn:
    """A collection partition's input: the sequence partitions of its own collection only."""
    metadata: dict[str, object] = {UPSTREAM_PARTITIONS_METADATA: SEQUENCES_OF_COLLECTION}
    if columns is not None:
        metadata[COLUMNS_METADATA] = columns
    return dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata=metadata)


def column_schema(asset_key: dg.AssetKey, columns: list[tuple[str, str]]) -> dg.TableSchema:
    """The UI's column schema: name, type and what the column means (lib.columns)."""
    asset = asset_key.to_user_string()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, kind, description=describe(asset, name) or None)
            for name, kind in columns
        ]
    )


def _safe_join(base_path: UPath, partition: str) -> UPath:
    """base_path / partition; a partition key can never climb out: ".." segments are escaped."""
    segments = partition.lstrip("/").split("/")
    return base_path / "/".join("%2E%2E" if segment == ".." else segment for segment in segments)


def safe_metadata(context: dg.OutputContext, key: str, build: Callable[[], Any]) -> dict[str, Any]:
    """{key: build()}; if building it raises, a note instead and a warning in the log."""
    try:
        return {key: build()}
    except Exception as error:
        message = f"{key} could not be built: {type(error).__name__}: {str(error)[:300]}"
        context.log.warning(message)
        return {f"{key}_error": dg.MetadataValue.text(message)}


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
        from imgrank_dagster.lib.parquet import frame_data_version, schema_columns

        # A run over several partitions (a multi-partition backfill) returns one frame each.
        expected = set(context.asset_partition_keys)
        if set(obj) != expected:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: the output has partitions "
                f"{sorted(obj)} but the run materializes {sorted(expected)}"
            )
        paths = self._get_paths_for_partitions(context)
        tables = []
        for key, frame in obj.items():
            self.make_directory(paths[key].parent)
            table, _ = self._write(context, frame, paths[key], key, frame_data_version(frame))
            tables.append(table)
        folder = next(iter(paths.values())).parent
        # What every partition of the run shares; each partition's own figures (rows, counts)
        # are the asset's to add (lib.metadata.partitions_output).
        schema = safe_metadata(
            context,
            "dagster/column_schema",
            lambda: column_schema(context.asset_key, schema_columns(tables[0])),
        )
        context.add_output_metadata(
            {
                **schema,
                "run_partitions": dg.MetadataValue.int(len(obj)),
                "folder": dg.MetadataValue.path(str(folder)),
            }
        )
        self._clean_leftovers(context, folder)

    @staticmethod
    def _clean_leftovers(context: dg.OutputContext, folder: UPath) -> None:
        """Remove temporary files that killed writes left in the asset's folder."""
        from imgrank_dagster.lib.leftovers import clean_after_killed_writes

        try:
            clean_after_killed_writes(context.step_context.instance, folder, context.log)
        except Exception as error:  # cleaning up is best effort: the data is written
            context.log.warning(f"could not clean leftover temporary files in {folder}: {error}")

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        from imgrank_dagster.lib.parquet import preview_markdown, schema_columns

        data_version = self._output_data_version(context, obj)
        partition = context.partition_key if context.has_partition_key else None
        # The preview is built before the write and can never fail the step: either the step
        # succeeds with its file, or it fails and the file is not there.
        preview = safe_metadata(
            context, "preview", lambda: dg.MetadataValue.md(preview_markdown(obj))
        )
        table, upstream = self._write(context, obj, path, partition, data_version)
        schema = safe_metadata(
            context,
            "dagster/column_schema",
            lambda: column_schema(context.asset_key, schema_columns(table)),
        )
        context.add_output_metadata(
            {
                "dagster/row_count": dg.MetadataValue.int(len(obj)),
                **schema,
                **preview,
                DATA_VERSION_METADATA: dg.MetadataValue.text(data_version),
                "upstream_partitions": dg.MetadataValue.int(len(upstream)),
            }
        )
        self._clean_leftovers(context, path.parent)

    def _write(
        self,
        context: dg.OutputContext,
        obj: Any,
        path: UPath,
        partition: str | None,
        data_version: str,
    ) -> tuple[Any, list[dict[str, Any]]]:
        import pandas as pd

        from imgrank_dagster.lib.parquet import write_frame

        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: the Parquet IO manager stores pandas "
                f"DataFrames, got {type(obj).__name__}"
            )
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
        return write_frame(obj, path, lineage), upstream

    @staticmethod
    def _output_data_version(context: dg.OutputContext, obj: Any) -> str:
        given = (context.output_metadata or {}).get(DATA_VERSION_METADATA)
        if given is None:
            from imgrank_dagster.lib.parquet import frame_data_version

            return frame_data_version(obj)
        return str(getattr(given, "value", given))

    # -- reading ---------------------------------------------------------------------------
    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        from imgrank_dagster.lib.parquet import (
            read_table,
            table_attrs,
            table_lineage,
            table_to_frame,
        )

        metadata = context.definition_metadata or {}
        asset = context.asset_key.to_user_string() if context.has_asset_key else context.name
        table = read_table(path, metadata.get(COLUMNS_METADATA), asset)
        lineage = table_lineage(table)
        if context.has_asset_key:
            self._loaded_by_step[context.step_context.step.key].append(
                {
                    "asset_key": context.asset_key.to_user_string(),
                    "partition": lineage.get("partition"),
                    "data_version": lineage.get("data_version"),
                    "path": str(path),
                }
            )
        frame = table_to_frame(table)
        if metadata.get(ATTRS_METADATA):
            frame.attrs = table_attrs(table)
        return frame

    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_key or not context.has_asset_partitions:
            return super().load_input(context)
        keys = list(context.asset_partition_keys)
        selector = (context.definition_metadata or {}).get(UPSTREAM_PARTITIONS_METADATA)
        if selector:
            keys = select_upstream_partitions(selector, context.partition_key, keys)
        paths = self._get_paths_for_partitions(context)
        if self._is_fan_in(context):
            # Always a dict for a fan-in, also when exactly one partition is mapped. A partition
            # that was never written (its run failed) is left out, not fatal: the consumer sees
            # which keys arrived.
            def load(key: str) -> Any:
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

    def partition_path(self, asset: str, partition_key: str) -> UPath:
        """The file of one partition of an asset (it may not exist)."""
        return _safe_join(self._base_path / asset, f"{partition_key}{self.extension}")

    def read_partitions(
        self, asset: str, partition_keys: Iterable[str], columns: list[str] | None = None
    ) -> dict[str, Any]:
        """Stored partitions of an asset, read outside a run (sensors, the CLI).

        Partitions never written are left out, as in a fan-in.
        """
        from imgrank_dagster.lib.parquet import read_frame

        frames: dict[str, Any] = {}
        for key in partition_keys:
            path = self.partition_path(asset, key)
            if path.exists():
                frames[key] = read_frame(path, columns, asset)
        return frames


class ParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet files with lineage under `base_path` (a local folder or any fsspec URL)."""

    base_path: str = Field(description="Folder or fsspec URL (s3://...) for the asset files.")
    storage_options: dict[str, Any] = Field(default_factory=dict)

    def create_io_manager(self, context: dg.InitResourceContext) -> PartitionedParquetIOManager:
        from imgrank_dagster.lib.runs_alive import tag_worker_host

        tag_worker_host(context)
        return self.open()

    def open(self) -> PartitionedParquetIOManager:
        """The IO manager itself, to read stored partitions outside a run (the CLI, tools)."""
        return PartitionedParquetIOManager(UPath(self.base_path, **self.storage_options))
