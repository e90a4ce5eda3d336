"""Resources shared by every domain: where things live, and the one IO manager."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from imgrank_dagster.core.config import (
    Collection,
    CollectionConfigError,
    load_collections,
    load_collections_tolerant,
)
from imgrank_dagster.lib.io_manager import ParquetIOManager
from imgrank_dagster.lib.names import FIFTYONE_DB_DIR
from imgrank_dagster.lib.services import WAREHOUSE_ENV, warehouse_storage_options


def default_data_dir() -> Path:
    return Path(os.environ.get("IMGRANK_DATA_DIR", Path.cwd() / "data")).resolve()


class ImgrankConfig(dg.ConfigurableResource):
    """Where the collections file and the exports are."""

    data_dir: str

    @property
    def collections_file(self) -> Path:
        return Path(self.data_dir) / "collections.yaml"

    def collections(self) -> dict[str, Collection]:
        return load_collections(self.collections_file)

    def collections_and_problems(self) -> tuple[dict[str, Collection], dict[str, str]]:
        """(valid collections, problem of each invalid one): what sensors use, so that one
        broken collection never stops the others. An unreadable file still raises."""
        return load_collections_tolerant(self.collections_file)

    def collection(self, name: str) -> Collection:
        """One collection; another collection's mistake in the file does not matter here."""
        collections, problems = self.collections_and_problems()
        if name in problems:
            raise CollectionConfigError(problems[name])
        if name not in collections:
            raise CollectionConfigError(
                f"{self.collections_file}: no collection named {name!r} "
                f"(known: {', '.join(sorted(collections))})"
            )
        return collections[name]

    def exports_dir(self, collection: str) -> Path:
        return Path(self.data_dir) / "exports" / collection

    @property
    def fiftyone_database_dir(self) -> Path:
        return Path(self.data_dir) / FIFTYONE_DB_DIR


def build_resources(data_dir: Path | None = None, warehouse: str | None = None) -> dict:
    data_dir = data_dir or default_data_dir()
    warehouse = warehouse or os.environ.get(WAREHOUSE_ENV, str(data_dir / "warehouse"))
    return {
        "imgrank": ImgrankConfig(data_dir=str(data_dir)),
        # s3://...: the endpoint (AWS_ENDPOINT_URL) and credentials of the environment.
        "io_manager": ParquetIOManager(
            base_path=warehouse, storage_options=warehouse_storage_options(warehouse)
        ),
    }
