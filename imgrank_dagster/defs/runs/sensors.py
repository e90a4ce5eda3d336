"""Runs whose worker is gone are marked failed, and their concurrency slots freed, within
seconds: nothing queued waits behind them (lib.runs_alive explains why Dagster alone does not
do this for the default run launcher and for runs the CLI executes)."""

import dagster as dg

from imgrank_dagster.lib.metadata import SKIP_MESSAGE_CHARS, bounded
from imgrank_dagster.lib.runs_alive import fail_dead_runs

DEAD_RUN_CHECK_SECONDS = 10


@dg.sensor(
    minimum_interval_seconds=DEAD_RUN_CHECK_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed every run of this machine whose worker process is gone (killed, "
    "out of memory, its terminal closed) and frees its concurrency pool slots, so queued runs "
    "and the fastdup pool never wait on it. Dagster's run retries then re-execute it.",
)
def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    dead = fail_dead_runs(context.instance)
    for run in dead:
        context.log.warning(f"{run.describe()}: worker gone; marked failed, pool slots freed")
    if not dead:
        return dg.SkipReason("every run in progress has a live worker")
    described = ", ".join(run.describe() for run in dead)
    return dg.SkipReason(bounded(f"marked failed (worker gone): {described}", SKIP_MESSAGE_CHARS))
