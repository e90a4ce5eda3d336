import dagster as dg

from imgrank_dagster.lib.names import REFRESH_VIEWS_JOB, VIEWS_GROUP
from imgrank_dagster.lib.partitions import collection_partitions

refresh_views_job = dg.define_asset_job(
    REFRESH_VIEWS_JOB,
    selection=dg.AssetSelection.groups(VIEWS_GROUP),
    partitions_def=collection_partitions,
    description="Rebuild a collection's views from its ranking: the embedding map, the HTML "
    "report and the FiftyOne dataset.",
)
