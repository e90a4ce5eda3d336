"""Sending a collection's next batch: the `annotation_batch` asset alone (`imgrank send`)."""

import dagster as dg

from imgrank_dagster.lib.names import (
    ANNOTATION_BATCH,
    ANNOTATION_LANE,
    LANE_TAG,
    SEND_ANNOTATION_BATCH_JOB,
)
from imgrank_dagster.lib.partitions import collection_partitions

send_annotation_batch_job = dg.define_asset_job(
    SEND_ANNOTATION_BATCH_JOB,
    selection=dg.AssetSelection.assets(ANNOTATION_BATCH),
    tags={LANE_TAG: ANNOTATION_LANE},
    partitions_def=collection_partitions,
    executor_def=dg.in_process_executor,
    description="Send one collection's next batch to its annotation tool: the top of the "
    "current ranking that is not in the Label Studio project yet (or a CVAT task file).",
)
