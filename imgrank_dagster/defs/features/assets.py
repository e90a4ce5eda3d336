"""A collection's image catalog and feature matrix: one file each per collection, built from
the per-sequence ingestion assets of its own sequences."""

import dagster as dg

from imgrank_dagster.core.config.keys import sequence_keys_of, split_sequence_key
from imgrank_dagster.lib.assets import collection_asset
from imgrank_dagster.lib.frames import Frame
from imgrank_dagster.lib.io_manager import columns_of, own_sequences
from imgrank_dagster.lib.metadata import counts_table, frame_output, frame_table
from imgrank_dagster.lib.names import FEATURES_GROUP, IMAGE_FEATURES
from imgrank_dagster.lib.partitions import sequence_partitions

# What the catalog keeps of raw_image_sequences for the feature matrix.
RAW_KEEP = ["image_id", "sequence_id", "sequence_index", "path", "captured_at", "lat", "lng"]
# What feature_matrix reads of image_features through the IO manager: all but the embeddings,
# which it copies straight from each sequence's file into the one matrix it writes.
FEATURE_KEEP = [
    *["image_id", "status", "error", "blur", "brightness", "contrast"],
    *["min_value", "max_value", "std", "width", "height"],
]
EMBEDDING_READERS = 8


def concat_frames(frames: dict[str, Frame]) -> Frame:
    """The frames in partition-key order as one frame (empty ones left out)."""
    import pandas as pd

    non_empty = [frame for _, frame in sorted(frames.items()) if len(frame)]
    if not non_empty:
        return next(iter(frames.values())).iloc[0:0] if frames else pd.DataFrame()
    return pd.concat(non_empty, ignore_index=True)


@collection_asset(
    FEATURES_GROUP,
    "Every image of the collection, ranked or not: its sequence, path, capture data, source "
    "columns and status (ok, rejected at ingestion, or not embedded) with the reason. One "
    "file, so label matching and the views never read one file per sequence.",
    ins={
        "raw_image_sequences": own_sequences(),
        "image_features": own_sequences(["image_id", "status", "error"]),
    },
)
def collection_images(
    context: dg.AssetExecutionContext,
    raw_image_sequences: dict[str, Frame],
    image_features: dict[str, Frame],
) -> dg.Output[Frame]:
    import pandas as pd

    from imgrank_dagster.core.features.catalog import image_catalog

    if not raw_image_sequences:
        raise dg.Failure(
            f"collection {context.partition_key!r} has no ingested sequence yet: materialize "
            "raw_image_sequences and image_features for its sequences first"
        )
    expected = sequence_keys_of(
        sorted(context.instance.get_dynamic_partitions(sequence_partitions.name)),
        context.partition_key,
    )
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


@collection_asset(
    FEATURES_GROUP,
    "Every accepted, embedded image of the collection with its embedding, statistics, "
    "sequence, capture time and GPS: the input of clustering and scoring. The embeddings are "
    "one contiguous float32 matrix (a fixed-size list column), read without a copy.",
    code_version="2",  # 2: embeddings as one fixed-size list column over a contiguous matrix
    ins={
        "collection_images": columns_of("collection_images", [*RAW_KEEP, "status"]),
        "image_features": own_sequences(FEATURE_KEEP),
    },
    required_resource_keys={"io_manager"},
)
def feature_matrix(
    context: dg.AssetExecutionContext,
    collection_images: Frame,
    image_features: dict[str, Frame],
) -> dg.Output[Frame]:
    import numpy as np
    import pandas as pd

    from imgrank_dagster.core.features.embeddings import embedding_column

    accepted = collection_images.loc[collection_images["status"] == "ok", RAW_KEEP]
    if accepted.empty:
        raise dg.Failure(
            f"collection {context.partition_key!r} has no accepted, embedded image: see "
            "collection_images for each image's status and reason"
        )
    pieces = [
        frame.assign(_partition=key, _position=np.arange(len(frame)))
        for key, frame in sorted(image_features.items())
        if len(frame)
    ]
    features = pd.concat(pieces, ignore_index=True)
    embedded = features[features["status"] == "ok"].drop(columns=["status", "error"])
    # width and height come from fastdup's statistics (the source's agree).
    matrix = accepted.merge(embedded, on="image_id", how="inner", validate="one_to_one")
    if matrix.empty:
        raise dg.Failure(
            f"collection {context.partition_key!r}: fastdup embedded none of its accepted "
            "images: see image_features for each image's error"
        )
    matrix = matrix.sort_values(["sequence_id", "sequence_index"], ignore_index=True)
    embeddings = _gather_embeddings(context.resources.io_manager, matrix)
    matrix = matrix.drop(columns=["_partition", "_position"])
    matrix.insert(RAW_KEEP.index("lng") + 1, "embedding", embedding_column(embeddings))
    return frame_output(
        matrix,
        images=len(matrix),
        embedding_dim=embeddings.shape[1],
        embedding_storage=f"fixed_size_list<float32>[{embeddings.shape[1]}]",
    )


def _gather_embeddings(io_manager, matrix: Frame):
    """The embedding of every row of `matrix` (columns _partition, _position: where the row
    sits in image_features), copied file by file into one preallocated float32 matrix: the
    step never holds the sequences' embeddings and the collection's matrix at once."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from imgrank_dagster.lib.parquet import read_matrix_rows

    positions = matrix["_position"].to_numpy()
    groups = list(matrix.groupby("_partition", sort=True).indices.items())

    def read(group):
        key, rows = group
        path = io_manager.partition_path(IMAGE_FEATURES.to_user_string(), key)
        return rows, read_matrix_rows(path, "embedding", positions[rows])

    first_rows, first = read(groups[0])
    embeddings = np.empty((len(matrix), first.shape[1]), dtype=np.float32)
    embeddings[first_rows] = first
    with ThreadPoolExecutor(max_workers=EMBEDDING_READERS) as pool:
        for rows, block in pool.map(read, groups[1:]):
            embeddings[rows] = block
    return embeddings
