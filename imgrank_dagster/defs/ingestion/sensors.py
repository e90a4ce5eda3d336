"""Registers collections and their sequences as partitions and requests ingestion of new ones."""

import dagster as dg

from imgrank_dagster.core.config import CollectionConfigError
from imgrank_dagster.defs.ingestion.jobs import ingest_sequences_job
from imgrank_dagster.lib.metadata import SKIP_MESSAGE_CHARS, bounded
from imgrank_dagster.lib.partitions import (
    collection_partitions,
    sequence_partitions,
    unregistered_partitions,
)
from imgrank_dagster.lib.resources import ImgrankConfig


@dg.sensor(
    job=ingest_sequences_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers the collections of data/collections.yaml and the sequences of their "
    "folders as partitions, and requests one ingestion run per new sequence.",
)
def collections_sensor(
    context: dg.SensorEvaluationContext, imgrank: ImgrankConfig
) -> dg.SensorResult | dg.SkipReason:
    try:
        collections, config_problems = imgrank.collections_and_problems()
    except CollectionConfigError as error:
        return dg.SkipReason(bounded(str(error)))
    added_collections, added_sequences, problems = unregistered_partitions(
        collections.values(), context.instance
    )
    problems = [*config_problems.values(), *problems]  # the other collections still count
    for problem in problems:
        context.log.warning(problem)
    if not added_collections and not added_sequences:
        return dg.SkipReason(
            bounded(
                "no new collection or sequence" + "".join(f"; {bounded(p)}" for p in problems),
                SKIP_MESSAGE_CHARS,
            )
        )
    return dg.SensorResult(
        dynamic_partitions_requests=[
            collection_partitions.build_add_request(added_collections),
            sequence_partitions.build_add_request(added_sequences),
        ],
        run_requests=[dg.RunRequest(partition_key=key, run_key=key) for key in added_sequences],
    )
