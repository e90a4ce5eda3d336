import dagster as dg

from imgrank_dagster.defs.visualization.assets import VISUALIZATION_GROUP
from imgrank_dagster.partitions import collection_partitions

refresh_views_job = dg.define_asset_job(
    "refresh_views",
    selection=dg.AssetSelection.groups(VISUALIZATION_GROUP),
    partitions_def=collection_partitions,
    description="Rebuild a collection's HTML report and FiftyOne dataset from its ranking.",
)
