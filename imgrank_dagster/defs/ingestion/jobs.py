import dagster as dg

from imgrank_dagster.partitions import sequence_partitions

ingest_sequences_job = dg.define_asset_job(
    "ingest_sequences",
    selection=dg.AssetSelection.groups("ingestion"),
    partitions_def=sequence_partitions,
    description="Ingest and embed one sequence.",
)
