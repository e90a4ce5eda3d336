"""The imgrank command line: `python -m imgrank_dagster.cli COMMAND`.

`app`: the FiftyOne App on a ranked collection (`make app`), its views refreshed first.
`demo`, `demo-kartaview`: the development demos (imgrank_dagster.devtools.demos).
`cluster-demo`: the demo on the cluster profile's services, all on this machine (`make
cluster-demo`, imgrank_dagster.devtools.cluster).
`check-services`: does every service of the configured profile answer (deploy/README.md)?
`worker`: a Celery worker of the cluster profile (checks the services, then runs
dagster-celery's worker with imgrank's Celery settings).

Runs go through the same jobs and the same Dagster instance (`DAGSTER_HOME`) as the UI, so
everything a command does is visible afterwards in `make ui`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import dagster as dg

from imgrank_dagster.definitions import build_definitions
from imgrank_dagster.lib.names import LABELING_PRIORITY, REFRESH_VIEWS_JOB, REPORT_DIR, REPORT_INDEX
from imgrank_dagster.lib.resources import build_resources, default_data_dir
from imgrank_dagster.lib.runs import run_job

DEMO_COLLECTION = "demo"
APP_ADDRESS = "127.0.0.1"


def run_app(collection: str, port: int) -> int:
    from imgrank_dagster.core.views import fiftyone_dataset

    resources = build_resources(data_dir=default_data_dir())
    definitions = build_definitions(resources)
    imgrank = resources["imgrank"]
    instance = dg.DagsterInstance.get()
    if collection not in instance.get_materialized_partitions(LABELING_PRIORITY):
        print(
            f"collection {collection!r} is not ranked yet: run `make demo` (or rank it in the "
            "Dagster UI) first",
            file=sys.stderr,
        )
        return 1
    if fiftyone_dataset.port_in_use(APP_ADDRESS, port):
        print(f"port {port} on {APP_ADDRESS} is in use: pass --port", file=sys.stderr)
        return 1
    fiftyone_dataset.use_database_dir(imgrank.fiftyone_database_dir)
    # The views follow the newest ranking: a refresh is cheap when nothing changed (the
    # FiftyOne dataset is updated in place, the report reuses its thumbnails).
    print(f"refreshing the views of {collection} (embedding map, report, FiftyOne dataset) ...")
    if not run_job(definitions, instance, REFRESH_VIEWS_JOB, collection).success:
        print("refresh_views failed: see the run in the Dagster UI", file=sys.stderr)
        return 1
    report = imgrank.exports_dir(collection) / REPORT_DIR / REPORT_INDEX
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    session = fiftyone_dataset.launch_app(
        collection, fiftyone_dataset.LABEL_NEXT_VIEW, APP_ADDRESS, port
    )
    try:
        if not fiftyone_dataset.wait_until_serving(APP_ADDRESS, port):
            print("the FiftyOne App did not start within 60 s", file=sys.stderr)
            return 1
        print(
            f"\nFiftyOne App: http://{APP_ADDRESS}:{port}/  (dataset {collection!r}, saved "
            f"view {fiftyone_dataset.LABEL_NEXT_VIEW!r}: unlabelled images by rank)"
        )
        print(f"HTML report:  {report}")
        print("Ctrl-C stops the App.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping the FiftyOne App ...", flush=True)
        fiftyone_dataset.close_app(session)
    print("stopped", flush=True)
    return 0


def run_check_services() -> int:
    from imgrank_dagster.lib.services import check_services

    problems = check_services()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("every service of the configured profile answers")
    return 1 if problems else 0


def run_worker(name: str, concurrency: int) -> int:
    """Check the services, then become dagster-celery's worker (exec: one process to stop)."""
    from pathlib import Path

    import yaml

    from imgrank_dagster.core.files import write_atomically
    from imgrank_dagster.lib.executors import CELERY_SETTINGS
    from imgrank_dagster.lib.services import (
        CELERY_BACKEND_ENV,
        CELERY_BROKER_ENV,
        EXECUTOR_ENV,
        check_services,
    )

    os.environ.setdefault(EXECUTOR_ENV, "celery")
    problems = check_services()
    if problems:
        print(f"worker {name} not started:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    # The executor's settings (lib.executors); addresses stay in the environment.
    config = {
        "execution": {
            "config": {
                "broker": {"env": CELERY_BROKER_ENV},
                "backend": {"env": CELERY_BACKEND_ENV},
                "config_source": CELERY_SETTINGS,
            }
        }
    }
    path = Path(os.environ["DAGSTER_HOME"]) / "celery" / f"{name}.yaml"
    write_atomically(path, lambda temporary: temporary.write_text(yaml.safe_dump(config)))
    # dagster-celery starts `celery` from PATH: this environment's own.
    scripts = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    command = str(Path(scripts) / "dagster-celery")
    arguments = [command, "worker", "start", "-A", "dagster_celery.app", "-y", str(path)]
    arguments += ["-n", name, "--", f"--concurrency={concurrency}", "--without-gossip"]
    sys.stdout.flush()
    os.execv(command, arguments)
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgrank", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="generate, ingest and rank the demo collection")
    demo.add_argument("--images", type=int, default=600)
    demo.add_argument("--seed", type=int, default=0)
    kartaview = commands.add_parser(
        "demo-kartaview",
        help="discover, download, ingest and rank a KartaView collection served offline by the "
        "stand-in server",
    )
    kartaview.add_argument("--sequences", type=int, default=4)
    kartaview.add_argument("--photos", type=int, default=12, help="photos per sequence")
    app = commands.add_parser(
        "app",
        help="open the FiftyOne App on a ranked collection (builds its dataset and report "
        "first when they are missing or older than the ranking); Ctrl-C stops it",
    )
    app.add_argument("--collection", default=DEMO_COLLECTION)
    app.add_argument("--port", type=int, default=5151)
    cluster = commands.add_parser(
        "cluster-demo",
        help="start PostgreSQL, Redis, an S3 stand-in, two Celery workers, the webserver and "
        "the daemon on 127.0.0.1, run the demo collection through them; Ctrl-C stops them",
    )
    cluster.add_argument("--images", type=int, default=600)
    cluster.add_argument("--seed", type=int, default=0)
    cluster.add_argument("--workers", type=int, default=2)
    cluster.add_argument("--port", type=int, default=3000, help="the webserver's port")
    commands.add_parser("check-services", help="check that every service of the profile answers")
    worker = commands.add_parser("worker", help="a Celery worker of the cluster profile")
    worker.add_argument("--name", required=True, help="unique per worker, e.g. gpu-host-1")
    worker.add_argument("--concurrency", type=int, default=1, help="steps at once (default 1)")
    args = parser.parse_args(argv)
    if not os.environ.get("DAGSTER_HOME"):
        parser.error("set DAGSTER_HOME to an absolute folder (make demo does this)")
    if args.command == "app":
        return run_app(args.collection, args.port)
    if args.command == "check-services":
        return run_check_services()
    if args.command == "worker":
        return run_worker(args.name, args.concurrency)
    from imgrank_dagster.devtools import demos

    if args.command == "cluster-demo":
        return demos.run_cluster_demo(args.images, args.seed, args.workers, args.port)

    if args.command == "demo-kartaview":
        if args.sequences < 1 or args.photos < 1:
            parser.error("--sequences and --photos must be at least 1")
        return demos.run_kartaview_demo(args.sequences, args.photos)
    return demos.run_demo(args.images, args.seed)


if __name__ == "__main__":
    sys.exit(main())
