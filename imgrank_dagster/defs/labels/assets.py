"""The labelled set of a collection, read from its label files."""

import dagster as dg

from imgrank_dagster.lib.assets import collection_asset
from imgrank_dagster.lib.frames import Frame
from imgrank_dagster.lib.io_manager import columns_of
from imgrank_dagster.lib.metadata import counts_table, frame_output
from imgrank_dagster.lib.names import LABELS_GROUP
from imgrank_dagster.lib.resources import ImgrankConfig

# Every image, rejected ones too: a label on a rejected image is known, not "unknown".
LABEL_MATCHING_COLUMNS = ["image_id", "path"]


@collection_asset(
    LABELS_GROUP,
    "Labelled image ids and their classes from the collection's label files (CSV/TXT, COCO, "
    "Label Studio, CVAT). Its data version is a hash of the labelled set and its classes.",
    code_version="2",  # 2: the class columns
    ins={"collection_images": columns_of("collection_images", LABEL_MATCHING_COLUMNS)},
)
def labeled_images(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    collection_images: Frame,
) -> dg.Output[Frame]:
    from imgrank_dagster.core.labels import labelled_set_hash, load_labels

    collection = imgrank.collection(context.partition_key)
    match = load_labels(collection.labels, collection_images)
    summary = match.summary()
    if match.unknown:
        context.log.warning(f"{len(match.unknown)} label names match no image: {match.unknown[:5]}")
    if match.ambiguous:
        context.log.warning(f"{len(match.ambiguous)} label names match several images")
    if match.class_conflicts:
        context.log.warning(
            f"{len(match.class_conflicts)} images get different classes from different label "
            f"entries (the first file's are kept): {list(match.class_conflicts)[:5]}"
        )
    return frame_output(
        match.labelled,
        data_version=labelled_set_hash(match.image_ids, match.image_classes),
        labels_path=dg.MetadataValue.path(str(collection.labels)),
        labelled=len(match.labelled),
        with_class=summary["with_class"],
        unknown_names=len(match.unknown),
        ambiguous_names=len(match.ambiguous),
        classes=counts_table(summary["classes"], "class", "images"),
        label_summary=dg.MetadataValue.json(summary),
    )
