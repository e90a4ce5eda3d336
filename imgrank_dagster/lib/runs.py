"""Running the project's jobs in this process: what the CLI and the development tools do.

The runs go through the same jobs and the same Dagster instance as the UI (DAGSTER_HOME), so
all of it shows in the UI afterwards. Only public Dagster APIs: `execute_in_process` and
`DagsterInstance` methods.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterable

import dagster as dg

from imgrank_dagster.core.config import Collection
from imgrank_dagster.core.config.keys import collection_of, sequence_keys_of
from imgrank_dagster.lib.names import (
    ANNOTATION_BATCH,
    IMAGE_FEATURES,
    INGEST_SEQUENCES_JOB,
    LABELING_PRIORITY,
    LANE_TAG,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_TAG,
    SEND_ANNOTATION_BATCH_JOB,
)
from imgrank_dagster.lib.partitions import (
    collection_partitions,
    sequence_partitions,
    unregistered_partitions,
)
from imgrank_dagster.lib.runs_alive import fail_dead_runs, live_run_records


def register_partitions(
    instance: dg.DagsterInstance, collections: Iterable[Collection]
) -> list[str]:
    """Add the collections and their folder sequences as partitions; returns the problems."""
    added_collections, added_sequences, problems = unregistered_partitions(collections, instance)
    instance.add_dynamic_partitions(collection_partitions.name, added_collections)
    instance.add_dynamic_partitions(sequence_partitions.name, added_sequences)
    return problems


# (steps finished, steps in the job, the step running or just finished)
StepProgress = Callable[[int, int, str], None]


def _logs(level: str) -> dict:
    return {"loggers": {"console": {"config": {"log_level": level}}}}


class _StepWatcher:
    """Reports a run's step events while it executes in this thread (polls the instance)."""

    def __init__(
        self, instance: dg.DagsterInstance, run_id: str, total: int, report: StepProgress
    ) -> None:
        self._instance, self._run_id, self._total, self._report = instance, run_id, total, report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._done = 0

    def __enter__(self) -> _StepWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    def _poll(self) -> None:
        kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
        kinds.add(dg.DagsterEventType.STEP_FAILURE)
        try:
            events = self._instance.all_logs(self._run_id, of_type=kinds)
        except Exception:  # the run may not exist yet
            return
        finished = [e for e in events if e.dagster_event_type != dg.DagsterEventType.STEP_START]
        if events and (len(finished) != self._done or events[-1].step_key):
            self._done = len(finished)
            self._report(self._done, self._total, events[-1].step_key or "")

    def _watch(self) -> None:
        while not self._stop.wait(0.3):
            self._poll()


def run_job(
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    job_name: str,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
    *,
    log_level: str = "INFO",
    progress: StepProgress | None = None,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """One run of a job (for one partition, or the range its tags name); failures are in the
    result, not raised. progress, if given, hears of every step as it starts and ends."""
    fail_dead_runs(instance)  # a killed earlier run must not hold a pool slot this run needs
    job = definitions.resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    execute = functools.partial(
        job.execute_in_process,
        instance=instance,
        partition_key=partition_key,
        tags=tags,
        run_config={**_logs(log_level), **(run_config or {})},
        raise_on_error=False,
        run_id=run_id,
    )
    if progress is None:
        return execute()
    steps = len(job.asset_layer.executable_asset_keys)
    with _StepWatcher(instance, run_id, steps, progress):
        return execute()


def unembedded_sequences(instance: dg.DagsterInstance, collection: str) -> list[str]:
    """The registered sequences of a collection that have no image_features yet, in order."""
    done = instance.get_materialized_partitions(IMAGE_FEATURES)
    keys = instance.get_dynamic_partitions(sequence_partitions.name)
    return [key for key in sequence_keys_of(keys, collection) if key not in done]


def partition_ranges(all_keys: list[str], wanted: set[str], size: int) -> list[list[str]]:
    """Runs of keys that are consecutive in the partition order and all wanted, <= size each.

    A run over a range covers every key between its ends, so a range never spans a key that
    is not wanted (already ingested, or another collection's).
    """
    ranges: list[list[str]] = []
    current: list[str] = []
    for key in all_keys:
        if key not in wanted or len(current) == size:
            if current:
                ranges.append(current)
            current = []
        if key in wanted:
            current.append(key)
    if current:
        ranges.append(current)
    return ranges


def ingest_collection(
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    collection: str,
    report: Callable[[str], None] = print,
    *,
    log_level: str = "INFO",
    progress: StepProgress | None = None,
) -> list[str]:
    """Ingest every sequence of the collection not embedded yet; returns the failed keys.

    Sequences go in runs over ranges of consecutive partitions, at most as many per run as the
    ingestion assets' backfill policy allows (as a backfill from the UI does): fastdup then
    starts once per run instead of once per sequence.
    """
    policy = definitions.resolve_assets_def(IMAGE_FEATURES).backfill_policy
    size = (policy.max_partitions_per_run if policy else None) or 1
    wanted = set(unembedded_sequences(instance, collection))
    all_keys = instance.get_dynamic_partitions(sequence_partitions.name)
    for dead in fail_dead_runs(instance):  # e.g. a `make demo` killed during ingestion
        report(f"  {dead.describe()}: its worker is gone; marked failed, pool slots freed")
    failed: list[str] = []
    for keys in partition_ranges(all_keys, wanted, size):
        started = time.perf_counter()
        tags = {PARTITION_RANGE_START_TAG: keys[0], PARTITION_RANGE_END_TAG: keys[-1]}
        result = run_job(
            definitions,
            instance,
            INGEST_SEQUENCES_JOB,
            tags=tags,
            log_level=log_level,
            progress=progress,
        )
        status = "ok" if result.success else "FAILED"
        report(
            f"  {keys[0]} .. {keys[-1]} ({len(keys)} sequences): {status} "
            f"({time.perf_counter() - started:.1f} s)"
        )
        if not result.success:
            failed.extend(keys)
    return failed


def collections_with_active_runs(
    instance: dg.DagsterInstance, lanes: Iterable[str] | None = None
) -> set[str]:
    """Collections with a run queued or in progress (discovery, ingestion of one of their
    sequences, ranking, a label change, a view refresh).

    lanes: count only runs of these lanes, and runs without a lane (launched from the UI's
    asset graph: they may be anything).
    """
    wanted = None if lanes is None else set(lanes)
    busy: set[str] = set()
    for record in live_run_records(instance):  # a run whose worker is gone is not waited for
        tags = record.dagster_run.tags
        if wanted is not None and tags.get(LANE_TAG, "") not in wanted | {""}:
            continue
        for tag in (PARTITION_TAG, PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG):
            if tags.get(tag):
                busy.add(collection_of(tags[tag]))
    return busy


def send_batch(
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    collection: str,
    count: int | None = None,
    per_cluster: int | None = None,
) -> tuple[bool, str]:
    """Send a ranked collection's next batch (a run of annotation_batch); (ok, message)."""
    if collection not in instance.get_materialized_partitions(LABELING_PRIORITY):
        return False, f"collection {collection!r} is not ranked yet: rank it first"
    node = ANNOTATION_BATCH.to_user_string()
    config = {"count": count, "per_cluster": per_cluster}
    result = run_job(
        definitions,
        instance,
        SEND_ANNOTATION_BATCH_JOB,
        collection,
        run_config={"ops": {node: {"config": config}}},
    )
    if not result.success:
        failures = [event.message for event in result.all_events if event.is_step_failure]
        return False, f"sending failed: {'; '.join(failures) or 'see the run in the Dagster UI'}"
    metadata = result.asset_materializations_for_node(node)[0].metadata
    sent, target = metadata["sent_now"].value, metadata["target"].value
    if not sent:
        return True, f"{collection}: nothing new to send; the batch is in {target}"
    batch = metadata["batch"].value
    return True, f"{collection}: sent {sent} new image(s) as batch {batch} to {target}"
