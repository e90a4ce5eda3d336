import dagster as dg

from imgrank_dagster.defs.kartaview.assets import kartaview_sequences
from imgrank_dagster.lib.names import DISCOVER_KARTAVIEW_JOB, LANE_TAG, PIPELINE_LANE
from imgrank_dagster.lib.partitions import collection_partitions

discover_kartaview_job = dg.define_asset_job(
    DISCOVER_KARTAVIEW_JOB,
    selection=dg.AssetSelection.assets(kartaview_sequences),
    tags={LANE_TAG: PIPELINE_LANE},
    partitions_def=collection_partitions,
    description="Discover one KartaView collection's sequences (network, rate-limited).",
)
