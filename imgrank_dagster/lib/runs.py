"""Running the project's jobs in this process: what the CLI and the development tools do.

The runs go through the same jobs and the same Dagster instance as the UI (DAGSTER_HOME), so
all of it shows in the UI afterwards. Only public Dagster APIs: `execute_in_process` and
`DagsterInstance` methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import dagster as dg

from imgrank_dagster.core.config import Collection
from imgrank_dagster.core.config.keys import sequence_keys_of
from imgrank_dagster.lib.names import (
    IMAGE_FEATURES,
    INGEST_SEQUENCES_JOB,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
)
from imgrank_dagster.lib.partitions import (
    collection_partitions,
    sequence_partitions,
    unregistered_partitions,
)
from imgrank_dagster.lib.runs_alive import fail_dead_runs

# Runs started here log their progress lines and warnings, not every Dagster event.
INFO_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def register_partitions(
    instance: dg.DagsterInstance, collections: Iterable[Collection]
) -> list[str]:
    """Add the collections and their folder sequences as partitions; returns the problems."""
    added_collections, added_sequences, problems = unregistered_partitions(collections, instance)
    instance.add_dynamic_partitions(collection_partitions.name, added_collections)
    instance.add_dynamic_partitions(sequence_partitions.name, added_sequences)
    return problems


def run_job(
    definitions: dg.Definitions,
    instance: dg.DagsterInstance,
    job_name: str,
    partition_key: str,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """One run of a job for one partition; failures are reported in the result, not raised."""
    fail_dead_runs(instance)  # a killed earlier run must not hold a pool slot this run needs
    return definitions.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        tags=tags,
        run_config=INFO_LOGS,
        raise_on_error=False,
    )


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
    job = definitions.resolve_job_def(INGEST_SEQUENCES_JOB)
    for dead in fail_dead_runs(instance):  # e.g. a `make demo` killed during ingestion
        report(f"  {dead.describe()}: its worker is gone; marked failed, pool slots freed")
    failed: list[str] = []
    for keys in partition_ranges(all_keys, wanted, size):
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            tags={PARTITION_RANGE_START_TAG: keys[0], PARTITION_RANGE_END_TAG: keys[-1]},
            run_config=INFO_LOGS,
            raise_on_error=False,
        )
        status = "ok" if result.success else "FAILED"
        report(
            f"  {keys[0]} .. {keys[-1]} ({len(keys)} sequences): {status} "
            f"({time.perf_counter() - started:.1f} s)"
        )
        if not result.success:
            failed.extend(keys)
    return failed
