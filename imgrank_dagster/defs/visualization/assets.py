"""Seeing the ranking: a 2-D map of the embeddings, an HTML report and a FiftyOne dataset.

embedding_map is label-independent and lives in the ranking group, so every ranking run
computes it once. ranking_report and fiftyone_dataset (group "visualization") are downstream of
labeling_priority and outside the labels sensor's fast path: they are refreshed after a
ranking (from the UI, or `cli app`, which rebuilds whatever is older than the ranking).

Both return a small frame through the IO manager (the files written, the samples synced), so
they get a data version, lineage to the inputs they read, and a preview like every asset.
"""

import base64
import re
from pathlib import Path

import dagster as dg
import pandas as pd

from imgrank_dagster.core.embedding_map import embedding_map_frame
from imgrank_dagster.core.features import embedding_matrix
from imgrank_dagster.core.fiftyone_sync import (
    LABEL_NEXT_VIEW,
    LABELLED_TAG,
    MAP_BRAIN_KEY,
    NEAR_DUPLICATES_VIEW,
    sample_table,
    sync_dataset,
    use_database_dir,
)
from imgrank_dagster.core.report import ReportData, write_report
from imgrank_dagster.defs.metadata import frame_output
from imgrank_dagster.defs.ranking.features import RANKING_GROUP, columns_of
from imgrank_dagster.partitions import collection_partitions
from imgrank_dagster.resources import ImgrankConfig

VISUALIZATION_GROUP = "visualization"
REPORT_DIR = "report"
FIFTYONE_DIR = "fiftyone/db"  # under the data folder, unless FIFTYONE_DATABASE_DIR says else
CLUSTER_ASSIGNMENTS = dg.AssetKey("cluster_assignments")
EMBEDDING_MAP = dg.AssetKey("embedding_map")
# The clustering plots the Dagster UI shows, in the report's order.
CLUSTERING_PLOTS = {
    "elbow_curve": "Elbow: KMeans inertia per k",
    "silhouette_curve": "Mean silhouette per k",
    "cluster_sizes": "Images per cluster",
}
_PNG_IN_MARKDOWN = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


@dg.asset(
    partitions_def=collection_partitions,
    group_name=RANKING_GROUP,
    kinds={"python", "parquet", "scikitlearn"},
    code_version="1",
    ins={"feature_matrix": columns_of("feature_matrix", ["image_id", "embedding"])},
    description="A 2-D map of the embeddings (scikit-learn: PCA then t-SNE, PCA alone for "
    "large collections; seeded), in the unit square: image_id, x, y. Read by the report and "
    "the FiftyOne dataset.",
)
def embedding_map(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig, feature_matrix: pd.DataFrame
) -> dg.Output[pd.DataFrame]:
    seed = imgrank.collection(context.partition_key).scoring.seed
    frame, method = embedding_map_frame(
        feature_matrix["image_id"], embedding_matrix(feature_matrix), seed=seed
    )
    return frame_output(frame, method=method, images=len(frame), seed=seed)


def _latest_metadata(context: dg.AssetExecutionContext, asset: dg.AssetKey) -> dict:
    """The metadata of the asset's latest materialization of this partition ({} if none)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset, asset_partitions=[context.partition_key]), limit=1
    ).records
    return dict(records[0].asset_materialization.metadata) if records else {}


def _clustering_from_instance(
    context: dg.AssetExecutionContext,
) -> tuple[dict[str, bytes], list[str]]:
    """The clustering plots and notes that cluster_assignments recorded with its latest
    materialization of this partition: the k sweep is never recomputed."""
    metadata = _latest_metadata(context, CLUSTER_ASSIGNMENTS)
    plots = {}
    for key, caption in CLUSTERING_PLOTS.items():
        found = _PNG_IN_MARKDOWN.search(str(getattr(metadata.get(key), "value", "")))
        if found:
            plots[caption] = base64.b64decode(found.group(1))
    notes_markdown = str(getattr(metadata.get("how_k_was_chosen"), "value", ""))
    notes = [line[2:] for line in notes_markdown.splitlines() if line.startswith("- ")]
    return plots, notes


@dg.asset(
    partitions_def=collection_partitions,
    group_name=VISUALIZATION_GROUP,
    # Views follow every new ranking (full or after new labels) on their own.
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"python", "html"},
    code_version="1",
    ins={
        "feature_matrix": columns_of("feature_matrix", ["image_id", "path"]),
        "collection_images": columns_of(
            "collection_images", ["image_id", "path", "status", "reason"]
        ),
    },
    description="A self-contained HTML report in data/exports/<collection>/report/ (open "
    "index.html from disk): top 100 with scores and reasons, a grid per cluster, the elbow and "
    "silhouette plots, near-duplicate groups, rejected images, a map of the embeddings. One "
    "row per file written.",
)
def ranking_report(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    labeling_priority: pd.DataFrame,
    image_scores: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    embedding_map: pd.DataFrame,
    feature_matrix: pd.DataFrame,
    collection_images: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    collection = imgrank.collection(context.partition_key)
    plots, notes = _clustering_from_instance(context)
    method = _latest_metadata(context, EMBEDDING_MAP).get("method")
    data = ReportData(
        collection=collection.name,
        image_root=collection.image_root,
        ranking=labeling_priority,
        scores=image_scores,
        cluster_metrics=cluster_metrics,
        images=feature_matrix,
        # Left out of the ranking: rejected at ingestion, or fastdup could not embed them.
        rejected=collection_images.loc[
            collection_images["status"] != "ok", ["image_id", "path", "reason"]
        ].reset_index(drop=True),
        embedding_map=embedding_map,
        plots=plots,
        clustering_notes=notes,
        map_method=str(method.value) if method is not None else "",
        seed=collection.scoring.seed,
    )
    report_dir = imgrank.exports_dir(collection.name) / REPORT_DIR
    files = write_report(data, report_dir)
    index = report_dir / "index.html"
    return frame_output(
        files,
        report=dg.MetadataValue.path(str(index)),
        open_in_browser=dg.MetadataValue.url(index.as_uri()),
        thumbnails=int((files["kind"] == "thumbnail").sum()),
        total_bytes=int(files["bytes"].sum()),
        rejected_images=len(data.rejected),
    )


@dg.asset(
    partitions_def=collection_partitions,
    group_name=VISUALIZATION_GROUP,
    # Views follow every new ranking (full or after new labels) on their own.
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"python", "fiftyone"},
    code_version="1",
    ins={
        "feature_matrix": columns_of(
            "feature_matrix",
            [
                "image_id",
                "path",
                "sequence_id",
                "sequence_index",
                "captured_at",
                "lat",
                "lng",
                "width",
                "height",
                "embedding",
            ],
        )
    },
    description="A persistent FiftyOne dataset named after the collection, updated in place: "
    "one sample per accepted image with rank, score and every component, region, cluster, "
    "priority group, sequence, capture time, GPS (location), embedding, tag 'labelled'; the "
    "embedding map as a visualization; saved views 'label next' and 'near-duplicates'. "
    "`make app` opens it. One row per sample.",
)
def fiftyone_dataset(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    labeling_priority: pd.DataFrame,
    image_scores: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    embedding_map: pd.DataFrame,
    feature_matrix: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    collection = imgrank.collection(context.partition_key)
    use_database_dir(Path(imgrank.data_dir) / FIFTYONE_DIR)
    table = sample_table(
        feature_matrix,
        image_scores,
        labeling_priority,
        cluster_metrics,
        collection.image_root,
        embedding_map,
    )
    samples = sync_dataset(collection.name, table)
    return frame_output(
        samples,
        dataset=collection.name,
        samples=len(samples),
        labelled=int(table["labelled"].sum()),
        with_location=int(table["lat"].notna().sum()),
        saved_views=dg.MetadataValue.json([LABEL_NEXT_VIEW, NEAR_DUPLICATES_VIEW]),
        visualization_brain_key=MAP_BRAIN_KEY,
        labelled_tag=LABELLED_TAG,
        open_with=dg.MetadataValue.md(
            f"`python -m imgrank_dagster.cli app --collection {collection.name}` "
            "(`make app` for the demo)"
        ),
    )
