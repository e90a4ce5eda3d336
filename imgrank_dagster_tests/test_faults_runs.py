"""kill -9 of real runs, and recovery without a manual step, with the real daemon.

One daemon session (`dagster-daemon run` on the project's dagster.yaml: run queue, run
monitoring, run retries, the sensors) over a copy of the ranked test pipeline:

1. Before the daemon starts, an ingestion run executed by the CLI in its own process is killed
   with -9 while fastdup runs: the run stays STARTED for ever, holding the fastdup pool slot, and
   a labels change is waiting. Nothing watches a CLI run but dead_runs_sensor.
2. With the daemon up, a ranking launched through the run queue is killed with -9 during a
   step: the code server reports it failed and Dagster's run retry re-executes it.
3. A labels change saved while labels_sensor watches the files between the daemon's passes is
   requested by that very tick, which succeeds.
Every process started here is stopped at the end.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import psutil
import pytest
from fault_timings import record_timing

from imgrank_dagster.defs.labels.sensors import LABELS_WATCH_ENV
from imgrank_dagster.lib.names import (
    APPLY_LABELS_JOB,
    FASTDUP_POOL,
    IMAGE_FEATURES,
    INGEST_SEQUENCES_JOB,
    LABELING_PRIORITY,
    RANK_COLLECTION_JOB,
    TRIGGER_TAG,
)
from imgrank_dagster.lib.runs_alive import worker_pid

pytestmark = pytest.mark.slow  # a daemon, a code server, real runs

REPOSITORY = Path(__file__).resolve().parent.parent
NEW_SEQUENCE = "town.seq-new"
PARENT_RUN_TAG = "dagster/parent_run_id"  # Dagster's run retry names the run it retries
TIMEOUT_S = 180


@dataclass
class DaemonPipeline:
    root: Path
    environment: dict[str, str]
    instance: dg.DagsterInstance

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def runs(self, job: str, **tags: str) -> list[dg.DagsterRun]:
        records = self.instance.get_run_records(dg.RunsFilter(job_name=job, tags=tags or None))
        return [record.dagster_run for record in records]

    def status(self, run_id: str) -> dg.DagsterRunStatus:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        return run.status

    def newest_ranking(self, collection: str) -> int:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(LABELING_PRIORITY, asset_partitions=[collection]), limit=1
        ).records
        return records[0].storage_id if records else -1

    def started_steps(self, run_id: str) -> list[str]:
        records = self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_START
        ).records
        return [r.event_log_entry.dagster_event.step_key or "" for r in records]


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> float:
    """Seconds until condition() is true; fails naming what did not happen."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def kill_9(pid: int) -> None:
    """SIGKILL a process and everything it started, at once (as the OOM killer or a closed
    terminal leaves a run)."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


@pytest.fixture(scope="module")
def daemon_pipeline(
    pipeline_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonPipeline]:
    root = tmp_path_factory.mktemp("daemon") / "pipeline"
    shutil.copytree(pipeline_root, root)
    home = root / "dagster_home"
    (home / "dagster.yaml").write_text((REPOSITORY / "dagster.yaml").read_text())
    definitions = Path(__file__).with_name("daemon_definitions.py")
    (root / "workspace.yaml").write_text(
        "load_from:\n  - python_file:\n"
        f"      relative_path: {definitions}\n"
        f"      working_directory: {REPOSITORY}\n"
        "      location_name: imgrank\n"
    )
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "IMGRANK_DATA_DIR": str(root / "data"),
        "IMGRANK_RETRY_BASE_SECONDS": "2",
    }
    environment.pop(LABELS_WATCH_ENV, None)  # the daemon watches as it does outside the tests
    with (
        pytest.MonkeyPatch.context() as patch,  # the instance's storage reads DAGSTER_HOME
    ):
        patch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield DaemonPipeline(root, environment, instance)


@dataclass
class Daemon:
    process: subprocess.Popen
    started_at: float


@pytest.fixture(scope="module")
def daemon(daemon_pipeline: DaemonPipeline) -> Iterator[Callable[[], Daemon]]:
    """Starts `dagster-daemon run` on first call; stops it and everything it started."""
    started: list[Daemon] = []

    def start() -> Daemon:
        if started:
            return started[0]
        log = open(daemon_pipeline.root / "daemon.log", "w")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run"],
            cwd=daemon_pipeline.root,
            env=daemon_pipeline.environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and run workers share the session
        )
        started.append(Daemon(process, time.monotonic()))
        return started[-1]

    yield start
    for running in started:
        os.killpg(running.process.pid, signal.SIGTERM)
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(running.process.pid, signal.SIGKILL)
            running.process.wait()
        with contextlib.suppress(ProcessLookupError):  # nothing of it may outlive the test
            os.killpg(running.process.pid, signal.SIGKILL)


CLI_INGESTION = """
import dagster as dg
from imgrank_dagster.definitions import build_definitions
job = build_definitions().resolve_job_def("ingest_sequences")
job.execute_in_process(instance=dg.DagsterInstance.get(), partition_key="{key}")
"""


def _add_sequence(pipeline: DaemonPipeline) -> None:
    images = pipeline.data_dir / "town" / "images"
    target = images / NEW_SEQUENCE.split(".", 1)[1]
    target.mkdir()
    for index, source in enumerate(sorted(images.glob("seq-*/*.jpg"))[:16]):
        shutil.copy(source, target / f"frame_{index:04d}.jpg")
    pipeline.instance.add_dynamic_partitions("sequences", [NEW_SEQUENCE])


def _kill_cli_ingestion_in_fastdup(pipeline: DaemonPipeline) -> str:
    cli = subprocess.Popen(
        [sys.executable, "-c", CLI_INGESTION.format(key=NEW_SEQUENCE)],
        cwd=pipeline.root,
        env=pipeline.environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def in_fastdup() -> bool:
            runs = pipeline.runs(INGEST_SEQUENCES_JOB, **{"dagster/partition": NEW_SEQUENCE})
            return bool(runs) and any(
                "image_features" in s for s in pipeline.started_steps(runs[0].run_id)
            )

        wait_for(in_fastdup, "the CLI ingestion to reach image_features", timeout=120)
        kill_9(cli.pid)
    finally:
        cli.kill()
        cli.wait()
    (run,) = pipeline.runs(INGEST_SEQUENCES_JOB, **{"dagster/partition": NEW_SEQUENCE})
    return run.run_id


def test_a_dead_cli_run_blocks_nothing_and_its_sequence_is_ingested_again(
    daemon_pipeline: DaemonPipeline, daemon: Callable[[], Daemon]
) -> None:
    pipeline = daemon_pipeline
    storage = pipeline.instance.event_log_storage
    _add_sequence(pipeline)
    dead_run = _kill_cli_ingestion_in_fastdup(pipeline)
    # What the issue saw: the run stays STARTED, its fastdup slot stays claimed.
    time.sleep(2)
    assert pipeline.status(dead_run) == dg.DagsterRunStatus.STARTED
    assert dead_run in storage.get_concurrency_run_ids()
    assert storage.get_concurrency_info(FASTDUP_POOL).claimed_slots
    # A labels change arrives meanwhile.
    labels = pipeline.data_dir / "city" / "labels" / "labels.csv"
    ranking = pd.read_parquet(
        pipeline.data_dir / "warehouse" / "labeling_priority" / "city.parquet"
    )
    labelled = pd.read_csv(labels)["image_id"].tolist() + ranking["image_id"].head(3).tolist()
    pd.DataFrame({"image_id": sorted(labelled)}).to_csv(labels, index=False)
    ranked_before = pipeline.newest_ranking("city")

    daemon()
    failed_after = wait_for(
        lambda: pipeline.status(dead_run) == dg.DagsterRunStatus.FAILURE, "the dead run failed"
    )
    freed_after = wait_for(
        lambda: dead_run not in storage.get_concurrency_run_ids(), "its pool slot freed"
    )
    ranked_after = wait_for(
        lambda: pipeline.newest_ranking("city") > ranked_before, "the new city ranking"
    )
    (label_run,) = pipeline.runs(APPLY_LABELS_JOB)
    wait_for(lambda: pipeline.status(label_run.run_id).name == "SUCCESS", "the label run done")
    ingested_after = wait_for(
        lambda: NEW_SEQUENCE in pipeline.instance.get_materialized_partitions(IMAGE_FEATURES),
        "the killed run's sequence ingested again",
    )
    (retry,) = pipeline.runs(INGEST_SEQUENCES_JOB, **{"imgrank/trigger": "ingestion_retry_sensor"})
    wait_for(lambda: pipeline.status(retry.run_id).name == "SUCCESS", "the retry run done")
    message = (
        pipeline.instance.get_records_for_run(dead_run, of_type=dg.DagsterEventType.RUN_FAILURE)
        .records[0]
        .event_log_entry.dagster_event.message
    )
    assert "worker process" in message and "is gone" in message
    record_timing(
        "dead CLI run (kill -9 in fastdup): marked failed after daemon start", failed_after
    )
    record_timing("dead CLI run: fastdup slot freed after daemon start", failed_after + freed_after)
    record_timing(
        "labels change with a dead run in the queue: new ranking after daemon start",
        failed_after + freed_after + ranked_after,
    )
    record_timing(
        "dead CLI run: its sequence ingested again after daemon start",
        failed_after + freed_after + ranked_after + ingested_after,
    )


def test_a_ranking_killed_during_a_step_is_retried_and_finishes(
    daemon_pipeline: DaemonPipeline, daemon: Callable[[], Daemon]
) -> None:
    pipeline = daemon_pipeline
    daemon()  # running since the test above, which this one follows
    ranked_before = pipeline.newest_ranking("town")

    # The sequence ingested again in the test above makes rank_after_ingestion_sensor rank town.
    def sensor_rankings() -> list[dg.DagsterRun]:
        runs = pipeline.runs(RANK_COLLECTION_JOB, **{TRIGGER_TAG: "rank_after_ingestion_sensor"})
        return [r for r in runs if PARENT_RUN_TAG not in r.tags]

    wait_for(sensor_rankings, "rank_after_ingestion_sensor to rank town with its new sequence")
    (run,) = sensor_rankings()
    wait_for(
        lambda: any("labeling_priority" in s for s in pipeline.started_steps(run.run_id)),
        "the ranking to reach its last step",
    )
    found = worker_pid(pipeline.instance, run.run_id)
    assert found is not None
    kill_9(found[0])
    killed = time.monotonic()
    failed_after = wait_for(
        lambda: pipeline.status(run.run_id) == dg.DagsterRunStatus.FAILURE,
        "the killed ranking failed",
    )

    def retry() -> dg.DagsterRun | None:
        found = [
            r
            for r in pipeline.runs(RANK_COLLECTION_JOB)
            if r.tags.get(PARENT_RUN_TAG) == run.run_id
        ]
        return found[0] if found else None

    wait_for(lambda: retry() is not None, "Dagster's retry of the killed ranking")
    retry_run = retry()
    assert retry_run is not None
    wait_for(lambda: pipeline.status(retry_run.run_id).name == "SUCCESS", "the retry done")
    ranked_after = time.monotonic() - killed
    written = pipeline.instance.get_records_for_run(
        retry_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    assets = {r.event_log_entry.dagster_event.asset_key for r in written}
    assert LABELING_PRIORITY in assets and pipeline.newest_ranking("town") > ranked_before
    record_timing("kill -9 during ranking: marked failed", failed_after)
    record_timing("kill -9 during ranking: retried ranking written", ranked_after)


def _labels_sensor_ticks(pipeline: DaemonPipeline) -> list:
    """labels_sensor's ticks, newest first."""
    (state,) = [s for s in pipeline.instance.all_instigator_state() if s.name == "labels_sensor"]
    return pipeline.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=50)


def test_a_labels_change_saved_during_the_watch_is_requested_by_that_tick(
    daemon_pipeline: DaemonPipeline, daemon: Callable[[], Daemon]
) -> None:
    """The daemon fails a tick whose result breaks its cursor rule, which left every change
    seen by the watch to the next pass, 5 s later, and a failed tick in the UI."""
    pipeline = daemon_pipeline
    daemon()  # running since the tests above
    ranked_before = pipeline.newest_ranking("city")
    label_runs_before = {run.run_id for run in pipeline.runs(APPLY_LABELS_JOB)}
    newest = _labels_sensor_ticks(pipeline)[0].timestamp
    wait_for(
        lambda: _labels_sensor_ticks(pipeline)[0].timestamp > newest, "a new labels_sensor tick"
    )
    watching = _labels_sensor_ticks(pipeline)[0]
    time.sleep(1.0)  # the tick's first look is done; its watch lasts 3.5 s from its start
    labels = pipeline.data_dir / "city" / "labels" / "labels.csv"
    ranking = pd.read_parquet(
        pipeline.data_dir / "warehouse" / "labeling_priority" / "city.parquet"
    )
    labelled = pd.read_csv(labels)["image_id"].tolist()
    new = [i for i in ranking["image_id"] if i not in set(labelled)][:2]
    pd.DataFrame({"image_id": sorted(labelled + new)}).to_csv(labels, index=False)
    wait_for(lambda: pipeline.newest_ranking("city") > ranked_before, "the new city ranking")
    (label_run,) = [r for r in pipeline.runs(APPLY_LABELS_JOB) if r.run_id not in label_runs_before]
    ticks = [t for t in _labels_sensor_ticks(pipeline) if t.timestamp >= watching.timestamp]
    (requested_by,) = [t for t in ticks if label_run.run_id in t.run_ids]
    assert requested_by.timestamp == watching.timestamp
    assert not [t for t in ticks if t.status.value == "FAILURE"], [
        t.error.message for t in ticks if t.error
    ]
