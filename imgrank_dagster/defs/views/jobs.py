import dagster as dg

from imgrank_dagster.lib.names import LANE_TAG, REFRESH_VIEWS_JOB, VIEWS_GROUP, VIEWS_LANE
from imgrank_dagster.lib.partitions import collection_partitions

refresh_views_job = dg.define_asset_job(
    REFRESH_VIEWS_JOB,
    selection=dg.AssetSelection.groups(VIEWS_GROUP),
    tags={LANE_TAG: VIEWS_LANE},
    partitions_def=collection_partitions,
    description="Rebuild a collection's views from its ranking: the embedding map, the HTML "
    "report and the FiftyOne dataset.",
)
