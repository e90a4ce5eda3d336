import dagster as dg

from imgrank_dagster.lib.names import INGEST_SEQUENCES_JOB, INGESTION_GROUP, LANE_TAG, PIPELINE_LANE
from imgrank_dagster.lib.partitions import sequence_partitions

ingest_sequences_job = dg.define_asset_job(
    INGEST_SEQUENCES_JOB,
    selection=dg.AssetSelection.groups(INGESTION_GROUP),
    tags={LANE_TAG: PIPELINE_LANE},
    partitions_def=sequence_partitions,
    description="Ingest and embed one sequence (a backfill: up to 100 per run).",
)
