"""The collection's image catalog and feature matrix: one file each per collection."""

import dagster as dg
import pandas as pd

from imgrank_dagster.core.collections import split_sequence_key
from imgrank_dagster.core.features import image_catalog
from imgrank_dagster.defs.metadata import counts_table, frame_output, frame_table
from imgrank_dagster.partitions import collection_partitions, sequence_partitions
from imgrank_dagster.resources.parquet_io_manager import COLUMNS_METADATA, OWN_SEQUENCES_ONLY

RANKING_GROUP = "ranking"


def own_sequences(columns: list[str] | None = None) -> dg.AssetIn:
    """A collection partition's input: the sequence partitions of its own collection only."""
    metadata: dict[str, object] = {OWN_SEQUENCES_ONLY: True}
    if columns is not None:
        metadata[COLUMNS_METADATA] = columns
    return dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata=metadata)


def columns_of(asset: str, columns: list[str]) -> dg.AssetIn:
    """An input that reads only these columns of an asset's file."""
    return dg.AssetIn(asset, metadata={COLUMNS_METADATA: columns})


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


def ranking_asset(description: str, code_version: str = "1", **kwargs):
    """A collection-partitioned asset of the ranking group."""
    return dg.asset(
        partitions_def=collection_partitions,
        group_name=RANKING_GROUP,
        kinds={"python", "parquet"},
        code_version=code_version,
        description=description,
        **kwargs,
    )


@ranking_asset(
    "Every image of the collection, ranked or not: its sequence, path, capture data, source "
    "columns and status (ok, rejected at ingestion, or not embedded) with the reason. One file, "
    "so label matching and the views never read one file per sequence.",
    ins={
        "raw_image_sequences": own_sequences(),
        "image_features": own_sequences(["image_id", "status", "error"]),
    },
)
def collection_images(
    context: dg.AssetExecutionContext,
    raw_image_sequences: dict[str, pd.DataFrame],
    image_features: dict[str, pd.DataFrame],
) -> dg.Output[pd.DataFrame]:
    if not raw_image_sequences:
        raise dg.Failure(
            f"collection {context.partition_key!r} has no ingested sequence yet: materialize "
            "raw_image_sequences and image_features for its sequences first"
        )
    expected = own_sequence_keys(context)
    missing = sorted(set(expected) - (set(raw_image_sequences) & set(image_features)))
    catalog = image_catalog(concat_frames(raw_image_sequences), concat_frames(image_features))
    left_out = catalog.loc[catalog["status"] != "ok", "reason"].value_counts()
    return frame_output(
        catalog,
        sequences=len(raw_image_sequences),
        missing_sequences=frame_table(
            pd.DataFrame({"sequence": [split_sequence_key(k)[1] for k in missing]})
        ),
        images=len(catalog),
        statuses=counts_table(catalog["status"].value_counts().to_dict(), "status", "images"),
        reasons_left_out=counts_table(left_out.head(20).to_dict(), "reason", "images"),
    )


@ranking_asset(
    "Every accepted, embedded image of the collection with its embedding, statistics, "
    "sequence, capture time and GPS: the input of clustering and scoring.",
    ins={
        "collection_images": columns_of("collection_images", [*RAW_KEEP, "status"]),
        "image_features": own_sequences(),
    },
)
def feature_matrix(
    context: dg.AssetExecutionContext,
    collection_images: pd.DataFrame,
    image_features: dict[str, pd.DataFrame],
) -> dg.Output[pd.DataFrame]:
    accepted = collection_images.loc[collection_images["status"] == "ok", RAW_KEEP]
    if accepted.empty:
        raise dg.Failure(
            f"collection {context.partition_key!r} has no accepted, embedded image: see "
            "collection_images for each image's status and reason"
        )
    features = concat_frames(image_features)
    embedded = features[features["status"] == "ok"].drop(columns=["status", "error"])
    # width and height come from fastdup's statistics (the source's agree).
    matrix = accepted.merge(embedded, on="image_id", how="inner", validate="one_to_one")
    matrix = matrix.sort_values(["sequence_id", "sequence_index"], ignore_index=True)
    return frame_output(
        matrix,
        images=len(matrix),
        embedding_dim=len(matrix["embedding"].iloc[0]),
    )
