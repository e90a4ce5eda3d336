"""The cluster profile for real: PostgreSQL, Redis, an S3 endpoint (moto's server, a stand-in),
two Celery workers, the webserver and the daemon as processes on 127.0.0.1 (the code of
`make cluster-demo`, imgrank_dagster.devtools.cluster), configured by environment variables only.

The test collections of conftest are ingested as a backfill and ranked through the Celery
executor, and compared with the same collections ranked by the local profile. Then a worker is
killed in the middle of a fastdup step.

Needs Debian's postgresql and redis-server (.ci/run installs them) and the `cluster` extra;
skipped without them unless IMGRANK_REQUIRE_CLUSTER=1 (CI), where that is a failure.
"""

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from imgrank_dagster.lib.celery_watch import LOST_AFTER_ENV
from imgrank_dagster.lib.names import (
    IMAGE_FEATURES,
    INGEST_SEQUENCES_JOB,
    LABELING_PRIORITY,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    RANK_COLLECTION_JOB,
    RAW_IMAGE_SEQUENCES,
)
from imgrank_dagster.lib.parquet import read_frame, read_lineage
from imgrank_dagster.lib.resources import ImgrankConfig
from imgrank_dagster.lib.runs import register_partitions

pytestmark = pytest.mark.slow

LOST_AFTER_SECONDS = "5"  # the test does not wait a minute for a dead worker
SEQUENCES_PER_RUN = "3"  # town's 5 sequences: one backfill, two ingestion runs at once


def _missing_parts() -> list[str]:
    import importlib.util

    missing = [
        module
        for module in ("dagster_celery", "dagster_postgres", "dagster_aws", "moto", "s3fs")
        if importlib.util.find_spec(module) is None
    ]
    if not shutil.which("redis-server"):
        missing.append("redis-server (apt-get install redis-server)")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        missing.append("PostgreSQL (apt-get install postgresql)")
    return missing


@dataclass
class RunningCluster:
    local: object  # devtools.cluster.LocalCluster
    client: object  # devtools.cluster.ClusterClient
    instance: dg.DagsterInstance
    data_dir: Path
    nodes: dict[str, str]  # worker name -> Celery node name

    def s3(self):
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.local.s3_endpoint,
            key="imgrank",
            secret="imgrank-stand-in",
            use_listings_cache=False,
        )

    def asset_path(self, asset: str, partition: str):
        from upath import UPath

        return UPath(f"{self.local.warehouse}/{asset}/{partition}.parquet")


@pytest.fixture(scope="module")
def cluster(pipeline_root: Path) -> Iterator[RunningCluster]:
    missing = _missing_parts()
    if missing:
        message = f"the cluster profile needs {', '.join(missing)}"
        if os.environ.get("IMGRANK_REQUIRE_CLUSTER"):
            pytest.fail(message)
        pytest.skip(message)
    from imgrank_dagster.devtools import cluster as local

    # Under /tmp: PostgreSQL's own user must reach its data folder (pytest's tmp is private).
    root = Path(tempfile.mkdtemp(prefix="imgrank-cluster-", dir="/tmp"))
    root.chmod(0o755)
    data_dir = root / "data"
    shutil.copytree(
        pipeline_root / "data",
        data_dir,
        ignore=shutil.ignore_patterns("warehouse", "exports", "fiftyone"),
    )
    running = local.LocalCluster(
        root / "cluster",
        data_dir,
        workers=2,
        fast_database=True,
        extra_env={
            "IMGRANK_SEQUENCES_PER_RUN": SEQUENCES_PER_RUN,
            LOST_AFTER_ENV: LOST_AFTER_SECONDS,
        },
        report=lambda line: None,
    )
    with pytest.MonkeyPatch.context() as patch:
        try:
            running.start_services()
            running.check()
            running.create_instance_tables()
            environment = running.environment()
            for name, value in environment.items():
                if os.environ.get(name) != value:
                    patch.setenv(name, value)
            instance = dg.DagsterInstance.get()
            assert not register_partitions(
                instance, ImgrankConfig(data_dir=str(data_dir)).collections().values()
            )
            names = running.start_workers()
            running.start_webserver()
            nodes = running.wait_for_workers(names)
            running.wait_for_webserver()
            client = local.ClusterClient(local.HOST, running.ports["webserver"], instance)
            client.stop_automation()  # only the runs the tests launch
            running.start_daemon()
            yield RunningCluster(running, client, instance, data_dir, nodes)
        finally:
            running.stop()
            shutil.rmtree(root, ignore_errors=True)


def _step_windows(
    instance: dg.DagsterInstance, run_ids: list[str], step: str
) -> list[tuple[float, float]]:
    """(start, end) of the step in each run, from the event log."""
    windows = []
    for run_id in run_ids:
        starts = [
            entry.timestamp
            for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
            if entry.step_key == step
        ]
        ends = [
            entry.timestamp
            for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            if entry.step_key == step
        ]
        assert len(starts) == 1 and len(ends) == 1, (run_id, step)
        windows.append((starts[0], ends[0]))
    return sorted(windows)


def test_backfill_and_ranking_on_two_celery_workers_match_the_local_profile(
    cluster: RunningCluster, ranked_pipeline
) -> None:
    from imgrank_dagster.devtools.cluster import ingest_and_rank, workers_of_runs

    processes = list(cluster.local.processes.values())
    runs = ingest_and_rank(cluster.client, "town", 420, processes, report=lambda line: None)
    run_ids = [run.run_id for run in [*runs.ingestion, runs.ranking]]
    assert len(runs.ingestion) == 2  # 5 sequences, at most 3 per run
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs.ingestion)

    # Both workers executed steps, and every step ran on a worker.
    executed = workers_of_runs(cluster.instance, run_ids)
    assert set(executed) == set(cluster.nodes.values()), executed
    ranking_steps = {
        step
        for steps in workers_of_runs(cluster.instance, [runs.ranking.run_id]).values()
        for _, step in steps
    }
    assert LABELING_PRIORITY.to_user_string() in ranking_steps

    # The pools held across workers: the two runs' fastdup steps (pool "fastdup") never
    # overlapped, nor did their raw_image_sequences steps (pool "kartaview").
    ingestion_ids = [run.run_id for run in runs.ingestion]
    for step in ("image_features", "raw_image_sequences"):
        (first_start, first_end), (second_start, _) = _step_windows(
            cluster.instance, ingestion_ids, step
        )
        assert first_end <= second_start, (step, first_start, first_end, second_start)

    # The same ranking as the local profile's for the same collection and seed.
    cluster_ranking = read_frame(cluster.asset_path("labeling_priority", "town"))
    pd.testing.assert_frame_equal(
        cluster_ranking, ranked_pipeline.read("labeling_priority", "town")
    )

    # Every asset partition is a Parquet object in the bucket carrying its lineage; nothing was
    # written to a local warehouse.
    assert not (cluster.data_dir / "warehouse").exists()
    graph = ranked_pipeline.defs.resolve_asset_graph()
    jobs = (INGEST_SEQUENCES_JOB, RANK_COLLECTION_JOB)
    town_sequences = sorted(
        key
        for key in cluster.instance.get_dynamic_partitions("sequences")
        if key.startswith("town.")
    )
    for job in jobs:
        for key in ranked_pipeline.defs.resolve_job_def(job).asset_layer.executable_asset_keys:
            asset = key.to_user_string()
            partitions = town_sequences if job == INGEST_SEQUENCES_JOB else ["town"]
            for partition in partitions:
                lineage = read_lineage(cluster.asset_path(asset, partition))
                assert lineage["asset_key"] == asset
                assert lineage["partition"] == partition
                assert lineage["run_id"] in run_ids
                assert lineage["code_version"] == graph.get(key).code_version
                if asset != RAW_IMAGE_SEQUENCES.to_user_string():
                    assert lineage["upstream"], asset

    # Step logs (stdout/stderr) went to the bucket through dagster-aws.
    logs = cluster.s3().find("imgrank/compute-logs")
    assert [name for name in logs if runs.ranking.run_id in name]

    # The run history is in PostgreSQL (and there is no SQLite history beside it).
    import psycopg2

    url = cluster.local.postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("select run_id, status from runs")
        statuses = dict(cursor.fetchall())
        cursor.execute(
            "select count(*) from event_logs where run_id = %s and dagster_event_type = %s",
            (runs.ranking.run_id, "ASSET_MATERIALIZATION"),
        )
        (materializations,) = cursor.fetchone()
    assert {run_id: statuses.get(run_id) for run_id in run_ids} == dict.fromkeys(run_ids, "SUCCESS")
    assert materializations >= 10
    assert not list(cluster.local.dagster_home.rglob("*.db"))


def _wait_for_engine_event(
    instance: dg.DagsterInstance, run_id: str, step: str, timeout: float
) -> str:
    """The Celery worker that started executing the step (from dagster-celery's event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            metadata = entry.dagster_event.engine_event_data.metadata
            if entry.step_key == step and "Celery worker" in metadata:
                return str(metadata["Celery worker"].value)
        run = instance.get_run_by_id(run_id)
        assert run.status not in {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}, run
        time.sleep(0.1)
    raise AssertionError(f"{step} did not start on a worker within {timeout} s")


def test_a_worker_killed_mid_step_fails_the_run_loudly_and_its_retry_completes(
    cluster: RunningCluster, ranked_pipeline
) -> None:
    instance, client = cluster.instance, cluster.client
    keys = sorted(k for k in instance.get_dynamic_partitions("sequences") if k.startswith("city."))
    run_id = client.launch_run(
        INGEST_SEQUENCES_JOB,
        tags={PARTITION_RANGE_START_TAG: keys[0], PARTITION_RANGE_END_TAG: keys[-1]},
    )
    step = IMAGE_FEATURES.to_user_string()
    node = _wait_for_engine_event(instance, run_id, step, 240)
    victim = cluster.local.processes[node.split("@", 1)[0]]
    victim.kill()  # the worker and its pool process, at once, mid-step

    failed = client.wait_for_run(run_id, 180)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    messages = " ".join(
        str(entry.dagster_event.event_specific_data) + (entry.user_message or "")
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is not None
    )
    assert f"celery worker {node} stopped answering" in messages
    assert not [
        entry
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        if entry.step_key == step
    ], "the step finished before the worker was killed"

    # The daemon re-executes the run from the failure, on the worker that is left.
    def retried() -> list[dg.DagsterRun]:
        return client.runs({"dagster/parent_run_id": run_id})

    deadline = time.monotonic() + 120
    while not retried() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert retried(), "no retry of the failed run"
    retry = client.wait_for_run(retried()[0].run_id, 240)
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    from imgrank_dagster.devtools.cluster import workers_of_runs

    survivors = set(cluster.nodes.values()) - {node}
    assert set(workers_of_runs(instance, [retry.run_id])) == survivors

    # No image lost or duplicated: every sequence's features hold exactly its accepted images,
    # the same as the local profile's; no Parquet file torn, no temporary file left.
    s3 = cluster.s3()
    for key in keys:
        raw = read_frame(cluster.asset_path(RAW_IMAGE_SEQUENCES.to_user_string(), key))
        features = read_frame(cluster.asset_path(step, key))
        accepted = raw.loc[raw["status"] == "ok", "image_id"]
        assert features["image_id"].is_unique, key
        assert list(features["image_id"]) == list(accepted), key
        local = ranked_pipeline.read(step, key)
        assert list(features["image_id"]) == list(local["image_id"]), key
        assert list(features["status"]) == list(local["status"]), key
        assert read_lineage(cluster.asset_path(step, key))["run_id"] == retry.run_id
    objects = s3.find("imgrank/warehouse")
    assert objects and all(name.endswith(".parquet") for name in objects), objects
    for name in objects:
        with s3.open(name, "rb") as handle:
            pq.read_metadata(handle)  # a torn file has no footer
