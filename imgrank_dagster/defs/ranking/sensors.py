"""Ranks a collection again once new sequences of it are ingested and embedded."""

from collections.abc import Iterable, Mapping

import dagster as dg

from imgrank_dagster.core.config import CollectionConfigError
from imgrank_dagster.core.config.keys import collection_of
from imgrank_dagster.defs.ranking.jobs import rank_collection_job
from imgrank_dagster.lib.names import (
    FEATURE_MATRIX,
    IMAGE_FEATURES,
    LABELING_PRIORITY,
    LABELS_LANE,
    PIPELINE_LANE,
    TRIGGER_TAG,
)
from imgrank_dagster.lib.partitions import collection_partitions
from imgrank_dagster.lib.resources import ImgrankConfig
from imgrank_dagster.lib.runs import collections_with_active_runs


def newest_by_collection(
    storage_ids: Mapping[str, int], collections: Iterable[str]
) -> dict[str, int]:
    """The newest storage id among each collection's sequence partitions."""
    names = set(collections)
    newest: dict[str, int] = {}
    for key, storage_id in storage_ids.items():
        name = collection_of(key)
        if name in names and storage_id > newest.get(name, -1):
            newest[name] = storage_id
    return newest


@dg.sensor(
    job=rank_collection_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one rank_collection run for a collection when some of its sequences "
    "were embedded after its feature matrix was built, or a ranking run stopped after building "
    "it, and no live run of the collection (discovery, ingestion, ranking) is queued or running.",
)
def rank_after_ingestion_sensor(
    context: dg.SensorEvaluationContext, imgrank: ImgrankConfig
) -> dg.SensorResult | dg.SkipReason:
    try:
        collections, _ = imgrank.collections_and_problems()  # collections_sensor reports them
    except CollectionConfigError as error:
        return dg.SkipReason(str(error))
    instance = context.instance
    registered = set(instance.get_dynamic_partitions(collection_partitions.name))
    names = sorted(name for name in collections if name in registered)
    if not names:
        return dg.SkipReason("no registered collection")
    # Two queries whatever the number of sequences: the newest event id per partition.
    # Event ids grow across assets, so they order image_features against feature_matrix.
    features = newest_by_collection(
        instance.get_latest_storage_id_by_partition(
            IMAGE_FEATURES, dg.DagsterEventType.ASSET_MATERIALIZATION
        ),
        names,
    )
    matrices = instance.get_latest_storage_id_by_partition(
        FEATURE_MATRIX, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=set(names)
    )
    stale = [name for name in names if features.get(name, -1) > matrices.get(name, -1)]
    # A ranking run that died after building the feature matrix left the ranking behind it.
    rankings = instance.get_latest_storage_id_by_partition(
        LABELING_PRIORITY, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=set(names)
    )
    unfinished = [
        name
        for name in names
        if name not in stale and matrices.get(name, -1) > rankings.get(name, -1)
    ]
    if not stale and not unfinished:
        return dg.SkipReason("every collection is ranked on its newest features")
    # A view refresh may run beside a ranking; a label change or another ingestion may not.
    busy = collections_with_active_runs(instance, lanes={PIPELINE_LANE, LABELS_LANE})
    waiting = [name for name in [*stale, *unfinished] if name in busy]
    requests = [
        dg.RunRequest(
            partition_key=name,
            # One run per batch of features: the newest features event names the batch.
            run_key=f"{name}:features:{features[name]}",
            tags={TRIGGER_TAG: "rank_after_ingestion_sensor"},
        )
        for name in stale
        if name not in busy
    ]
    requests += [
        dg.RunRequest(
            partition_key=name,
            run_key=f"{name}:unfinished:{matrices[name]}",  # once per feature matrix
            tags={TRIGGER_TAG: "rank_after_ingestion_sensor"},
        )
        for name in unfinished
        if name not in busy
    ]
    if not requests:
        return dg.SkipReason(f"waiting for running ingestion or ranking of {', '.join(waiting)}")
    return dg.SensorResult(run_requests=requests)
