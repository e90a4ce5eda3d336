"""The pieces of the fault handling that need no daemon and no fastdup: dead-run detection on a
real instance with a real killed process, the retry policy, and the collections file's errors."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from imgrank_dagster.core.config import CollectionConfigError, load_collections
from imgrank_dagster.core.config.collections import load_collections_tolerant
from imgrank_dagster.defs.ingestion.retries import SequenceHistory, plan_retries
from imgrank_dagster.defs.labels.shrink import Shrink
from imgrank_dagster.lib.metadata import bounded, bounded_metadata
from imgrank_dagster.lib.runs_alive import (
    WORKER_HOST_TAG,
    fail_dead_runs,
    find_dead_runs,
    process_is_gone,
    this_host,
)

# --- dead runs ------------------------------------------------------------------------------------

RUN_IN_A_PROCESS = """
import sys, time, dagster as dg

@dg.asset
def slow() -> None:
    print("started", flush=True)
    time.sleep(600)

with dg.DagsterInstance.get() as instance:
    dg.materialize([slow], instance=instance)
"""


@pytest.mark.slow  # a run in a process of its own
def test_a_killed_run_is_found_dead_failed_and_its_slots_freed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n")
    environment = {**os.environ, "DAGSTER_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_IN_A_PROCESS], env=environment, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "started"
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (record,) = instance.get_run_records()
            run_id = record.dagster_run.run_id
            instance.add_run_tags(run_id, {WORKER_HOST_TAG: this_host()})
            # Alive: not judged dead.
            assert find_dead_runs(instance) == []
            process.kill()
            process.wait()
            (dead,) = find_dead_runs(instance)
            assert dead.run_id == run_id and dead.pid == process.pid
            # Another host's run is never judged from here.
            instance.add_run_tags(run_id, {WORKER_HOST_TAG: "elsewhere"})
            assert find_dead_runs(instance) == []
            instance.add_run_tags(run_id, {WORKER_HOST_TAG: this_host()})
            assert [d.run_id for d in fail_dead_runs(instance)] == [run_id]
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
            assert fail_dead_runs(instance) == []  # once
    finally:
        process.kill()
        process.wait()


def test_a_reused_pid_is_not_the_worker() -> None:
    assert not process_is_gone(os.getpid(), recorded_at=time.time())
    assert process_is_gone(os.getpid(), recorded_at=time.time() - 10**7)  # started later


# --- retry policy --------------------------------------------------------------------------------


def _history(own: int, failed_at: float, collateral: bool = False) -> SequenceHistory:
    return SequenceHistory(own, failed_at, collateral, "run-1")


def test_retries_back_off_and_stop() -> None:
    order = ["c.a", "c.b", "c.c", "c.d"]
    now = 1000.0
    histories = {
        "c.a": _history(1, now - 61),  # first retry after 60 s: due
        "c.b": _history(2, now - 61),  # second after 120 s: waiting
        "c.c": _history(4, now - 10**6),  # past the limit
        "c.d": _history(0, now, collateral=True),  # another sequence's failure: at once
    }
    plan = plan_retries(histories, order, now, limit=3, base_delay_s=60)
    assert plan.alone == [("c.a", 1)]
    assert [key for key, _ in plan.waiting] == ["c.b"]
    assert plan.waiting[0][1] == pytest.approx(59)
    assert plan.given_up == ["c.c"]
    assert plan.together == [["c.d"]]


def test_sequences_failed_by_another_go_together_in_ranges() -> None:
    order = [f"c.s{i}" for i in range(6)]
    histories = {key: _history(0, 0, collateral=True) for key in order if key != "c.s2"}
    plan = plan_retries(histories, order, 0.0, per_run=2)
    assert plan.together == [["c.s0", "c.s1"], ["c.s3", "c.s4"], ["c.s5"]]


def test_a_large_shrink_is_held_a_small_one_is_not() -> None:
    assert Shrink(ranked=10, new=4).is_large
    assert not Shrink(ranked=10, new=5).is_large
    assert not Shrink(ranked=0, new=0).is_large
    assert "save the file again" in Shrink(10, 0).warning("city", "labels.csv")


def test_metadata_and_messages_stay_small() -> None:
    assert len(bounded("x" * 10**6)) < 600
    big = bounded_metadata({"names": ["x" * 10**6], "n": 3, "text": dg.MetadataValue.text("ok")})
    assert "too large to record" in str(big["names"].value) and big["n"] == 3
    assert len(str(big["names"].value)) < 2000


# --- the collections file -------------------------------------------------------------------------

GOOD = """collections:
  city:
    source: {type: folder, path: images}
  town:
    source: {type: folder, path: images}
"""


def _collections(tmp_path: Path, text: str | bytes) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "collections.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_byte_that_is_not_utf8_names_file_line_and_column(tmp_path: Path) -> None:
    path = _collections(tmp_path, GOOD.encode().replace(b"town:", b"town: # \xff"))
    with pytest.raises(CollectionConfigError) as error:
        load_collections(path)
    assert str(error.value) == (
        f"{path}: line 4, column 11: byte 0xff is not UTF-8 text (save the file as UTF-8)"
    )


def test_a_duplicated_key_is_refused_at_any_depth(tmp_path: Path) -> None:
    path = _collections(tmp_path, GOOD + "  city:\n    source: {type: folder, path: other}\n")
    with pytest.raises(
        CollectionConfigError, match=r"line 6: duplicate key 'city' \(first at line 2\)"
    ):
        load_collections(path)
    nested = GOOD.replace("path: images}", "path: images, type: folder}", 1)
    with pytest.raises(CollectionConfigError, match="duplicate key 'type'"):
        load_collections(_collections(tmp_path, nested))


def test_one_invalid_collection_leaves_the_others_usable(tmp_path: Path) -> None:
    path = _collections(tmp_path, GOOD.replace("type: folder, path: images}", "type: fold}", 1))
    collections, problems = load_collections_tolerant(path)
    assert list(collections) == ["town"] and list(problems) == ["city"]
    assert str(path) in problems["city"] and "collections.city.source" in problems["city"]
    with pytest.raises(CollectionConfigError):
        load_collections(path)  # the strict reading (the CLI) still refuses the file


def test_deeply_nested_yaml_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = _collections(tmp_path, "collections: " + "[" * 2_000 + "]" * 2_000)
    with pytest.raises(CollectionConfigError, match=str(path)):
        load_collections(path)
