"""Background work yields the CPU: a views refresh must not slow a label change down.

On the local profile a step runs in a process Dagster started for it (the multiprocess
executor's step process, or the run worker itself): lowering that process's CPU priority (its
nice value) lasts as long as the step. Dagster has no setting for a run's or step's priority
on the machine (`dagster/priority` orders the run queue and the steps of one run), so the views
call this first thing. In a process that is not Dagster's own (the CLI and the tests run jobs
in process; Celery workers are reused for other steps) nothing changes.
"""

from __future__ import annotations

import multiprocessing
import os

import dagster as dg

# 10: the scheduler gives a process at nice 0 about nine tenths of a shared core.
BACKGROUND_NICENESS = 10


def run_in_background(context: dg.AssetExecutionContext) -> bool:
    """Lowers the CPU priority of this step's process when Dagster started it; True if so."""
    if multiprocessing.parent_process() is None:
        return False  # the caller's own process: the CLI, a test, a Celery worker
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < BACKGROUND_NICENESS:
            os.setpriority(os.PRIO_PROCESS, 0, BACKGROUND_NICENESS)
    except OSError as error:  # not allowed here (a container's policy): run as it is
        context.log.debug(f"CPU priority left as it is: {error}")
        return False
    return True
