"""Which runs are alive, and freeing what a dead run holds.

A run whose worker was killed (kill -9, the kernel's OOM killer, a closed terminal running the
CLI) stays STARTED for ever: nothing reports its end. While it does, it counts against
`max_concurrent_runs` (queued runs wait behind it) and keeps its claims on concurrency pools
(the fastdup step of every later ingestion waits).

Dagster's run monitoring (dagster.yaml) fails runs that never start, frees the pool slots of
finished runs (`free_slots_after_run_end_seconds`) and, for launchers that can check a worker's
health, fails runs whose worker died. The default run launcher cannot check a worker, and runs
that the CLI executes in its own process have no launcher at all. This module fills that gap
with what Dagster records about every run: the worker's process id (its first engine event
with a `pid`) and, as a run tag, the host it runs on. A run is dead when that process no
longer exists on this host (or the id now belongs to a younger process).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import dagster as dg

# Runs that are queued or running: the statuses a dead worker leaves a run in are the last two.
IN_PROGRESS_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
WORKER_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
# The host a run's steps execute on; set by the IO manager when a step starts.
WORKER_HOST_TAG = "imgrank/worker_host"
# A process that started this long after the worker's pid was recorded is not that worker.
PID_REUSE_SLACK_S = 2.0
ENGINE_EVENTS_SCANNED = 50


def this_host() -> str:
    return socket.gethostname()


def tag_worker_host(context: dg.InitResourceContext) -> None:
    """Record on the run the host its steps execute on (once): where its pid means something."""
    run = context.dagster_run
    if run is None or context.instance is None or run.tags.get(WORKER_HOST_TAG) == this_host():
        return
    context.instance.add_run_tags(run.run_id, {WORKER_HOST_TAG: this_host()})


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    job_name: str
    pid: int
    partition: str | None

    def describe(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        return f"run {self.run_id[:8]} of {self.job_name}{where} (worker pid {self.pid})"


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, when it was recorded) of the run's worker: its first engine event with a pid."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=ENGINE_EVENTS_SCANNED
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "event_specific_data", None) if event else None
        pid = (getattr(data, "metadata", None) or {}).get("pid")
        if pid is not None:
            try:
                return int(str(getattr(pid, "value", pid))), record.event_log_entry.timestamp
            except ValueError:
                continue
    return None


def process_is_gone(pid: int, recorded_at: float) -> bool:
    """True when no process has this pid, or the one that has it started after recorded_at."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return process.create_time() > recorded_at + PID_REUSE_SLACK_S
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False  # it exists; we may not look at it


def dead_run(instance: dg.DagsterInstance, record: dg.RunRecord) -> DeadRun | None:
    """The run as a DeadRun if its worker ran on this host and is gone; else None.

    A run without a recorded worker (not started yet) or from another host is never judged
    here: Dagster's run monitoring (start timeout) covers those.
    """
    run = record.dagster_run
    if run.status not in WORKER_STATUSES or run.tags.get(WORKER_HOST_TAG) != this_host():
        return None
    found = worker_pid(instance, run.run_id)
    if found is None or found[0] == os.getpid():
        return None
    pid, recorded_at = found
    if not process_is_gone(pid, recorded_at):
        return None
    return DeadRun(run.run_id, run.job_name, pid, run.tags.get("dagster/partition"))


def find_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=WORKER_STATUSES))
    return [dead for record in records if (dead := dead_run(instance, record)) is not None]


def live_run_records(
    instance: dg.DagsterInstance, filters: dg.RunsFilter | None = None
) -> list[dg.RunRecord]:
    """Runs queued or in progress (narrowed by filters' job name and tags) whose worker is not
    known to be dead."""
    filters = filters or dg.RunsFilter()
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=IN_PROGRESS_STATUSES, job_name=filters.job_name, tags=filters.tags
        )
    )
    return [record for record in records if dead_run(instance, record) is None]


def fail_dead_run(instance: dg.DagsterInstance, dead: DeadRun) -> bool:
    """Mark a dead run failed and free its concurrency slots; True if it held any.

    The failure is an ordinary run failure (not a step failure), so Dagster's run retries
    (dagster.yaml `run_retries`) re-execute it.
    """
    run = instance.get_run_by_id(dead.run_id)
    if run is None or run.is_finished:
        return False
    instance.report_run_failed(
        run,
        f"The run's worker process (pid {dead.pid} on {this_host()}) is gone: it was killed "
        f"(kill -9, out of memory, its terminal closed) and could not report its end. Marked "
        f"failed at {time.strftime('%Y-%m-%d %H:%M:%S')} so that queued runs and concurrency "
        "pools are not blocked by it.",
    )
    return free_pool_slots(instance, dead.run_id)


def free_pool_slots(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Free the concurrency pool slots (and pending claims) of a finished or dead run; True if
    it held any. Run monitoring does the same for finished runs after
    `free_slots_after_run_end_seconds`; this does it at once."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return False
    held = run_id in storage.get_concurrency_run_ids()
    storage.free_concurrency_slots_for_run(run_id)
    return held


def fail_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """Find and fail every dead run of this host; returns them."""
    dead_runs = find_dead_runs(instance)
    for dead in dead_runs:
        fail_dead_run(instance, dead)
    return dead_runs
