import dagster as dg

from imgrank_dagster.lib.names import (
    FEATURES_GROUP,
    LABELS_GROUP,
    LANE_TAG,
    PIPELINE_LANE,
    RANK_COLLECTION_JOB,
    RANKING_GROUP,
)
from imgrank_dagster.lib.partitions import collection_partitions

rank_collection_job = dg.define_asset_job(
    RANK_COLLECTION_JOB,
    selection=dg.AssetSelection.groups(FEATURES_GROUP, LABELS_GROUP, RANKING_GROUP),
    tags={LANE_TAG: PIPELINE_LANE},
    partitions_def=collection_partitions,
    description="Rank one collection from its ingested sequences: the image catalog and "
    "feature matrix, the labelled set, clusters, scores, the neighbour graph and the ranking.",
)
