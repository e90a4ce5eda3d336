"""The labelled set of a collection, read from its label files."""

import dagster as dg

from imgrank_dagster.lib.assets import collection_asset
from imgrank_dagster.lib.frames import Frame
from imgrank_dagster.lib.io_manager import columns_of
from imgrank_dagster.lib.metadata import frame_output
from imgrank_dagster.lib.names import LABELS_GROUP
from imgrank_dagster.lib.resources import ImgrankConfig

# Every image, rejected ones too: a label on a rejected image is known, not "unknown".
LABEL_MATCHING_COLUMNS = ["image_id", "path"]


@collection_asset(
    LABELS_GROUP,
    "Labelled image ids from the collection's label files (CSV/TXT, COCO, Label Studio, CVAT). "
    "Its data version is a hash of the labelled set.",
    ins={"collection_images": columns_of("collection_images", LABEL_MATCHING_COLUMNS)},
)
def labeled_images(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    collection_images: Frame,
) -> dg.Output[Frame]:
    from imgrank_dagster.core.labels import labelled_set_hash, load_labels
    from imgrank_dagster.core.labels.matching import short_name

    collection = imgrank.collection(context.partition_key)
    match = load_labels(collection.labels, collection_images)
    summary = match.summary()
    if match.unknown:
        examples = [short_name(name) for name in match.unknown[:5]]
        context.log.warning(f"{len(match.unknown)} label names match no image: {examples}")
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
