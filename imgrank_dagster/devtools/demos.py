"""The demo flows: `make demo` (the synthetic collection) and `make demo-kartaview` (the whole
KartaView path, offline, against the stand-in server).

Both drive the project's own jobs on the Dagster instance of DAGSTER_HOME (lib.runs), so
everything they do shows in the UI afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from imgrank_dagster.core.files import write_atomically
from imgrank_dagster.definitions import build_definitions
from imgrank_dagster.lib.io_manager import PartitionedParquetIOManager
from imgrank_dagster.lib.names import (
    COLLECTION_IMAGES,
    COLLECTION_TAG,
    DISCOVER_KARTAVIEW_JOB,
    KARTAVIEW_SEQUENCES,
    RANK_COLLECTION_JOB,
    RANKING_EXPORT_NAME,
    REFRESH_VIEWS_JOB,
    REPORT_DIR,
    REPORT_INDEX,
    TRIGGER_TAG,
)
from imgrank_dagster.lib.partitions import new_sequence_keys, sequence_partitions
from imgrank_dagster.lib.resources import ImgrankConfig, build_resources, default_data_dir
from imgrank_dagster.lib.runs import ingest_collection, register_partitions, run_job

DEMO_COLLECTION = "demo"


def _register(instance: dg.DagsterInstance, imgrank: ImgrankConfig) -> None:
    for problem in register_partitions(instance, imgrank.collections().values()):
        print(f"warning: {problem}", file=sys.stderr)


def _move_labels_into_folder(demo_root: Path) -> None:
    """Demos generated before the labels folder kept labels.csv beside images/."""
    from imgrank_dagster.devtools.demo_collection import LABELS_DIR, LABELS_FILE

    old, folder = demo_root / LABELS_FILE, demo_root / LABELS_DIR
    if old.is_file() and not folder.exists():
        folder.mkdir()
        old.rename(folder / LABELS_FILE)
        print(f"moved {old} into {folder}/ (the demo's labels are a folder now)")


def run_demo(images: int, seed: int) -> int:
    """Generate (once), ingest and rank the demo collection, then build its views."""
    from imgrank_dagster.devtools.demo_collection import generate_demo_collection

    data_dir = default_data_dir()
    demo_root = data_dir / "demo"
    if not (demo_root / "manifest.csv").exists():
        started = time.perf_counter()
        summary = generate_demo_collection(demo_root, n_images=images, seed=seed)
        print(
            f"generated {summary.n_images} demo images in {summary.n_sequences} sequences "
            f"under {summary.images_dir} ({time.perf_counter() - started:.1f} s)"
        )
    _move_labels_into_folder(demo_root)
    resources = build_resources(data_dir=data_dir)
    definitions = build_definitions(resources)
    imgrank: ImgrankConfig = resources["imgrank"]
    instance = dg.DagsterInstance.get()
    _register(instance, imgrank)
    print("ingesting and embedding sequences:")
    failed = ingest_collection(definitions, instance, DEMO_COLLECTION)
    if failed:
        print(f"{len(failed)} sequence(s) failed; they are left out of the ranking: {failed}")
    print("ranking the collection ...")
    for job in (RANK_COLLECTION_JOB, REFRESH_VIEWS_JOB):
        if not run_job(definitions, instance, job, DEMO_COLLECTION).success:
            print(f"{job} failed: see the run in the Dagster UI (make ui)", file=sys.stderr)
            return 1
    export = imgrank.exports_dir(DEMO_COLLECTION) / RANKING_EXPORT_NAME
    ranking = pd.read_csv(export)
    print(f"\nTop 10 of {len(ranking)} images to label next:")
    for row in ranking.head(10).itertuples():
        print(f"  {row.rank:>3}. {row.image_id:<22} score {row.score:6.3f}  {row.reason}")
    report = imgrank.exports_dir(DEMO_COLLECTION) / REPORT_DIR / REPORT_INDEX
    print(f"\nranking (CSV):      {export}")
    print(f"HTML report:        {report}")
    print(f"assets (Parquet):   {resources['io_manager'].base_path}")
    print(f"Dagster history:    {os.environ.get('DAGSTER_HOME')}  (browse it with `make ui`)")
    print("FiftyOne App:       `make app` (http://127.0.0.1:5151)")
    return 0


# --- demo-kartaview ---------------------------------------------------------------------------

KARTAVIEW_DEMO = "kartaview-demo"  # the collection, and its data folder under the data dir
KARTAVIEW_DEMO_ORIGIN = (52.5200, 13.4050)  # where the stand-in server's sequences start
DEMO_TAGS = {TRIGGER_TAG: "demo-kartaview", COLLECTION_TAG: KARTAVIEW_DEMO}


def _write_kartaview_demo_collections(data_dir: Path, origin: tuple[float, float]) -> None:
    document = {
        "collections": {
            KARTAVIEW_DEMO: {
                "source": {
                    "type": "kartaview",
                    "points": [{"lat": origin[0], "lng": origin[1], "radius_m": 500.0}],
                    "image_size": "thumbnail",
                }
            }
        }
    }
    text = "# Written by `make demo-kartaview`; served by the stand-in KartaView server.\n"
    text += yaml.safe_dump(document, sort_keys=False)
    write_atomically(data_dir / "collections.yaml", lambda path: path.write_text(text))


def run_kartaview_demo(sequences: int, photos: int) -> int:
    """Discover, download, ingest and rank a KartaView collection served by the stand-in."""
    from imgrank_dagster.core.sources.kartaview import BASE_URL_ENV
    from imgrank_dagster.devtools.kartaview_stand_in import FakeKartaView

    data_dir = default_data_dir() / KARTAVIEW_DEMO
    resources = build_resources(data_dir=data_dir, warehouse=str(data_dir / "warehouse"))
    definitions = build_definitions(resources)
    instance = dg.DagsterInstance.get()
    previous_url = os.environ.get(BASE_URL_ENV)
    with FakeKartaView(sequences, photos, origin=KARTAVIEW_DEMO_ORIGIN) as fake:
        os.environ[BASE_URL_ENV] = fake.base_url
        try:
            print(
                f"stand-in KartaView at {fake.base_url}: {sequences} sequences x {photos} photos "
                f"({BASE_URL_ENV} points there for this command)"
            )
            _write_kartaview_demo_collections(data_dir, KARTAVIEW_DEMO_ORIGIN)
            _register(instance, resources["imgrank"])
            status = _kartaview_demo_flow(definitions, resources, instance)
        finally:
            if previous_url is None:
                os.environ.pop(BASE_URL_ENV, None)
            else:
                os.environ[BASE_URL_ENV] = previous_url
    print("stand-in KartaView stopped")
    return status


def _kartaview_demo_flow(
    definitions: dg.Definitions, resources: dict, instance: dg.DagsterInstance
) -> int:
    imgrank: ImgrankConfig = resources["imgrank"]
    # 1. Discovery: what the daily schedule starts for every KartaView collection.
    result = run_job(definitions, instance, DISCOVER_KARTAVIEW_JOB, KARTAVIEW_DEMO, DEMO_TAGS)
    if not result.success:
        print(f"discovery of {KARTAVIEW_DEMO} failed", file=sys.stderr)
        return 1
    node = KARTAVIEW_SEQUENCES.to_user_string()
    found = result.asset_materializations_for_node(node)[0].metadata
    print(
        f"\n1. discover_kartaview: {found['sequences'].value} sequences found, "
        f"{found['new_sequences'].value} new"
    )
    # 2. New sequences become partitions (as kartaview_sequences_sensor does), then ingestion.
    io_manager = resources["io_manager"].open()
    discovered = io_manager.read_partitions(KARTAVIEW_SEQUENCES.to_user_string(), [KARTAVIEW_DEMO])
    known = set(instance.get_dynamic_partitions(sequence_partitions.name))
    added = new_sequence_keys(KARTAVIEW_DEMO, discovered[KARTAVIEW_DEMO]["sequence_id"], known)
    instance.add_dynamic_partitions(sequence_partitions.name, added)
    print(f"\n2. {len(added)} new sequence partition(s); downloading and embedding:")
    failed = ingest_collection(definitions, instance, KARTAVIEW_DEMO)
    if failed:
        print(f"   {len(failed)} sequence(s) failed; they are left out of the ranking")
    # 3. Ranking: as rank_after_ingestion_sensor would request it.
    export = imgrank.exports_dir(KARTAVIEW_DEMO) / RANKING_EXPORT_NAME
    if added or not export.exists():
        started = time.perf_counter()
        result = run_job(definitions, instance, RANK_COLLECTION_JOB, KARTAVIEW_DEMO, DEMO_TAGS)
        if not result.success:
            print("   ranking failed: see the run in the Dagster UI (make ui)", file=sys.stderr)
            return 1
        print(f"\n3. rank_collection: ranked ({time.perf_counter() - started:.1f} s)")
    else:
        print("\n3. the ranking is already current: no new sequence since the last one")
    _print_kartaview_ranking(export, io_manager, imgrank, resources)
    return 0


def _print_kartaview_ranking(
    export: Path, io_manager: PartitionedParquetIOManager, imgrank: ImgrankConfig, resources: dict
) -> None:
    from imgrank_dagster.core.sources.kartaview import ATTRIBUTION, LICENCE

    ranking = pd.read_csv(export)
    images = io_manager.read_partitions(
        COLLECTION_IMAGES.to_user_string(), [KARTAVIEW_DEMO], columns=["image_id", "details_url"]
    )
    details = images[KARTAVIEW_DEMO].set_index("image_id")["details_url"] if images else None
    print(f"\nTop 10 of {len(ranking)} images to label next:")
    for row in ranking.head(10).itertuples():
        link = details.get(row.image_id, "") if details is not None else ""
        print(f"  {row.rank:>3}. {row.image_id:<22} score {row.score:6.3f}  {link}")
    print(
        f'\nImagery licence: {LICENCE}, credit "{ATTRIBUTION}"; each image\'s details_url '
        "(and source_url) is in collection_images. (Here: synthetic stand-in images.)"
    )
    print(f"\ncollections file:   {imgrank.collections_file}")
    print(f"images:             {imgrank.collection(KARTAVIEW_DEMO).image_root}")
    print(f"ranking (CSV):      {export}")
    print(f"assets (Parquet):   {resources['io_manager'].base_path}")
    print(f"Dagster history:    {os.environ.get('DAGSTER_HOME')}  (browse it with `make ui`)")
    print("Run again with --sequences 5: only the new sequence is downloaded, then re-ranked.")


# --- cluster-demo -----------------------------------------------------------------------------

CLUSTER_DEMO_SEQUENCES_PER_RUN = "8"  # the demo's 24 sequences fan out over 3 ingestion runs


def _ensure_demo_collection(data_dir: Path, images: int, seed: int) -> None:
    from imgrank_dagster.devtools.demo_collection import generate_demo_collection

    demo_root = data_dir / "demo"
    if not (demo_root / "manifest.csv").exists():
        summary = generate_demo_collection(demo_root, n_images=images, seed=seed)
        print(f"generated {summary.n_images} demo images in {summary.n_sequences} sequences")


def run_cluster_demo(images: int, seed: int, workers: int, port: int) -> int:
    """The demo collection through the cluster profile's services, all on 127.0.0.1: a backfill
    of its sequences and a ranking run on Celery workers, history in PostgreSQL, Parquet in the
    (stand-in) bucket. Runs until Ctrl-C, then stops every process it started."""
    import shutil
    import signal
    import threading

    from imgrank_dagster.devtools import cluster as local

    data_dir = default_data_dir()
    _ensure_demo_collection(data_dir, images, seed)
    root = data_dir / "cluster"
    # The S3 stand-in keeps its objects in memory: each demo starts from nothing.
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    if local._answers(local.HOST, port):
        print(f"port {port} on {local.HOST} is in use: pass --port", file=sys.stderr)
        return 1
    cluster = local.LocalCluster(
        root,
        data_dir,
        workers=workers,
        extra_env={"IMGRANK_SEQUENCES_PER_RUN": CLUSTER_DEMO_SEQUENCES_PER_RUN},
    )
    cluster.ports["webserver"] = port
    stop = threading.Event()
    try:
        print("starting PostgreSQL, Redis and the S3 stand-in ...", flush=True)
        cluster.start_services()
        cluster.check()
        cluster.create_instance_tables()
        # This process talks to the same instance (PostgreSQL) as every service.
        os.environ.update(cluster.environment())
        instance = dg.DagsterInstance.get()
        _register(instance, ImgrankConfig(data_dir=str(data_dir)))
        print(f"starting {workers} Celery workers and the webserver ...", flush=True)
        names = cluster.start_workers()
        cluster.start_webserver()
        nodes = cluster.wait_for_workers(names)
        cluster.wait_for_webserver()
        client = local.ClusterClient(local.HOST, port, instance)
        # Only the demo's own runs while it runs; the sensors are started again at the end.
        stopped = [name for name in client.stop_automation() if name.endswith("sensor")]
        print("starting the daemon; ingesting the demo as a backfill ...", flush=True)
        cluster.start_daemon()
        processes = list(cluster.processes.values())
        runs = local.ingest_and_rank(client, DEMO_COLLECTION, 3600, processes)
        refresh = local.run_job_on_cluster(
            client, REFRESH_VIEWS_JOB, DEMO_COLLECTION, 1800, processes
        )
        print(f"refresh_views {refresh.run_id}: the map, the report and the FiftyOne dataset")
        client.reset_sensors(stopped)
        run_ids = [run.run_id for run in [*runs.ingestion, runs.ranking, refresh]]
        executed = local.workers_of_runs(instance, run_ids)
        _print_cluster_demo(cluster, data_dir, nodes, executed)
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: stop.set())
        print("Ctrl-C stops every process this command started.", flush=True)
        while not stop.wait(1.0):
            for managed in cluster.processes.values():
                problem = managed.problem()
                if problem:
                    print(problem, file=sys.stderr)
                    return 1
        return 0
    except local.ClusterError as error:
        print(f"cluster-demo: {error}", file=sys.stderr)
        print(f"logs: {cluster.logs}", file=sys.stderr)
        return 1
    finally:
        print("stopping the workers, the webserver, the daemon and the services ...", flush=True)
        cluster.stop()
        print("stopped", flush=True)


def _print_cluster_demo(
    cluster, data_dir: Path, nodes: dict[str, str], executed: dict[str, set[str]]
) -> None:
    from imgrank_dagster.devtools.cluster import BUCKET, COMPUTE_LOGS_PREFIX, DATABASE

    imgrank = ImgrankConfig(data_dir=str(data_dir))
    export = imgrank.exports_dir(DEMO_COLLECTION) / RANKING_EXPORT_NAME
    ranking = pd.read_csv(export)
    print(f"\nTop 10 of {len(ranking)} images to label next:")
    for row in ranking.head(10).itertuples():
        print(f"  {row.rank:>3}. {row.image_id:<22} score {row.score:6.3f}  {row.reason}")
    print("\nSteps per Celery worker:")
    for node in sorted(nodes.values()):
        print(f"  {node:<40} {len(executed.get(node, ()))} steps")
    port = cluster.ports["postgres"]
    print(f"\nDagster UI:         {cluster.webserver_url}  (runs, the backfill, sensors running)")
    print(
        f"run history:        PostgreSQL {cluster.postgres_url}  "
        f"(psql -h 127.0.0.1 -p {port} -U imgrank {DATABASE})"
    )
    print(f"assets (Parquet):   {cluster.warehouse}  at {cluster.s3_endpoint} (moto stand-in)")
    print(f"compute logs:       s3://{BUCKET}/{COMPUTE_LOGS_PREFIX}")
    print(f"process logs:       {cluster.logs}/ (worker-1.log, daemon.log, ...)")
    print(f"ranking (CSV):      {export}")
    print(f"HTML report:        {imgrank.exports_dir(DEMO_COLLECTION) / REPORT_DIR / REPORT_INDEX}")
