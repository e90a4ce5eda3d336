"""Registers collections and their sequences as partitions and requests ingestion of new ones."""

from collections.abc import Iterable

import dagster as dg

from imgrank_dagster.core.collections import Collection, CollectionConfigError, FolderSource
from imgrank_dagster.core.folder_source import SourceError
from imgrank_dagster.core.sources import discover_sequences
from imgrank_dagster.defs.ingestion.jobs import ingest_sequences_job
from imgrank_dagster.partitions import collection_partitions, sequence_partitions
from imgrank_dagster.resources import ImgrankConfig


def new_partitions(
    collections: Iterable[Collection], instance: dg.DagsterInstance
) -> tuple[list[str], list[str], list[str]]:
    """(new collection keys, new folder-sequence keys, problems) against the instance."""
    known_collections = set(instance.get_dynamic_partitions(collection_partitions.name))
    known_sequences = set(instance.get_dynamic_partitions(sequence_partitions.name))
    added_collections: list[str] = []
    added_sequences: list[str] = []
    problems: list[str] = []
    for collection in collections:
        if collection.name not in known_collections:
            added_collections.append(collection.name)
        if not isinstance(collection.source, FolderSource):
            continue  # KartaView sequences are discovered by their own sensor
        try:
            sequence_ids = discover_sequences(collection)
        except SourceError as error:
            problems.append(str(error))
            continue
        for sequence_id in sequence_ids:
            key = collection.sequence_partition_key(sequence_id)
            if key not in known_sequences:
                added_sequences.append(key)
    return added_collections, added_sequences, problems


@dg.sensor(
    job=ingest_sequences_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers the collections of data/collections.yaml and the sequences of their "
    "folders as partitions, and requests one ingestion run per new sequence.",
)
def collections_sensor(
    context: dg.SensorEvaluationContext, imgrank: ImgrankConfig
) -> dg.SensorResult | dg.SkipReason:
    try:
        collections = imgrank.collections()
    except CollectionConfigError as error:
        return dg.SkipReason(str(error))
    added_collections, added_sequences, problems = new_partitions(
        collections.values(), context.instance
    )
    for problem in problems:
        context.log.warning(problem)
    if not added_collections and not added_sequences:
        return dg.SkipReason("no new collection or sequence" + "".join(f"; {p}" for p in problems))
    return dg.SensorResult(
        dynamic_partitions_requests=[
            collection_partitions.build_add_request(added_collections),
            sequence_partitions.build_add_request(added_sequences),
        ],
        run_requests=[dg.RunRequest(partition_key=key, run_key=key) for key in added_sequences],
    )
