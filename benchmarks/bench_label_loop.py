"""The label loop through the real daemon: from saving the labels file to the new export.

    python benchmarks/bench_label_loop.py [--changes 10] [--images 600]

The demo collection is ranked once in a temporary folder, then `dagster dev` (webserver and
daemon, the project's dagster.yaml and workspace.yaml) runs on it as `make ui` does. Each change
appends one image of the current top 10 to the labels file and waits for the exported CSV to
drop it. Every part of the wait comes from the instance's own records:

  sensor   from saving the file to the run's creation (labels_sensor's tick)
  queue    from creation to RUN_STARTING (the run queue, its lanes)
  start    from RUN_STARTING to RUN_START (the run process starting, loading the code)
  steps    from RUN_START to the new CSV on disk

Two series: with nothing else running (the views' own refresh after each change is waited
out first), and with a views refresh (`refresh_views`, launched through the webserver's
GraphQL API) in flight when the file is saved. Targets: median under 5 s, and under 8 s with a
refresh in flight. Nothing is asserted; the machine's load is printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import psutil
import requests

PROJECT = Path(__file__).resolve().parent.parent
COLLECTION = "demo"
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dataclass
class Change:
    total: float
    sensor: float
    queue: float
    start: float
    steps: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_quiet(instance: dg.DagsterInstance, settle: float = 12.0) -> None:
    """No run queued or in progress for `settle` seconds (the views sensor ticks every 10 s)."""
    quiet_since = None
    deadline = time.time() + 600
    while time.time() < deadline:
        busy = instance.get_run_records(dg.RunsFilter(statuses=ACTIVE), limit=1)
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= settle:
            return
        time.sleep(0.5)
    raise TimeoutError("the instance never went quiet")


def event_time(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> float:
    records = instance.get_records_for_run(run_id, of_type=kind).records
    return records[0].event_log_entry.timestamp if records else float("nan")


def one_change(
    instance: dg.DagsterInstance, data_dir: Path, export: Path, exclude: set[str]
) -> Change:
    ranking = pd.read_csv(export)
    pick = next(i for i in ranking["image_id"].head(10) if i not in exclude)
    exclude.add(pick)
    before = export.stat().st_mtime_ns
    known = {r.dagster_run.run_id for r in instance.get_run_records(limit=50)}
    with (data_dir / COLLECTION / "labels" / "labels.csv").open("a") as handle:
        handle.write(f"{pick}\n")
        handle.flush()
        os.fsync(handle.fileno())
    saved = time.time()

    def exported() -> bool:
        if export.stat().st_mtime_ns == before:
            return False
        try:
            return pick not in set(pd.read_csv(export)["image_id"])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, FileNotFoundError):
            return False

    wait_for(exported, 120, f"{pick} to leave the exported ranking")
    done = time.time()
    records = [
        r
        for r in instance.get_run_records(dg.RunsFilter(job_name="apply_labels"), limit=10)
        if r.dagster_run.run_id not in known
    ]
    run = min(records, key=lambda r: r.create_timestamp.timestamp())
    created = run.create_timestamp.timestamp()
    starting = event_time(instance, run.dagster_run.run_id, dg.DagsterEventType.RUN_STARTING)
    started = event_time(instance, run.dagster_run.run_id, dg.DagsterEventType.RUN_START)
    return Change(
        total=done - saved,
        sensor=created - saved,
        queue=starting - created,
        start=started - starting,
        steps=done - started,
    )


def launch_refresh(port: int) -> str:
    query = """mutation($params: ExecutionParams!) {
      launchPipelineExecution(executionParams: $params) {
        __typename
        ... on LaunchRunSuccess { run { runId } }
        ... on PythonError { message }
        ... on RunConfigValidationInvalid { errors { message } }
      }
    }"""
    params = {
        "selector": {
            "repositoryLocationName": "imgrank",
            "repositoryName": "__repository__",
            "jobName": "refresh_views",
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": COLLECTION}]},
    }
    response = requests.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": query, "variables": {"params": params}},
        timeout=30,
    )
    result = response.json()["data"]["launchPipelineExecution"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"refresh_views was not launched: {result}")
    return result["run"]["runId"]


def summary(name: str, changes: list[Change]) -> None:
    print(f"\n{name} ({len(changes)} changes):")
    print("  part     median    p95     max")
    for part in ("total", "sensor", "queue", "start", "steps"):
        values = sorted(getattr(change, part) for change in changes)
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        print(f"  {part:<7} {statistics.median(values):6.2f} s {p95:6.2f} s {values[-1]:6.2f} s")


def stop(process: subprocess.Popen, marker: str) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
    for leftover in psutil.process_iter(["cmdline"]):  # FiftyOne's mongod, if the views ran
        if any(marker in part for part in leftover.info["cmdline"] or []):
            leftover.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--images", type=int, default=600)
    args = parser.parse_args()
    load_before = os.getloadavg()
    # A run process still closing its files when the webserver stops must not fail the figures.
    with tempfile.TemporaryDirectory(
        prefix="imgrank-bench-loop-", ignore_cleanup_errors=True
    ) as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        data_dir.mkdir()
        (data_dir / "collections.yaml").write_text(
            "collections:\n  demo:\n    source: {type: folder, path: demo/images}\n"
            "    labels: demo/labels/\n"
        )
        env = {
            **os.environ,
            "DAGSTER_HOME": str(root / "dagster_home"),
            "IMGRANK_DATA_DIR": str(data_dir),
            "FIFTYONE_DATABASE_DIR": str(root / "fiftyone"),
        }
        print(f"ranking a {args.images}-image demo collection ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "imgrank_dagster.cli", "demo", "--images", str(args.images)],
            env=env,
            check=True,
            capture_output=True,
        )
        port = free_port()
        command = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)]
        ui = subprocess.Popen(
            [*command, "-w", str(PROJECT / "workspace.yaml")],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
            instance = dg.DagsterInstance.get()

            def serving() -> bool:
                try:
                    return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok
                except requests.RequestException:
                    return False

            wait_for(serving, 180, "the webserver", every=1)
            wait_for(
                lambda: instance.get_daemon_heartbeats().get("SENSOR"), 180, "the daemon", every=1
            )
            export = data_dir / "exports" / COLLECTION / "all_score_after_rank.csv"
            picked: set[str] = set()
            quiet = []
            for number in range(args.changes):
                wait_quiet(instance)
                change = one_change(instance, data_dir, export, picked)
                quiet.append(change)
                print(
                    f"  quiet change {number + 1}: {change.total:.2f} s "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
            busy = []
            for number in range(args.changes):
                wait_quiet(instance)
                run_id = launch_refresh(port)
                wait_for(
                    lambda run=run_id: (
                        instance.get_run_by_id(run).status == dg.DagsterRunStatus.STARTED
                    ),
                    60,
                    "the views refresh to start",
                )
                change = one_change(instance, data_dir, export, picked)
                refresh = instance.get_run_by_id(run_id).status
                busy.append(change)
                print(
                    f"  change {number + 1} during a refresh: {change.total:.2f} s "
                    f"(refresh {refresh.value.lower()} when the new CSV landed; "
                    f"load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
            summary("label loop, nothing else running", quiet)
            summary("label loop, a views refresh in flight", busy)
        finally:
            stop(ui, str(root))
    load_after = os.getloadavg()
    print(
        f"\nload average (1, 5 min) before: {load_before[0]:.2f}, {load_before[1]:.2f}; "
        f"after: {load_after[0]:.2f}, {load_after[1]:.2f}; cores: {os.cpu_count()}"
    )


if __name__ == "__main__":
    main()
