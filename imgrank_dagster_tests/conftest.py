"""A small generated collection, ingested and ranked once per session on a real Dagster instance.

Real parts throughout: generated JPEGs, real fastdup, real Parquet files, a real (temporary,
SQLite) Dagster instance. Tests that change labels work on their own copy (`fresh_pipeline`).
"""

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from imgrank_dagster.core.demo import DemoSummary, generate_demo_collection
from imgrank_dagster.definitions import build_definitions
from imgrank_dagster.defs.ingestion.sensors import new_partitions
from imgrank_dagster.partitions import collection_partitions, sequence_partitions
from imgrank_dagster.resources import ImgrankConfig, build_resources
from imgrank_dagster.resources.parquet_io_manager import PartitionedParquetIOManager

TEST_COLLECTIONS = {"city": (96, 8, 3), "town": (30, 5, 4)}  # images, sequences, seed


@dataclass
class Pipeline:
    data_dir: Path
    warehouse: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    demos: dict[str, DemoSummary]

    @property
    def imgrank(self) -> ImgrankConfig:
        return ImgrankConfig(data_dir=str(self.data_dir))

    @property
    def io_manager(self) -> PartitionedParquetIOManager:
        from upath import UPath

        return PartitionedParquetIOManager(UPath(str(self.warehouse)))

    def read(self, asset: str, partition: str) -> pd.DataFrame:
        return pd.read_parquet(self.warehouse / asset / f"{partition}.parquet")

    def run_job(self, name: str, partition: str, **kwargs) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(name)
        return job.execute_in_process(instance=self.instance, partition_key=partition, **kwargs)

    def materialization_count(self, asset: str, partition: str) -> int:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
            limit=1000,
        )
        return len(records.records)


def _pipeline(root: Path, instance: dg.DagsterInstance) -> Pipeline:
    data_dir = root / "data"
    warehouse = data_dir / "warehouse"
    defs = build_definitions(build_resources(data_dir=data_dir, warehouse=str(warehouse)))
    demos = {
        name: DemoSummary(
            root=data_dir / name,
            images_dir=data_dir / name / "images",
            manifest_path=data_dir / name / "manifest.csv",
            labels_path=data_dir / name / "labels.csv",
            n_images=images,
            n_sequences=sequences,
            n_labelled=0,
            n_duplicate_groups=0,
            defect_counts={},
        )
        for name, (images, sequences, _) in TEST_COLLECTIONS.items()
    }
    return Pipeline(data_dir, warehouse, instance, defs, demos)


def build_pipeline(root: Path, instance: dg.DagsterInstance) -> Pipeline:
    data_dir = root / "data"
    for name, (images, sequences, seed) in TEST_COLLECTIONS.items():
        generate_demo_collection(data_dir / name, n_images=images, n_sequences=sequences, seed=seed)
    collections = {
        name: {
            "source": {"type": "folder", "path": f"{name}/images"},
            "labels": f"{name}/labels.csv",
        }
        for name in TEST_COLLECTIONS
    }
    (data_dir / "collections.yaml").write_text(yaml.safe_dump({"collections": collections}))
    pipeline = _pipeline(root, instance)
    added_collections, added_sequences, problems = new_partitions(
        pipeline.imgrank.collections().values(), instance
    )
    assert not problems
    instance.add_dynamic_partitions(collection_partitions.name, added_collections)
    instance.add_dynamic_partitions(sequence_partitions.name, added_sequences)
    for key in added_sequences:
        assert pipeline.run_job("ingest_sequences", key).success
    for name in TEST_COLLECTIONS:
        assert pipeline.run_job("rank_collection", name).success
    return pipeline


@pytest.fixture(scope="session")
def pipeline_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Built once: a root holding data/ and dagster_home/ of a ranked pipeline."""
    root = tmp_path_factory.mktemp("ranked")
    (root / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
        build_pipeline(root, instance)
    yield root


@pytest.fixture(scope="session")
def ranked_pipeline(pipeline_root: Path) -> Iterator[Pipeline]:
    """Read-only: tests must not change its labels or re-run its assets."""
    with dg.instance_for_test(temp_dir=str(pipeline_root / "dagster_home")) as instance:
        yield _pipeline(pipeline_root, instance)


@pytest.fixture
def fresh_pipeline(pipeline_root: Path, tmp_path: Path) -> Iterator[Pipeline]:
    """A copy of the ranked pipeline (files and instance), for tests that change it."""
    root = tmp_path / "pipeline"
    shutil.copytree(pipeline_root, root)
    with dg.instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
        yield _pipeline(root, instance)
