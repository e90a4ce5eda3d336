"""New KartaView sequences become sequence partitions, each ingested once."""

import json
from collections.abc import Mapping

import dagster as dg

from imgrank_dagster.core.config import Collection, CollectionConfigError, KartaViewSource
from imgrank_dagster.defs.ingestion.jobs import ingest_sequences_job
from imgrank_dagster.defs.kartaview.jobs import discover_kartaview_job
from imgrank_dagster.lib.io_manager import PartitionedParquetIOManager
from imgrank_dagster.lib.names import COLLECTION_TAG, KARTAVIEW_SEQUENCES, TRIGGER_TAG
from imgrank_dagster.lib.partitions import (
    collection_partitions,
    new_sequence_keys,
    sequence_partitions,
)
from imgrank_dagster.lib.resources import ImgrankConfig


def _read_cursor(cursor: str | None) -> dict[str, int]:
    """Per collection: the storage id of the last discovery this sensor has read."""
    return {name: int(storage_id) for name, storage_id in json.loads(cursor or "{}").items()}


def _unread_discoveries(
    latest: Mapping[str, int], collections: Mapping[str, Collection], seen: Mapping[str, int]
) -> dict[str, int]:
    """Kartaview collections whose discovery was materialized since the sensor last read it."""
    return {
        name: storage_id
        for name, storage_id in latest.items()
        if name in collections
        and isinstance(collections[name].source, KartaViewSource)
        and storage_id > seen.get(name, -1)
    }


def _first_discoveries(
    instance: dg.DagsterInstance, collections: Mapping[str, Collection], latest: Mapping[str, int]
) -> list[dg.RunRequest]:
    """A discovery run for each registered kartaview collection never discovered: a city
    added to collections.yaml is fetched now, not at the next daily refresh."""
    registered = set(instance.get_dynamic_partitions(collection_partitions.name))
    return [
        dg.RunRequest(
            job_name=discover_kartaview_job.name,
            partition_key=name,
            run_key=f"{name}:first-discovery",
            tags={TRIGGER_TAG: "kartaview_sequences_sensor", COLLECTION_TAG: name},
        )
        for name, collection in sorted(collections.items())
        if isinstance(collection.source, KartaViewSource)
        and name in registered
        and name not in latest
    ]


@dg.sensor(
    jobs=[ingest_sequences_job, discover_kartaview_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each kartaview_sequences materialization, registers the new sequences "
    "as partitions and requests one ingestion run per new sequence (run key = partition key, "
    "so a sequence is ingested once). Requests the first discovery of a new kartaview "
    "collection.",
)
def kartaview_sequences_sensor(
    context: dg.SensorEvaluationContext,
    imgrank: ImgrankConfig,
    io_manager: dg.ResourceParam[PartitionedParquetIOManager],
) -> dg.SensorResult | dg.SkipReason:
    try:
        collections, _ = imgrank.collections_and_problems()  # collections_sensor reports them
    except CollectionConfigError as error:
        return dg.SkipReason(str(error))
    seen = _read_cursor(context.cursor)
    latest = context.instance.get_latest_storage_id_by_partition(
        KARTAVIEW_SEQUENCES, dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    requests = _first_discoveries(context.instance, collections, latest)
    unread = _unread_discoveries(latest, collections, seen)
    if not unread and not requests:
        return dg.SkipReason("no new kartaview_sequences materialization")
    # The IO manager writes the file before Dagster records the materialization, so the file
    # is at least as new as the storage id read above.
    frames = io_manager.read_partitions(KARTAVIEW_SEQUENCES.to_user_string(), sorted(unread))
    known = set(context.instance.get_dynamic_partitions(sequence_partitions.name))
    added: list[str] = []
    for name in sorted(unread):
        if name not in frames:
            context.log.warning(f"{name}: kartaview_sequences was materialized but has no file")
            continue
        keys = new_sequence_keys(name, frames[name]["sequence_id"], known)
        context.log.info(f"{name}: {len(frames[name])} sequences discovered, {len(keys)} new")
        added.extend(keys)
        requests.extend(
            dg.RunRequest(
                job_name=ingest_sequences_job.name,
                partition_key=key,
                run_key=key,
                tags={TRIGGER_TAG: "kartaview_sequences_sensor", COLLECTION_TAG: name},
            )
            for key in keys
        )
    cursor = json.dumps({**seen, **unread}, sort_keys=True)
    if not requests:
        context.update_cursor(cursor)
        return dg.SkipReason(f"no new sequence in the discoveries of {', '.join(sorted(unread))}")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[sequence_partitions.build_add_request(added)] if added else [],
        cursor=cursor,
    )
