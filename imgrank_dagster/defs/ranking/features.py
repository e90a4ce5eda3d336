"""The collection's feature matrix: every accepted, embedded image of its sequences."""

import dagster as dg
import pandas as pd

from imgrank_dagster.core.collections import split_sequence_key
from imgrank_dagster.defs.metadata import frame_output, frame_table
from imgrank_dagster.partitions import collection_partitions, sequence_partitions
from imgrank_dagster.resources.parquet_io_manager import COLUMNS_METADATA, OWN_SEQUENCES_ONLY

RANKING_GROUP = "ranking"


def own_sequences(columns: list[str] | None = None) -> dg.AssetIn:
    """A collection partition's input: the sequence partitions of its own collection only."""
    metadata: dict[str, object] = {OWN_SEQUENCES_ONLY: True}
    if columns is not None:
        metadata[COLUMNS_METADATA] = columns
    return dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata=metadata)


OWN_SEQUENCES = own_sequences()
RAW_KEEP = ["image_id", "sequence_id", "sequence_index", "path", "captured_at", "lat", "lng"]


def own_sequence_keys(context: dg.AssetExecutionContext) -> list[str]:
    prefix = f"{context.partition_key}."
    keys = context.instance.get_dynamic_partitions(sequence_partitions.name)
    return sorted(key for key in keys if key.startswith(prefix))


def concat_frames(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    non_empty = [frame for _, frame in sorted(frames.items()) if len(frame)]
    if not non_empty:
        return next(iter(frames.values())).iloc[0:0] if frames else pd.DataFrame()
    return pd.concat(non_empty, ignore_index=True)


@dg.asset(
    partitions_def=collection_partitions,
    group_name=RANKING_GROUP,
    kinds={"python", "parquet"},
    code_version="1",
    ins={"raw_image_sequences": OWN_SEQUENCES, "image_features": OWN_SEQUENCES},
    description="Every accepted image of the collection with its embedding, statistics, "
    "sequence, capture time and GPS: the input of clustering and scoring.",
)
def feature_matrix(
    context: dg.AssetExecutionContext,
    raw_image_sequences: dict[str, pd.DataFrame],
    image_features: dict[str, pd.DataFrame],
) -> dg.Output[pd.DataFrame]:
    expected = own_sequence_keys(context)
    missing = sorted(set(expected) - (set(raw_image_sequences) & set(image_features)))
    if not raw_image_sequences or not image_features:
        raise dg.Failure(
            f"collection {context.partition_key!r} has no ingested sequence yet: materialize "
            "raw_image_sequences and image_features for its sequences first"
        )
    raw = concat_frames(raw_image_sequences)
    features = concat_frames(image_features)
    embedded = features[features["status"] == "ok"].drop(columns=["status", "error"])
    # width/height from fastdup and from the file agree; keep the file's.
    matrix = raw.loc[raw["status"] == "ok", RAW_KEEP].merge(embedded, on="image_id", how="inner")
    matrix = matrix.sort_values(["sequence_id", "sequence_index"], ignore_index=True)
    return frame_output(
        matrix,
        sequences=len(raw_image_sequences),
        missing_sequences=frame_table(
            pd.DataFrame({"sequence": [split_sequence_key(k)[1] for k in missing]})
        ),
        images_seen=len(raw),
        rejected_or_failed=len(raw) - len(matrix),
        embedding_dim=len(matrix["embedding"].iloc[0]) if len(matrix) else 0,
    )
