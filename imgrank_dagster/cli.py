"""`python -m imgrank_dagster.cli demo`: generate, ingest, embed and rank the demo collection.

`python -m imgrank_dagster.cli app`: the FiftyOne App on a ranked collection (`make app`).

Runs go through the same jobs and the same Dagster instance (`DAGSTER_HOME`) as the UI, so
everything this command does is visible afterwards in `make ui`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from imgrank_dagster.core.demo import generate_demo_collection
from imgrank_dagster.core.files import write_atomically
from imgrank_dagster.core.kartaview import ATTRIBUTION, BASE_URL_ENV, LICENCE
from imgrank_dagster.core.kartaview.fake_server import FakeKartaView
from imgrank_dagster.definitions import build_definitions, defs
from imgrank_dagster.defs.ingestion.assets import SEQUENCES_PER_RUN
from imgrank_dagster.defs.ingestion.sensors import new_partitions
from imgrank_dagster.defs.kartaview.schedules import daily_refresh_schedule
from imgrank_dagster.defs.kartaview.sensors import kartaview_sequences_sensor
from imgrank_dagster.defs.ranking.sensors import rank_after_ingestion_sensor
from imgrank_dagster.partitions import collection_partitions, sequence_partitions
from imgrank_dagster.resources import ImgrankConfig, build_resources, default_data_dir
from imgrank_dagster.resources.parquet_io_manager import PartitionedParquetIOManager

DEMO_COLLECTION = "demo"
# Demo runs print their progress lines and warnings, not every Dagster event.
INFO_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def register_partitions(instance: dg.DagsterInstance, imgrank: ImgrankConfig) -> None:
    added_collections, added_sequences, problems = new_partitions(
        imgrank.collections().values(), instance
    )
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    instance.add_dynamic_partitions(collection_partitions.name, added_collections)
    instance.add_dynamic_partitions(sequence_partitions.name, added_sequences)


def pending_ranges(all_keys: list[str], wanted: set[str], size: int) -> list[list[str]]:
    """Runs of keys that are consecutive in the partition order and all wanted, <= size each.

    A run over a range covers every key between its ends, so a range never spans a key that
    is not wanted (already ingested, or another collection's).
    """
    ranges: list[list[str]] = []
    current: list[str] = []
    for key in all_keys:
        if key not in wanted or len(current) == size:
            if current:
                ranges.append(current)
            current = []
        if key in wanted:
            current.append(key)
    if current:
        ranges.append(current)
    return ranges


def ingest_collection(instance: dg.DagsterInstance, collection: str) -> list[str]:
    """Ingest every sequence of the collection not ingested yet; returns failed sequences.

    Consecutive sequences go in runs of up to SEQUENCES_PER_RUN, as a backfill from the UI
    does: fastdup then starts once per run instead of once per sequence.
    """
    all_keys = instance.get_dynamic_partitions(sequence_partitions.name)
    done = instance.get_materialized_partitions(dg.AssetKey("image_features"))
    job = defs.resolve_job_def("ingest_sequences")
    failed = []
    wanted = {key for key in all_keys if key.startswith(f"{collection}.") and key not in done}
    for keys in pending_ranges(all_keys, wanted, SEQUENCES_PER_RUN):
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            tags={
                ASSET_PARTITION_RANGE_START_TAG: keys[0],
                ASSET_PARTITION_RANGE_END_TAG: keys[-1],
            },
            raise_on_error=False,
            run_config=INFO_LOGS,
        )
        status = "ok" if result.success else "FAILED"
        print(
            f"  {keys[0]} .. {keys[-1]} ({len(keys)} sequences): {status} "
            f"({time.perf_counter() - started:.1f} s)"
        )
        if not result.success:
            failed.extend(keys)
    return failed


def rank_collection(instance: dg.DagsterInstance, collection: str) -> bool:
    """Rank the collection, then build its views (HTML report, FiftyOne dataset)."""
    for job_name in ["rank_collection", "refresh_views"]:
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=collection, raise_on_error=False, run_config=INFO_LOGS
        )
        if not result.success:
            return False
    return True


def run_demo(images: int, seed: int) -> int:
    data_dir = default_data_dir()
    demo_root = data_dir / "demo"
    if not (demo_root / "manifest.csv").exists():
        started = time.perf_counter()
        summary = generate_demo_collection(demo_root, n_images=images, seed=seed)
        print(
            f"generated {summary.n_images} demo images in {summary.n_sequences} sequences "
            f"under {summary.images_dir} ({time.perf_counter() - started:.1f} s)"
        )
    imgrank = ImgrankConfig(data_dir=str(data_dir))
    instance = dg.DagsterInstance.get()
    register_partitions(instance, imgrank)
    print("ingesting and embedding sequences:")
    failed = ingest_collection(instance, DEMO_COLLECTION)
    if failed:
        print(f"{len(failed)} sequence(s) failed; they are left out of the ranking: {failed}")
    print("ranking the collection ...")
    if not rank_collection(instance, DEMO_COLLECTION):
        print("ranking failed: see the run in the Dagster UI (make ui)", file=sys.stderr)
        return 1
    export = imgrank.exports_dir(DEMO_COLLECTION) / "all_score_after_rank.csv"
    ranking = pd.read_csv(export)
    print(f"\nTop 10 of {len(ranking)} images to label next:")
    for row in ranking.head(10).itertuples():
        print(f"  {row.rank:>3}. {row.image_id:<22} score {row.score:6.3f}  {row.reason}")
    print(f"\nranking (CSV):      {export}")
    print(f"HTML report:        {imgrank.exports_dir(DEMO_COLLECTION) / 'report' / 'index.html'}")
    print(
        f"assets (Parquet):   {Path(os.environ.get('IMGRANK_WAREHOUSE', data_dir / 'warehouse'))}"
    )
    print(f"Dagster history:    {os.environ.get('DAGSTER_HOME')}  (browse it with `make ui`)")
    print("FiftyOne App:       `make app` (http://127.0.0.1:5151)")
    return 0


# --- demo-kartaview: the whole KartaView path, offline, against the stand-in server ---------

KARTAVIEW_DEMO = "kartaview-demo"  # the collection, and its data folder under the data dir
KARTAVIEW_DEMO_ORIGIN = (52.5200, 13.4050)  # where the stand-in server's sequences start


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


def _run(
    definitions: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest, job: str
) -> dg.ExecuteInProcessResult:
    return definitions.resolve_job_def(request.job_name or job).execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        run_config=INFO_LOGS,
        raise_on_error=False,
    )


def _unfinished_sequences(instance: dg.DagsterInstance, collection: str) -> list[str]:
    """Registered sequences of the collection never embedded (an interrupted earlier demo)."""
    done = instance.get_materialized_partitions(dg.AssetKey("image_features"))
    return [
        key
        for key in instance.get_dynamic_partitions(sequence_partitions.name)
        if key.startswith(f"{collection}.") and key not in done
    ]


def run_kartaview_demo(sequences: int, photos: int) -> int:
    data_dir = default_data_dir() / KARTAVIEW_DEMO
    warehouse = data_dir / "warehouse"
    resources = build_resources(data_dir=data_dir, warehouse=str(warehouse))
    definitions = build_definitions(resources)
    imgrank: ImgrankConfig = resources["imgrank"]
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
            register_partitions(instance, imgrank)
            status = _kartaview_demo_flow(definitions, resources, instance, imgrank, warehouse)
        finally:
            if previous_url is None:
                os.environ.pop(BASE_URL_ENV, None)
            else:
                os.environ[BASE_URL_ENV] = previous_url
    print("stand-in KartaView stopped")
    return status


def _kartaview_demo_flow(
    definitions: dg.Definitions,
    resources: dict,
    instance: dg.DagsterInstance,
    imgrank: ImgrankConfig,
    warehouse: Path,
) -> int:
    # 1. The daily schedule's tick, now: one discovery run per KartaView collection.
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime.now(UTC), resources=resources
    ) as context:
        discoveries = daily_refresh_schedule(context)
    if not isinstance(discoveries, list):
        print(f"daily_refresh_schedule requested nothing: {discoveries}", file=sys.stderr)
        return 1
    print(f"\n1. daily_refresh_schedule: {len(discoveries)} discovery run(s)")
    for request in discoveries:
        result = _run(definitions, instance, request, "discover_kartaview")
        if not result.success:
            print(f"   discovery of {request.partition_key} failed", file=sys.stderr)
            return 1
        found = result.asset_materializations_for_node("kartaview_sequences")[0].metadata
        print(
            f"   {request.partition_key}: {found['sequences'].value} sequences found, "
            f"{found['new_sequences'].value} new"
        )

    # 2. The sequences sensor: new sequences become partitions, one ingestion run each.
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        sensed = kartaview_sequences_sensor(context)
    ingestions: list[dg.RunRequest] = []
    if isinstance(sensed, dg.SensorResult):
        for added in sensed.dynamic_partitions_requests or []:
            if isinstance(added, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(added.partitions_def_name, added.partition_keys)
        ingestions = [r for r in sensed.run_requests or [] if r.job_name == "ingest_sequences"]
    requested = {request.partition_key for request in ingestions}
    resumed = [
        dg.RunRequest(partition_key=key, run_key=key)
        for key in _unfinished_sequences(instance, KARTAVIEW_DEMO)
        if key not in requested
    ]
    print(
        f"\n2. kartaview_sequences_sensor: {len(ingestions)} new sequence partition(s), "
        f"{len(ingestions)} ingestion run(s)"
        + (f"; {len(resumed)} unfinished from an earlier run" if resumed else "")
    )
    for number, request in enumerate([*ingestions, *resumed], start=1):
        started = time.perf_counter()
        result = _run(definitions, instance, request, "ingest_sequences")
        status = "ok" if result.success else "FAILED"
        print(
            f"   [{number}/{len(ingestions) + len(resumed)}] {request.partition_key}: {status} "
            f"({time.perf_counter() - started:.1f} s)"
        )

    # 3. The rank sensor: one ranking once the collection's ingestion is done.
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        ranking_due = rank_after_ingestion_sensor(context)
    export = imgrank.exports_dir(KARTAVIEW_DEMO) / "all_score_after_rank.csv"
    ranks = ranking_due.run_requests if isinstance(ranking_due, dg.SensorResult) else []
    if not ranks and not export.exists():
        ranks = [dg.RunRequest(partition_key=KARTAVIEW_DEMO)]  # a ranking that failed before
    print(f"\n3. rank_after_ingestion_sensor: {len(ranks)} ranking run(s)")
    for request in ranks:
        started = time.perf_counter()
        result = _run(definitions, instance, request, "rank_collection")
        if not result.success:
            print("   ranking failed: see the run in the Dagster UI (make ui)", file=sys.stderr)
            return 1
        print(f"   {request.partition_key}: ranked ({time.perf_counter() - started:.1f} s)")
    if not ranks:
        print("   the ranking is already current: no new sequence since the last one")
    _print_kartaview_ranking(export, warehouse, imgrank)
    return 0


def _print_kartaview_ranking(export: Path, warehouse: Path, imgrank: ImgrankConfig) -> None:
    from upath import UPath

    ranking = pd.read_csv(export)
    images = PartitionedParquetIOManager(UPath(str(warehouse))).read_partitions(
        "collection_images", [KARTAVIEW_DEMO], columns=["image_id", "details_url"]
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
    print(f"assets (Parquet):   {warehouse}")
    print(f"Dagster history:    {os.environ.get('DAGSTER_HOME')}  (browse it with `make ui`)")
    print("Run again with --sequences 5: only the new sequence is downloaded, then re-ranked.")


# --- app: the FiftyOne App on a ranked collection -------------------------------------------

VISUALIZATION_ASSETS = ("embedding_map", "ranking_report", "fiftyone_dataset")
APP_ADDRESS = "127.0.0.1"


def _latest_storage_id(instance: dg.DagsterInstance, asset: str, partition: str) -> int:
    ids = instance.get_latest_storage_id_by_partition(
        dg.AssetKey(asset), dg.DagsterEventType.ASSET_MATERIALIZATION, partitions={partition}
    )
    return ids.get(partition, -1)


def stale_visualizations(instance: dg.DagsterInstance, collection: str) -> list[str]:
    """The visualization assets of the collection missing or older than what they show."""
    features = _latest_storage_id(instance, "feature_matrix", collection)
    if _latest_storage_id(instance, "embedding_map", collection) < features:
        return list(VISUALIZATION_ASSETS)
    newest_input = max(
        _latest_storage_id(instance, "labeling_priority", collection),
        _latest_storage_id(instance, "embedding_map", collection),
    )
    return [
        asset
        for asset in VISUALIZATION_ASSETS[1:]
        if _latest_storage_id(instance, asset, collection) < newest_input
    ]


def run_app(collection: str, port: int) -> int:
    from imgrank_dagster.core import fiftyone_sync
    from imgrank_dagster.defs.visualization.assets import FIFTYONE_DIR, REPORT_DIR

    data_dir = default_data_dir()
    imgrank = ImgrankConfig(data_dir=str(data_dir))
    instance = dg.DagsterInstance.get()
    if _latest_storage_id(instance, "labeling_priority", collection) < 0:
        print(
            f"collection {collection!r} is not ranked yet: run `make demo` (or rank it in the "
            "Dagster UI) first",
            file=sys.stderr,
        )
        return 1
    if fiftyone_sync.port_in_use(APP_ADDRESS, port):
        print(f"port {port} on {APP_ADDRESS} is in use: pass --port", file=sys.stderr)
        return 1
    fiftyone_sync.use_database_dir(data_dir / FIFTYONE_DIR)
    stale = stale_visualizations(instance, collection)
    if "fiftyone_dataset" not in stale and not fiftyone_sync.dataset_exists(collection):
        stale.append("fiftyone_dataset")  # the database folder was removed or moved
    if stale:
        print(f"materializing {', '.join(stale)} for {collection} ...")
        result = dg.materialize(
            list(defs.assets),
            selection=stale,
            partition_key=collection,
            instance=instance,
            resources=build_resources(data_dir=data_dir),
            run_config=INFO_LOGS,
            raise_on_error=False,
        )
        if not result.success:
            print("materialization failed: see the run in the Dagster UI", file=sys.stderr)
            return 1
    report = imgrank.exports_dir(collection) / REPORT_DIR / "index.html"
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    session = fiftyone_sync.launch_app(collection, fiftyone_sync.LABEL_NEXT_VIEW, APP_ADDRESS, port)
    try:
        if not fiftyone_sync.wait_until_serving(APP_ADDRESS, port):
            print("the FiftyOne App did not start within 60 s", file=sys.stderr)
            return 1
        print(
            f"\nFiftyOne App: http://{APP_ADDRESS}:{port}/  (dataset {collection!r}, saved "
            f"view {fiftyone_sync.LABEL_NEXT_VIEW!r}: unlabelled images by rank)"
        )
        print(f"HTML report:  {report}")
        print("Ctrl-C stops the App.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        print("stopping the FiftyOne App ...", flush=True)
        fiftyone_sync.close_app(session)
    print("stopped", flush=True)
    return 0


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
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # Output(data_version=...)
    if not os.environ.get("DAGSTER_HOME"):
        parser.error("set DAGSTER_HOME to an absolute folder (make demo does this)")
    if args.command == "app":
        return run_app(args.collection, args.port)
    if args.command == "demo-kartaview":
        if args.sequences < 1 or args.photos < 1:
            parser.error("--sequences and --photos must be at least 1")
        return run_kartaview_demo(args.sequences, args.photos)
    return run_demo(args.images, args.seed)


if __name__ == "__main__":
    sys.exit(main())
