"""A sequence whose ingestion failed is requested again: at once when another sequence of its
run was the cause, alone and with backoff when it failed itself, a bounded number of times.

Run keys make every sensor request happen once, so a sequence whose run died (kill -9, out of
memory) would never be requested again by the sensor that first asked for it. Dagster's run
retries (dagster.yaml `run_retries`) re-execute a crashed run once, at once; this sensor takes
over from there, from what the instance records: the failed ingestion runs, the sequences each
covered, and the sequences a run names as failed (`imgrank/failed_sequences`,
defs/ingestion/isolation.py).
"""

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from imgrank_dagster.defs.ingestion.assets import SEQUENCES_PER_RUN
from imgrank_dagster.defs.ingestion.jobs import ingest_sequences_job
from imgrank_dagster.lib.metadata import SKIP_MESSAGE_CHARS, bounded
from imgrank_dagster.lib.names import (
    AUTO_RETRY_RUN_ID_TAG,
    FAILED_SEQUENCES_TAG,
    IMAGE_FEATURES,
    INGEST_SEQUENCES_JOB,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_TAG,
    TRIGGER_TAG,
    WILL_RETRY_TAG,
)
from imgrank_dagster.lib.partitions import sequence_partitions
from imgrank_dagster.lib.runs import partition_ranges
from imgrank_dagster.lib.runs_alive import live_run_records

# Requests of a sequence after failures of its own (each after BASE * 2^(n-1) seconds); then
# it is left for a person, named in every evaluation's message.
RETRY_LIMIT = 3
RETRY_BASE_DELAY_ENV = "IMGRANK_RETRY_BASE_SECONDS"
DEFAULT_RETRY_BASE_DELAY_S = 60.0
FAILED_RUNS_SCANNED = 1000
DAGSTER_RETRY_GRACE_S = 120.0


def retry_base_delay_s() -> float:
    return float(os.environ.get(RETRY_BASE_DELAY_ENV, DEFAULT_RETRY_BASE_DELAY_S))


@dataclass
class SequenceHistory:
    """The failed ingestion runs that covered one sequence, newest first."""

    own_failures: int = 0  # runs in which this sequence failed (or the run as a whole did)
    newest_failed_at: float = 0.0
    newest_was_collateral: bool = False  # the newest failure was another sequence's
    newest_run_id: str = ""
    seen: bool = field(default=False, repr=False)


@dataclass(frozen=True)
class RetryPlan:
    alone: list[tuple[str, int]]  # (sequence key, its attempt number): one run each
    together: list[list[str]]  # sequences that failed only because another did: ranged runs
    waiting: list[tuple[str, float]]  # (key, seconds until its next attempt)
    given_up: list[str]


def run_keys(record: dg.RunRecord, order: dict[str, int], ordered: Sequence[str]) -> list[str]:
    """The sequence keys a run covered: its partition, or every key of its range."""
    tags = record.dagster_run.tags
    if tags.get(PARTITION_TAG):
        return [tags[PARTITION_TAG]]
    start, end = tags.get(PARTITION_RANGE_START_TAG), tags.get(PARTITION_RANGE_END_TAG)
    if start in order and end in order:
        return list(ordered[order[start] : order[end] + 1])
    return []


def _failed_sequences(record: dg.RunRecord) -> set[str] | None:
    raw = record.dagster_run.tags.get(FAILED_SEQUENCES_TAG)
    if raw is None:
        return None  # the run failed as a whole (a crash, fastdup): every sequence's own failure
    try:
        return set(json.loads(raw))
    except (ValueError, TypeError):
        return None


def retry_pending(record: dg.RunRecord, now: float) -> bool:
    """Dagster will re-execute this failed run itself (run_retries) and has not done so yet.

    It cannot for a run the CLI executed in its own process (no code location to launch it
    from), and a retry not launched within DAGSTER_RETRY_GRACE_S is not coming.
    """
    run = record.dagster_run
    ended = record.end_time or record.update_timestamp.timestamp()
    return (
        run.tags.get(WILL_RETRY_TAG) == "true"
        and not run.tags.get(AUTO_RETRY_RUN_ID_TAG)
        and run.remote_job_origin is not None
        and now - ended < DAGSTER_RETRY_GRACE_S
    )


def sequence_histories(
    failed: Iterable[dg.RunRecord], ordered: Sequence[str], wanted: set[str], now: float
) -> tuple[dict[str, SequenceHistory], set[str]]:
    """(history of each wanted key with a failure, keys whose Dagster retry is pending).

    failed: failed ingestion runs, newest first.
    """
    order = {key: index for index, key in enumerate(ordered)}
    histories: dict[str, SequenceHistory] = {}
    pending: set[str] = set()
    for record in failed:
        named = _failed_sequences(record)
        ended = record.end_time or record.update_timestamp.timestamp()
        for key in run_keys(record, order, ordered):
            if key not in wanted:
                continue
            history = histories.setdefault(key, SequenceHistory())
            collateral = named is not None and key not in named
            if not history.seen:
                history.seen = True
                history.newest_failed_at = ended
                history.newest_was_collateral = collateral
                history.newest_run_id = record.dagster_run.run_id
                if retry_pending(record, now):
                    pending.add(key)
            if not collateral:
                history.own_failures += 1
    return histories, pending


def plan_retries(
    histories: dict[str, SequenceHistory],
    ordered: Sequence[str],
    now: float,
    limit: int = RETRY_LIMIT,
    base_delay_s: float = DEFAULT_RETRY_BASE_DELAY_S,
    per_run: int = SEQUENCES_PER_RUN,
) -> RetryPlan:
    """Which failed sequences to request now; pure, so the policy is tested without a daemon."""
    alone: list[tuple[str, int]] = []
    together: set[str] = set()
    waiting: list[tuple[str, float]] = []
    given_up: list[str] = []
    for key, history in sorted(histories.items()):
        if history.newest_was_collateral:
            together.add(key)
            continue
        if history.own_failures > limit:
            given_up.append(key)
            continue
        due = history.newest_failed_at + base_delay_s * 2 ** (history.own_failures - 1)
        if now >= due:
            alone.append((key, history.own_failures))
        else:
            waiting.append((key, due - now))
    return RetryPlan(alone, partition_ranges(list(ordered), together, per_run), waiting, given_up)


def _requests(plan: RetryPlan, histories: dict[str, SequenceHistory]) -> list[dg.RunRequest]:
    requests = [
        dg.RunRequest(
            partition_key=key,
            run_key=f"retry:{key}:{attempt}",
            tags={TRIGGER_TAG: "ingestion_retry_sensor"},
        )
        for key, attempt in plan.alone
    ]
    for keys in plan.together:
        run_key = f"retry:{keys[0]}..{keys[-1]}:{histories[keys[0]].newest_run_id}"
        tags = {TRIGGER_TAG: "ingestion_retry_sensor"}
        if len(keys) == 1:
            requests.append(dg.RunRequest(partition_key=keys[0], run_key=run_key, tags=tags))
            continue
        tags |= {PARTITION_RANGE_START_TAG: keys[0], PARTITION_RANGE_END_TAG: keys[-1]}
        requests.append(dg.RunRequest(run_key=run_key, tags=tags))
    return requests


@dg.sensor(
    job=ingest_sequences_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests ingestion again for sequences whose ingestion run failed: at once "
    "when another sequence of the run was the cause (together), alone with backoff when the "
    f"sequence failed itself, at most {RETRY_LIMIT} times.",
)
def ingestion_retry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    instance = context.instance
    ordered = instance.get_dynamic_partitions(sequence_partitions.name)
    done = instance.get_materialized_partitions(IMAGE_FEATURES)
    busy = {
        key
        for record in live_run_records(instance, dg.RunsFilter(job_name=INGEST_SEQUENCES_JOB))
        for key in run_keys(record, {k: i for i, k in enumerate(ordered)}, ordered)
    }
    wanted = set(ordered) - set(done) - busy
    if not wanted:
        return dg.SkipReason("every registered sequence is ingested or being ingested")
    failed = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=INGEST_SEQUENCES_JOB, statuses=[dg.DagsterRunStatus.FAILURE]
        ),
        limit=FAILED_RUNS_SCANNED,
    )
    now = time.time()
    histories, pending = sequence_histories(failed, ordered, wanted, now)
    histories = {key: history for key, history in histories.items() if key not in pending}
    plan = plan_retries(histories, ordered, now, base_delay_s=retry_base_delay_s())
    notes = []
    if plan.given_up:
        notes.append(
            f"gave up after {RETRY_LIMIT} retries (see their failed runs; fix and materialize "
            f"them): {', '.join(plan.given_up)}"
        )
    if plan.waiting:
        notes.append(
            "waiting to retry: "
            + ", ".join(f"{key} in {seconds:.0f} s" for key, seconds in plan.waiting)
        )
    if pending:
        notes.append(f"Dagster's run retry pending for {len(pending)} sequence(s)")
    message = bounded("; ".join(notes), SKIP_MESSAGE_CHARS)
    requests = _requests(plan, histories)
    if not requests:
        return dg.SkipReason(message or "no failed sequence to retry")
    if message:
        context.log.warning(message)
    return dg.SensorResult(run_requests=requests)
