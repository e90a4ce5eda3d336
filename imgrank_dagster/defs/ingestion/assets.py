"""Per-sequence assets: the images of one capture run, then their fastdup features."""

from pathlib import Path

import dagster as dg
import pandas as pd

from imgrank_dagster.core.collections import split_sequence_key
from imgrank_dagster.core.features import compute_features
from imgrank_dagster.core.sources import ingest_sequence
from imgrank_dagster.defs.metadata import counts_table, frame_output, frame_table
from imgrank_dagster.partitions import sequence_partitions
from imgrank_dagster.resources import ImgrankConfig

INGESTION_GROUP = "ingestion"  # jobs.py selects this group


@dg.asset(
    partitions_def=sequence_partitions,
    group_name=INGESTION_GROUP,
    kinds={"python", "parquet"},
    code_version="1",
    description="One row per file of a sequence: identity, checksum, size, EXIF time and GPS, "
    "and whether it decodes (status ok / rejected with reason).",
)
def raw_image_sequences(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig
) -> dg.Output[pd.DataFrame]:
    collection_name, sequence_id = split_sequence_key(context.partition_key)
    collection = imgrank.collection(collection_name)
    frame = ingest_sequence(collection, sequence_id, progress=context.log.info)
    rejected = frame[frame["status"] != "ok"]
    for row in rejected.itertuples():
        context.log.warning(f"rejected {row.path}: {row.reason}")
    return frame_output(
        frame,
        accepted=int((frame["status"] == "ok").sum()),
        rejected=len(rejected),
        rejected_images=frame_table(rejected[["path", "reason"]]),
        image_root=dg.MetadataValue.path(str(collection.image_root)),
    )


@dg.asset(
    partitions_def=sequence_partitions,
    group_name=INGESTION_GROUP,
    kinds={"python", "parquet"},
    code_version="1",
    pool="fastdup",
    description="fastdup's 576-d embedding and image statistics for every accepted image; "
    "images fastdup cannot read are recorded as failed with its error code.",
)
def image_features(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    raw_image_sequences: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    collection_name, _ = split_sequence_key(context.partition_key)
    root = Path(imgrank.collection(collection_name).image_root)
    accepted = raw_image_sequences[raw_image_sequences["status"] == "ok"]
    features = compute_features(
        list(accepted["image_id"]), [root / path for path in accepted["path"]]
    )
    failed = features[features["status"] != "ok"]
    for row in failed.itertuples():
        context.log.warning(f"fastdup could not embed {row.image_id}: {row.error}")
    return frame_output(
        features,
        embedded=len(features) - len(failed),
        failed=len(failed),
        failures=counts_table(failed["error"].value_counts().to_dict(), "error"),
    )
