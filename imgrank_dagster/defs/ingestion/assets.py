"""Per-sequence assets: the images of one capture run, then their fastdup features.

A run materializes one sequence (sensors, retries) or, in a backfill, up to
SEQUENCES_PER_RUN of them: fastdup then starts once for all of them, since its fixed cost per
start (about a second) outweighs embedding a short sequence. A deployment with many workers
sets IMGRANK_SEQUENCES_PER_RUN lower, so a backfill fans out over more runs at once.
"""

import os
from pathlib import Path

import dagster as dg

from imgrank_dagster.core.config.keys import split_sequence_key
from imgrank_dagster.defs.ingestion.isolation import LOGGED_ROWS, fail_sequences, log_some
from imgrank_dagster.lib.frames import Frame
from imgrank_dagster.lib.metadata import counts_table, frame_table, partitions_output
from imgrank_dagster.lib.names import FASTDUP_POOL, INGESTION_GROUP, KARTAVIEW_POOL
from imgrank_dagster.lib.partitions import sequence_partitions
from imgrank_dagster.lib.resources import ImgrankConfig

SEQUENCES_PER_RUN = int(os.environ.get("IMGRANK_SEQUENCES_PER_RUN", "100"))
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=SEQUENCES_PER_RUN)


def by_partition(context: dg.AssetExecutionContext, value: object) -> dict[str, Frame]:
    """An input of the same partitions: one frame for a one-partition run, else a dict."""
    if isinstance(value, dict):
        return value
    return {context.partition_key: value}


@dg.asset(
    partitions_def=sequence_partitions,
    group_name=INGESTION_GROUP,
    kinds={"python", "parquet"},
    code_version="1",
    pool=KARTAVIEW_POOL,  # downloads KartaView photos for KartaView collections
    backfill_policy=BACKFILL_POLICY,
    description="One row per file of a sequence: identity, checksum, size, EXIF time and GPS, "
    "and whether it decodes (status ok / rejected with reason).",
)
def raw_image_sequences(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig
) -> dg.Output[Frame]:
    from imgrank_dagster.core.sources import ingest_sequence

    frames: dict[str, Frame] = {}
    failures: dict[str, str] = {}
    roots: dict[str, str] = {}
    for key in context.partition_keys:
        # One sequence's failure is reported with the others' outcome, never in their place.
        try:
            collection_name, sequence_id = split_sequence_key(key)
            collection = imgrank.collection(collection_name)
            roots[key] = str(collection.image_root)
            frames[key] = ingest_sequence(collection, sequence_id, progress=context.log.info)
        except Exception as error:
            failures[key] = f"{type(error).__name__}: {error}"
            context.log.error(f"{key}: could not be ingested: {failures[key][:500]}")
    if failures:
        fail_sequences(context, failures, len(frames))
    own = {}
    for key, frame in frames.items():
        rejected = frame[frame["status"] != "ok"]
        log_some(
            context,
            [
                f"rejected {row.image_id}: {row.reason}"
                for row in rejected.head(LOGGED_ROWS).itertuples()
            ],
            len(rejected),
            f"rejected images of {key} (see rejected_images and collection_images)",
        )
        own[key] = {
            "accepted": int((frame["status"] == "ok").sum()),
            "rejected": len(rejected),
            "rejected_images": frame_table(rejected[["path", "reason"]]),
            "image_root": roots[key],
        }
    return partitions_output(context, frames, own)


@dg.asset(
    partitions_def=sequence_partitions,
    group_name=INGESTION_GROUP,
    kinds={"python", "parquet"},
    code_version="1",
    pool=FASTDUP_POOL,
    backfill_policy=BACKFILL_POLICY,
    description="fastdup's 576-d embedding and image statistics for every accepted image; "
    "images fastdup cannot read are recorded as failed with its error code.",
)
def image_features(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    raw_image_sequences: Frame,  # a frame, or {partition_key: frame} in a multi-sequence run
) -> dg.Output[Frame]:
    from imgrank_dagster.core.features.embeddings import compute_features

    accepted = {
        key: raw[raw["status"] == "ok"]
        for key, raw in by_partition(context, raw_image_sequences).items()
    }
    roots = {
        key: Path(imgrank.collection(split_sequence_key(key)[0]).image_root) for key in accepted
    }
    # One fastdup run for every sequence of this run; its rows come back in input order.
    features = compute_features(
        [image_id for frame in accepted.values() for image_id in frame["image_id"]],
        [roots[key] / path for key, frame in accepted.items() for path in frame["path"]],
    )
    frames, start = {}, 0
    for key, frame in accepted.items():
        frames[key] = features.iloc[start : start + len(frame)].reset_index(drop=True)
        start += len(frame)
    own = {}
    for key, frame in frames.items():
        failed = frame[frame["status"] != "ok"]
        log_some(
            context,
            [
                f"fastdup could not embed {row.image_id}: {row.error}"
                for row in failed.head(LOGGED_ROWS).itertuples()
            ],
            len(failed),
            f"images of {key} fastdup could not embed (see collection_images)",
        )
        own[key] = {
            "embedded": len(frame) - len(failed),
            "failed": len(failed),
            "failures": counts_table(failed["error"].value_counts().to_dict(), "error"),
        }
    return partitions_output(context, frames, own)
