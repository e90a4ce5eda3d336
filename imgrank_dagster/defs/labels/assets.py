"""The labelled set of a collection, read from its label files."""

import dagster as dg
import pandas as pd

from imgrank_dagster.core.labels import labelled_set_hash, load_labels
from imgrank_dagster.defs.metadata import frame_output
from imgrank_dagster.defs.ranking.features import RANKING_GROUP, concat_frames, own_sequences
from imgrank_dagster.partitions import collection_partitions
from imgrank_dagster.resources import ImgrankConfig


@dg.asset(
    partitions_def=collection_partitions,
    group_name=RANKING_GROUP,
    kinds={"python", "parquet"},
    code_version="1",
    ins={"raw_image_sequences": own_sequences(columns=["image_id", "path"])},
    description="Labelled image ids from the collection's label files (CSV/TXT, COCO, Label "
    "Studio, CVAT). Its data version is a hash of the labelled set.",
)
def labeled_images(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    raw_image_sequences: dict[str, pd.DataFrame],
) -> dg.Output[pd.DataFrame]:
    collection = imgrank.collection(context.partition_key)
    # Rejected images count too: a label on a rejected image is known, not "unknown".
    images = concat_frames(raw_image_sequences)[["image_id", "path"]]
    match = load_labels(collection.labels, images)
    summary = match.summary()
    if match.unknown:
        context.log.warning(f"{len(match.unknown)} label names match no image: {match.unknown[:5]}")
    if match.ambiguous:
        context.log.warning(f"{len(match.ambiguous)} label names match several images")
    return frame_output(
        match.labelled,
        data_version=labelled_set_hash(match.image_ids),
        labels_path=dg.MetadataValue.path(str(collection.labels)),
        labelled=len(match.labelled),
        unknown_names=len(match.unknown),
        ambiguous_names=len(match.ambiguous),
        label_summary=dg.MetadataValue.json(summary),
    )
