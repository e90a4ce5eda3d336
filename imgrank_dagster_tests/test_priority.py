"""Views steps give the CPU up to label changes in the processes Dagster starts, only there."""

import multiprocessing
import os

import dagster as dg

from imgrank_dagster.lib.priority import BACKGROUND_NICENESS, run_in_background


def _step_process(results: multiprocessing.Queue) -> None:
    lowered = run_in_background(dg.build_asset_context())
    results.put((lowered, os.getpriority(os.PRIO_PROCESS, 0)))


def test_a_process_started_for_the_step_runs_at_background_priority() -> None:
    context = multiprocessing.get_context("spawn")  # as Dagster starts run and step processes
    results = context.Queue()
    process = context.Process(target=_step_process, args=(results,))
    process.start()
    lowered, niceness = results.get(timeout=120)
    process.join(timeout=60)
    assert lowered
    assert niceness == max(BACKGROUND_NICENESS, os.getpriority(os.PRIO_PROCESS, 0))


def test_the_callers_own_process_keeps_its_priority() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    assert not run_in_background(dg.build_asset_context())
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
