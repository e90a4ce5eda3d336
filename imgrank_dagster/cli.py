"""The imgrank command line (`imgrank COMMAND`, or `python -m imgrank_dagster.cli COMMAND`).

    imgrank add NAME PATH [--labels FILE] [--strategy coverage|study]   a folder of your own
    imgrank rank NAME [--top N]        ingest what is missing, rank, write the CSV and report
    imgrank status [NAME]              sequences, images, last ranking, labels
    imgrank app [NAME]                 the FiftyOne App on a ranked collection
    imgrank similar NAME IMAGE... [--k N]   the images most like these (ids or files)
    imgrank send NAME [--count N]      the next batch to the annotation tool (Label Studio)
    imgrank demo | demo-kartaview      the development demos (imgrank_dagster.devtools)
    imgrank cluster-demo               the demo on the cluster profile's services, locally
    imgrank check-services             does every service of the profile answer? (deploy/)
    imgrank worker --name NAME         a Celery worker of the cluster profile

Every command goes through the same jobs and the same Dagster instance as the UI (DAGSTER_HOME,
default <data dir>/dagster_home), so everything it does shows in `make ui` afterwards. The data
folder is IMGRANK_DATA_DIR, default ./data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg

from imgrank_dagster.core.config import STRATEGIES, CollectionConfigError
from imgrank_dagster.definitions import PROJECT_ROOT, build_definitions
from imgrank_dagster.lib.names import (
    EMBEDDING_MAP,
    LABELING_PRIORITY,
    RANK_COLLECTION_JOB,
    RANKING_EXPORT_NAME,
    RANKING_REPORT,
    REFRESH_VIEWS_JOB,
    REPORT_DIR,
    REPORT_INDEX,
)
from imgrank_dagster.lib.resources import ImgrankConfig, build_resources, default_data_dir
from imgrank_dagster.lib.runs import ingest_collection, register_partitions, run_job, send_batch

DEMO_COLLECTION = "demo"
APP_ADDRESS = "127.0.0.1"
# Runs started from a terminal log only errors: progress bars and a summary say the rest.
QUIET = "ERROR"


class Progress:
    """One terminal progress bar per run: steps done / steps, the step running, elapsed time."""

    def __init__(self, title: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=1, desc=title, unit="step", leave=True, dynamic_ncols=True)

    def __call__(self, done: int, total: int, step: str) -> None:
        self._bar.total = max(total, done, 1)
        self._bar.n = done
        self._bar.set_postfix_str(step, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _instance() -> dg.DagsterInstance:
    """The instance of DAGSTER_HOME: <data dir>/dagster_home unless set, created on first use
    with the project's dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(default_data_dir() / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    template = PROJECT_ROOT / "dagster.yaml"
    if not (home / "dagster.yaml").exists() and template.is_file():
        shutil.copyfile(template, home / "dagster.yaml")
    return dg.DagsterInstance.get()


def _fail(message: str) -> int:
    print(f"imgrank: {message}", file=sys.stderr)
    return 1


# --- add ----------------------------------------------------------------------------------------


def run_add(
    name: str,
    path: Path,
    labels: Path | None,
    strategy: str,
    gap_s: float | None,
    sidecars: list[Path],
) -> int:
    from imgrank_dagster.core.config.collections import add_collection
    from imgrank_dagster.core.sources import SourceError, discover

    imgrank = ImgrankConfig(data_dir=str(default_data_dir()))
    folder = path.expanduser().resolve()
    if not folder.is_dir():
        return _fail(f"{folder}: not a folder")
    source: dict[str, Any] = {"type": "folder", "path": str(folder)}
    if gap_s is not None:
        source["sequence_gap_s"] = gap_s
    if sidecars:
        source["sidecars"] = [str(sidecar.expanduser().resolve()) for sidecar in sidecars]
    if labels is None:
        labels_path = Path(imgrank.data_dir) / "labels" / name
        labels_path.mkdir(parents=True, exist_ok=True)
    else:
        labels_path = labels.expanduser().resolve()
    entry = {"source": source, "labels": str(labels_path), "strategy": strategy}
    try:
        collection = add_collection(imgrank.collections_file, name, entry)
        found = discover(collection)
    except (CollectionConfigError, SourceError) as error:
        return _fail(str(error))
    for note in found.notes:
        print(f"note: {note}")
    if not found.sequence_ids:
        print(f"added {name!r} to {imgrank.collections_file}, but it holds no image yet")
        return 0
    problems = register_partitions(_instance(), [collection])
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(
        f"added {name!r} to {imgrank.collections_file}: {len(found.sequence_ids)} sequence(s) "
        f"in {folder}; labels in {labels_path}\nnext: imgrank rank {name}"
    )
    return 0


# --- rank ---------------------------------------------------------------------------------------


def run_rank(name: str, top: int) -> int:
    from imgrank_dagster.lib.runs import unembedded_sequences
    from imgrank_dagster.lib.status import collection_status

    data_dir = default_data_dir()
    resources = build_resources(data_dir=data_dir)
    definitions = build_definitions(resources)
    imgrank: ImgrankConfig = resources["imgrank"]
    try:
        collection = imgrank.collection(name)
    except CollectionConfigError as error:
        return _fail(str(error))
    instance = _instance()
    for problem in register_partitions(instance, imgrank.collections().values()):
        if problem.startswith(f"{name}:") or collection.image_root.as_posix() in problem:
            print(f"note: {problem}")
    started = time.perf_counter()
    pending = unembedded_sequences(instance, name)
    if pending:
        print(f"ingesting and embedding {len(pending)} sequence(s) of {name}:")
        bar = Progress("ingest")
        failed = ingest_collection(
            definitions, instance, name, report=lambda _: None, log_level=QUIET, progress=bar
        )
        bar.close()
        if failed:
            print(f"{len(failed)} sequence(s) failed and are left out: {', '.join(failed)}")
    bar = Progress("rank")
    result = run_job(
        definitions, instance, RANK_COLLECTION_JOB, name, log_level=QUIET, progress=bar
    )
    bar.close()
    if not result.success:
        return _fail(f"ranking {name} failed: see the run {result.run_id} in the Dagster UI")
    bar = Progress("report")
    report_result = dg.materialize(
        list(definitions.assets or []),
        selection=[EMBEDDING_MAP, RANKING_REPORT],
        partition_key=name,
        instance=instance,
        resources=resources,
        run_config={"loggers": {"console": {"config": {"log_level": QUIET}}}},
        raise_on_error=False,
    )
    bar(2, 2, "ranking_report")
    bar.close()
    _print_ranking(imgrank, name, top)
    status = collection_status(collection, instance, resources["io_manager"].open())
    left_out = {key: count for key, count in status.images.items() if key != "ok"}
    if left_out:
        counts = ", ".join(f"{count} {key}" for key, count in sorted(left_out.items()))
        print(f"left out: {counts} (reasons in the report and in collection_images)")
    report = imgrank.exports_dir(name) / REPORT_DIR / REPORT_INDEX
    print(f"\nranking (CSV): {imgrank.exports_dir(name) / RANKING_EXPORT_NAME}")
    if report_result.success:
        print(f"HTML report:   {report}")
    else:
        print("HTML report:   not written (see the run in the Dagster UI)", file=sys.stderr)
    print(f"FiftyOne App:  imgrank app {name}")
    print(f"took {time.perf_counter() - started:.1f} s; the runs are in the Dagster UI (make ui)")
    return 0


def _print_ranking(imgrank: ImgrankConfig, name: str, top: int) -> None:
    import pandas as pd

    ranking = pd.read_csv(imgrank.exports_dir(name) / RANKING_EXPORT_NAME)
    print(f"\nTop {min(top, len(ranking))} of {len(ranking)} images to label next:")
    for row in ranking.head(top).itertuples():
        print(f"  {row.rank:>4}. {row.image_id:<28} {row.reason}")


# --- status -------------------------------------------------------------------------------------


def run_status(name: str | None) -> int:
    from imgrank_dagster.lib.status import collection_status

    resources = build_resources(data_dir=default_data_dir())
    imgrank: ImgrankConfig = resources["imgrank"]
    try:
        collections = imgrank.collections()
    except CollectionConfigError as error:
        return _fail(str(error))
    if name is not None and name not in collections:
        return _fail(f"no collection named {name!r} (known: {', '.join(sorted(collections))})")
    instance = _instance()
    warehouse = resources["io_manager"].open()
    for collection in [collections[name]] if name else collections.values():
        status = collection_status(collection, instance, warehouse)
        print(f"{status.name} ({collection.source.type}, strategy {collection.strategy})")
        print(f"  sequences:  {status.sequences} registered, {status.sequences_embedded} embedded")
        images = ", ".join(f"{count} {key}" for key, count in sorted(status.images.items()))
        print(f"  images:     {images or 'no image catalog yet'}")
        if status.ranked_at is None:
            print(f"  ranking:    none yet (imgrank rank {status.name})")
        else:
            when = status.ranked_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
            print(f"  ranking:    {status.ranked_images} images, {when}")
        labels = status.labels
        if labels:
            print(
                f"  labels:     {labels.get('labelled', 0)} matched, "
                f"{labels.get('unknown', 0)} unknown, {labels.get('ambiguous', 0)} ambiguous"
                + (
                    f" (e.g. {', '.join(labels['unknown_examples'][:3])})"
                    if labels.get("unknown")
                    else ""
                )
            )
        for note in status.notes:
            print(f"  note:       {note}")
    return 0


# --- app ----------------------------------------------------------------------------------------


def run_app(collection: str, port: int) -> int:
    from imgrank_dagster.core.views import fiftyone_dataset

    resources = build_resources(data_dir=default_data_dir())
    definitions = build_definitions(resources)
    imgrank = resources["imgrank"]
    instance = _instance()
    if collection not in instance.get_materialized_partitions(LABELING_PRIORITY):
        return _fail(
            f"collection {collection!r} is not ranked yet: run `imgrank rank {collection}` "
            "(or `make demo` for the demo) first"
        )
    if fiftyone_dataset.port_in_use(APP_ADDRESS, port):
        return _fail(f"port {port} on {APP_ADDRESS} is in use: pass --port")
    fiftyone_dataset.use_database_dir(imgrank.fiftyone_database_dir)
    # The views follow the newest ranking: a refresh is cheap when nothing changed (the
    # FiftyOne dataset is updated in place, the report reuses its thumbnails).
    print(f"refreshing the views of {collection} (embedding map, report, FiftyOne dataset) ...")
    if not run_job(definitions, instance, REFRESH_VIEWS_JOB, collection).success:
        return _fail("refresh_views failed: see the run in the Dagster UI")
    report = imgrank.exports_dir(collection) / REPORT_DIR / REPORT_INDEX
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    session = fiftyone_dataset.launch_app(
        collection, fiftyone_dataset.LABEL_NEXT_VIEW, APP_ADDRESS, port
    )
    try:
        if not fiftyone_dataset.wait_until_serving(APP_ADDRESS, port):
            return _fail("the FiftyOne App did not start within 60 s")
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


# --- similar ------------------------------------------------------------------------------------


def run_similar(name: str, queries: list[str], k: int, combine: str) -> int:
    """The k images of the collection most similar to the queries, as a table."""
    from imgrank_dagster.lib.similar import load_searchable, similar_in_collection

    started = time.perf_counter()
    try:
        searchable = load_searchable(name)
    except (CollectionConfigError, ValueError) as error:
        return _fail(str(error))
    loaded = time.perf_counter()
    try:
        found = similar_in_collection(searchable, queries, k=k, combine=combine)
    except ValueError as error:
        return _fail(str(error))
    searched = time.perf_counter()
    what = "the query" if len(queries) == 1 else f"the {len(queries)} queries ({combine})"
    print(f"{len(found)} images of {name} most similar to {what}:")
    print(f"  {'#':>3}  {'similarity':>10}  {'rank':>6}  {'image_id':<28} path")
    for row in found.itertuples(index=False):
        rank = "label." if row.labelled else ("-" if _is_missing(row.rank) else str(row.rank))
        near = f"  (nearest query: {row.nearest_query})" if len(queries) > 1 else ""
        print(
            f"  {row.similar_rank:>3}  {row.similarity:>10.4f}  {rank:>6}  "
            f"{row.image_id:<28} {row.path}{near}"
        )
    print(
        f"{len(searchable.features)} images; loading {loaded - started:.2f} s, "
        f"search {searched - loaded:.2f} s (rank: place in the current ranking; label.: labelled)"
    )
    return 0


def _is_missing(value: object) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


# --- send ---------------------------------------------------------------------------------------


def run_send(collection: str, count: int | None, per_cluster: int | None) -> int:
    """Send the collection's next batch to its annotation tool (the annotation_batch asset)."""
    definitions = build_definitions(build_resources(data_dir=default_data_dir()))
    ok, message = send_batch(definitions, _instance(), collection, count, per_cluster)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


# --- the cluster profile (deploy/README.md) ------------------------------------------------------


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


# --- the parser ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgrank",
        description="Rank street-level images so a labelling team annotates the most useful "
        "ones first.",
        epilog="Data folder: IMGRANK_DATA_DIR (default ./data); Dagster instance: DAGSTER_HOME "
        "(default <data folder>/dagster_home).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = commands.add_parser(
        "add",
        help="add a folder of images as a collection (sub-folders are sequences; images "
        "directly in it are split into sequences by capture time)",
    )
    add.add_argument("name", help="the collection's name: lower-case letters, digits, - and _")
    add.add_argument("path", type=Path, help="the folder of images")
    add.add_argument(
        "--labels", type=Path, help="a label file or folder (default <data>/labels/NAME/)"
    )
    add.add_argument("--strategy", choices=STRATEGIES, default="coverage")
    add.add_argument(
        "--gap",
        type=float,
        dest="gap_s",
        help="seconds between two captures that start a new sequence (default 300)",
    )
    add.add_argument(
        "--sidecar",
        type=Path,
        action="append",
        default=[],
        dest="sidecars",
        help="a CSV or GeoJSON with file names, lat/lon, time, heading (repeatable; sidecars "
        "inside the folder are found on their own)",
    )
    rank = commands.add_parser(
        "rank", help="ingest what is missing, rank, write the CSV and the HTML report"
    )
    rank.add_argument("name")
    rank.add_argument("--top", type=int, default=10, help="how many of the top to print")
    status = commands.add_parser(
        "status", help="sequences, images, the last ranking and the labels of the collections"
    )
    status.add_argument("name", nargs="?")
    app = commands.add_parser(
        "app",
        help="open the FiftyOne App on a ranked collection (its views refreshed first); "
        "Ctrl-C stops it",
    )
    app.add_argument("name", nargs="?", help=f"the collection (default {DEMO_COLLECTION})")
    app.add_argument("--collection", help=argparse.SUPPRESS)  # the older spelling
    app.add_argument("--port", type=int, default=5151)
    similar = commands.add_parser(
        "similar",
        help="the images of a collection most similar to one or more query images (image ids "
        "of the collection, or image files from anywhere, embedded with the same model)",
    )
    similar.add_argument("name")
    similar.add_argument("images", nargs="+", metavar="IMAGE", help="an image id or file")
    similar.add_argument("--k", type=int, default=20, help="how many images (default 20)")
    similar.add_argument(
        "--combine",
        choices=("mean", "best"),
        default="mean",
        help="several queries: search their mean embedding (default), or take each image's "
        "best similarity to any of them",
    )
    send = commands.add_parser(
        "send",
        help="send the collection's next batch to its annotation tool (Label Studio, or a CVAT "
        "task file); images already sent are never sent again",
    )
    send.add_argument("name")
    send.add_argument("--count", type=int, help="images from the top of the ranking")
    send.add_argument("--per-cluster", type=int, help="images per cluster without labels")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "add":
        return run_add(args.name, args.path, args.labels, args.strategy, args.gap_s, args.sidecars)
    if args.command == "rank":
        if args.top < 0:
            parser.error("--top must be 0 or more")
        return run_rank(args.name, args.top)
    if args.command == "status":
        return run_status(args.name)
    if args.command == "app":
        return run_app(args.name or args.collection or DEMO_COLLECTION, args.port)
    if args.command == "similar":
        if args.k < 1:
            parser.error("--k must be at least 1")
        return run_similar(args.name, args.images, args.k, args.combine)
    if args.command == "send":
        return run_send(args.name, args.count, args.per_cluster)
    if args.command == "check-services":
        return run_check_services()
    if args.command == "worker":
        _instance()  # DAGSTER_HOME
        return run_worker(args.name, args.concurrency)
    _instance()  # DAGSTER_HOME for the demos
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
