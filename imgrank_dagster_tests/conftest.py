"""Shared fixtures: a small generated collection ingested and ranked once per session on a real
Dagster instance, and a private MongoDB for the FiftyOne tests.

Real parts throughout: generated JPEGs, real fastdup, real Parquet files, a real (temporary,
SQLite) Dagster instance. Tests that change labels work on their own copy (`fresh_pipeline`).
"""

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from upath import UPath

from imgrank_dagster.definitions import build_definitions
from imgrank_dagster.defs.labels.sensors import LABELS_WATCH_ENV
from imgrank_dagster.devtools.demo_collection import DemoSummary, generate_demo_collection
from imgrank_dagster.lib.io_manager import PartitionedParquetIOManager
from imgrank_dagster.lib.names import EMBEDDING_MAP
from imgrank_dagster.lib.parquet import read_frame
from imgrank_dagster.lib.partitions import sequence_partitions
from imgrank_dagster.lib.resources import ImgrankConfig, build_resources
from imgrank_dagster.lib.runs import register_partitions

# The tests evaluate labels_sensor directly, each evaluation once: its watch for changes
# (the daemon's case) has a test of its own that sets the window.
os.environ[LABELS_WATCH_ENV] = "0"

# name: (images, sequences, seed, strategy)
TEST_COLLECTIONS = {"city": (96, 8, 3, "study"), "town": (30, 5, 4, "coverage")}


# --- FiftyOne: a private MongoDB, started only for the tests that use FiftyOne ----------------
# FiftyOne's own database service would attach to any FiftyOne database already running for
# this user (`make app`, another test run), whatever that database's folder; a mongod of our own
# on a free port keeps the tests off data/fiftyone and off other runs. It is started by the first
# test that asks for `fiftyone_database`, gets SIGTERM if pytest dies, and is stopped and deleted
# at the end of the session.


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def fiftyone_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private mongod for FiftyOne on 127.0.0.1; yields its URI."""
    spec = importlib.util.find_spec("fiftyone")  # finds the package without importing it
    mongod = Path(spec.origin).parent / "db" / "bin" / "mongod" if spec and spec.origin else None
    if mongod is None or not os.access(mongod, os.X_OK):
        pytest.fail(f"FiftyOne's mongod is missing ({mongod}): run `make install`")
    folder = tmp_path_factory.mktemp("fiftyone")
    (folder / "db").mkdir()
    port = _free_port()
    command = [mongod, "--dbpath", folder / "db", "--port", str(port)]
    command += ["--bind_ip", "127.0.0.1", "--nounixsocket", "--logpath", folder / "mongod.log"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    uri = f"mongodb://127.0.0.1:{port}/"
    # FiftyOne reads these when first imported; if it was imported already (a test module
    # imported it at collection), its config is set directly: it connects on first use.
    os.environ["FIFTYONE_DATABASE_URI"] = uri
    os.environ["FIFTYONE_DATABASE_DIR"] = str(folder / "db")
    if "fiftyone" in sys.modules:
        import fiftyone as fo

        fo.config.database_uri = uri
        fo.config.database_dir = str(folder / "db")
    try:
        yield uri
    finally:
        database = sys.modules.get("fiftyone.core.odm.database")
        if database is not None:
            database._disconnect()  # FiftyOne's exit hook then skips the (stopped) database
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
        return read_frame(UPath(self.warehouse / asset / f"{partition}.parquet"))

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
            labels_path=data_dir / name / "labels" / "labels.csv",
            n_images=images,
            n_sequences=sequences,
            n_labelled=0,
            n_duplicate_groups=0,
            defect_counts={},
        )
        for name, (images, sequences, _, _) in TEST_COLLECTIONS.items()
    }
    return Pipeline(data_dir, warehouse, instance, defs, demos)


def build_pipeline(root: Path, instance: dg.DagsterInstance) -> Pipeline:
    data_dir = root / "data"
    for name, (images, sequences, seed, _) in TEST_COLLECTIONS.items():
        generate_demo_collection(data_dir / name, n_images=images, n_sequences=sequences, seed=seed)
    collections = {
        name: {
            "source": {"type": "folder", "path": f"{name}/images"},
            "labels": f"{name}/labels",
            "strategy": strategy,
        }
        for name, (_, _, _, strategy) in TEST_COLLECTIONS.items()
    }
    (data_dir / "collections.yaml").write_text(yaml.safe_dump({"collections": collections}))
    pipeline = _pipeline(root, instance)
    assert not register_partitions(instance, pipeline.imgrank.collections().values())
    for key in instance.get_dynamic_partitions(sequence_partitions.name):
        assert pipeline.run_job("ingest_sequences", key).success
    for name in TEST_COLLECTIONS:
        assert pipeline.run_job("rank_collection", name).success
        # The map every view reads (the report's and FiftyOne's tests build those themselves).
        assert dg.materialize(
            list(pipeline.defs.assets),
            selection=[EMBEDDING_MAP],
            partition_key=name,
            instance=instance,
            resources=pipeline.defs.resources,
        ).success
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


# --- markers ----------------------------------------------------------------------------------
# Tests that build or copy the ranked pipeline, or start FiftyOne's database, are slow: they
# run real fastdup ingestion and rankings or a MongoDB. `pytest -m "not slow"` leaves them out.
SLOW_FIXTURES = frozenset(
    {"pipeline_root", "ranked_pipeline", "fresh_pipeline", "fiftyone_database"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
