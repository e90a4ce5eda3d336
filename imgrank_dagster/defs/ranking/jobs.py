import dagster as dg

from imgrank_dagster.lib.names import (
    FEATURES_GROUP,
    LABELS_GROUP,
    LANE_TAG,
    PIPELINE_LANE,
    RANK_COLLECTION_JOB,
    RANKING_GROUP,
    RETRY_ON_STEP_FAILURE_TAG,
)
from imgrank_dagster.lib.partitions import collection_partitions

rank_collection_job = dg.define_asset_job(
    RANK_COLLECTION_JOB,
    selection=dg.AssetSelection.groups(FEATURES_GROUP, LABELS_GROUP, RANKING_GROUP),
    # A step killed by the OOM killer fails as a step: this run is retried anyway (dagster.yaml
    # run_retries); the rank sensor's run key would never ask for it again.
    tags={LANE_TAG: PIPELINE_LANE, RETRY_ON_STEP_FAILURE_TAG: "true"},
    partitions_def=collection_partitions,
    description="Rank one collection from its ingested sequences: the image catalog and "
    "feature matrix, the labelled set, clusters, scores, the neighbour graph and the ranking.",
)
