import dagster as dg

from imgrank_dagster.defs.ranking.features import RANKING_GROUP
from imgrank_dagster.partitions import collection_partitions

rank_collection_job = dg.define_asset_job(
    "rank_collection",
    selection=dg.AssetSelection.groups(RANKING_GROUP),
    partitions_def=collection_partitions,
    description="Rank one collection from its ingested sequences: features to final ranking.",
)
