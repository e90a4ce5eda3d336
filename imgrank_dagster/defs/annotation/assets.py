"""The next batch of a collection goes to its annotation tool (Label Studio, or a CVAT file)."""

import dagster as dg
from pydantic import Field

from imgrank_dagster.lib.assets import collection_asset
from imgrank_dagster.lib.frames import Frame
from imgrank_dagster.lib.io_manager import PartitionedParquetIOManager, columns_of
from imgrank_dagster.lib.metadata import counts_table, frame_output, frame_table
from imgrank_dagster.lib.names import ANNOTATION_BATCH, ANNOTATION_GROUP
from imgrank_dagster.lib.resources import ImgrankConfig

# What a task shows annotators (core.annotation.batch.RANKING_COLUMNS; not imported here:
# loading the definitions stays free of pandas).
RANKING_INPUT_COLUMNS = ["image_id", "path", "rank", "reason", "cluster"]


class AnnotationBatchConfig(dg.Config):
    """Overrides of the collection's annotation settings for one send."""

    count: int | None = Field(
        default=None,
        ge=0,
        description="How many images from the top of the ranking should be in the project "
        "(default: the collection's annotation.batch_size).",
    )
    per_cluster: int | None = Field(
        default=None,
        ge=1,
        description="Also this many of every cluster without a labelled image (default: the "
        "collection's annotation.per_cluster).",
    )


@collection_asset(
    ANNOTATION_GROUP,
    "What was sent to the collection's annotation tool: every image ever sent, with the batch "
    "it went in, its rank, reason and cluster then, its task and its status now. Materializing "
    "it sends the next batch: the top of the current ranking (and, if set, the best images of "
    "each cluster without labels) that is not in the Label Studio project yet, or a CVAT task "
    "file. Sending twice sends nothing new; after a re-rank only new picks go.",
    kinds={"python", "parquet", "labelstudio"},
    ins={
        "labeling_priority": columns_of("labeling_priority", RANKING_INPUT_COLUMNS),
        "labeled_images": columns_of("labeled_images", ["image_id"]),
        "cluster_metrics": columns_of("cluster_metrics", ["cluster", "labelled_count"]),
        "collection_images": columns_of("collection_images", ["image_id", "width", "height"]),
    },
)
def annotation_batch(
    context: dg.AssetExecutionContext,
    config: AnnotationBatchConfig,
    imgrank: ImgrankConfig,
    io_manager: dg.ResourceParam[PartitionedParquetIOManager],
    labeling_priority: Frame,
    labeled_images: Frame,
    cluster_metrics: Frame,
    collection_images: Frame,
) -> dg.Output[Frame]:
    from datetime import UTC, datetime

    from imgrank_dagster.core.annotation import send
    from imgrank_dagster.core.annotation.client import (
        LabelStudioClient,
        LabelStudioConfigError,
        LabelStudioError,
        LabelStudioSettings,
    )

    name = context.partition_key
    collection = imgrank.collection(name)
    previous = io_manager.read_partitions(ANNOTATION_BATCH.to_user_string(), [name]).get(name)
    unlabelled_clusters = cluster_metrics.loc[cluster_metrics["labelled_count"] == 0, "cluster"]
    common = dict(
        collection=collection,
        ranking=labeling_priority,
        labelled=set(labeled_images["image_id"]),
        clusters_without_labels=set(unlabelled_clusters.astype(int)),
        previous=previous,
        now=datetime.now(UTC),
        batch_size=config.count,
        per_cluster=config.per_cluster,
    )
    try:
        if collection.annotation is not None and collection.annotation.tool == "cvat":
            result = send.send_to_cvat(
                imgrank.exports_dir(name), image_sizes=collection_images, **common
            )
        else:
            settings = LabelStudioSettings.from_env()
            with LabelStudioClient.from_settings(settings) as client:
                result = send.send_to_label_studio(client, settings, **common)
    except (send.SendError, LabelStudioConfigError, LabelStudioError, ValueError) as error:
        raise dg.Failure(description=f"{name}: {error}") from None
    for note in result.notes:
        context.log.warning(note)
    sent = len(result.sent)
    if sent:
        context.log.info(f"sent {sent} image(s) as batch {result.batch} to {result.target}")
    else:
        context.log.info(f"nothing new to send: the batch is in {result.target} already")
    preview = result.sent if sent else result.record.tail(0)
    return frame_output(
        result.record,
        tool=collection.annotation.tool if collection.annotation else "",
        target=dg.MetadataValue.url(result.target)
        if result.target.startswith("http")
        else dg.MetadataValue.path(result.target),
        sent_now=sent,
        batch=result.batch or 0,
        images_sent_ever=len(result.record),
        status=counts_table(result.status_counts, "status", "images"),
        sent_now_preview=frame_table(
            preview[["rank", "image_id", "cluster", "picked_as", "reason", "task_id"]]
        ),
        notes=dg.MetadataValue.json(result.notes),
    )
