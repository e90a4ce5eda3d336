"""Seeing the ranking: a 2-D map of the embeddings, an HTML report and a FiftyOne dataset.

The views follow every new ranking (full or after new labels) on their own (automation:
`follows_its_inputs`), outside the labels sensor's fast path. Each returns a small frame
through the IO manager (the map's points, the files written, the samples synced), so it gets a
data version, lineage to the inputs it read, and a preview like every asset.
"""

import dagster as dg

from imgrank_dagster.lib.assets import collection_asset
from imgrank_dagster.lib.frames import Frame
from imgrank_dagster.lib.io_manager import columns_of
from imgrank_dagster.lib.metadata import frame_output
from imgrank_dagster.lib.names import REPORT_DIR, REPORT_INDEX, VIEWS_GROUP
from imgrank_dagster.lib.priority import run_in_background
from imgrank_dagster.lib.resources import ImgrankConfig


def follows_its_inputs() -> dg.AutomationCondition:
    """Dagster's eager condition, except that an input updated while a refresh of this view
    was running is not forgotten when that refresh finishes.

    `eager()` forgets a parent update once the asset is requested *or updated* after it: a
    ranking that lands while the previous refresh is finishing is dropped when that refresh
    completes, and the view shows the older ranking until something else changes. Here only a
    new request (made once the view and its inputs are no longer in progress) forgets it.
    """
    update = dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()
    handled = dg.AutomationCondition.newly_requested() | dg.AutomationCondition.initial_evaluation()
    return (
        dg.AutomationCondition.in_latest_time_window()
        & update.since(handled)
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("eager, remembering updates that land during a refresh")


@collection_asset(
    VIEWS_GROUP,
    code_version="2",  # 2: the method travels with the file (attrs["method"])
    kinds={"python", "parquet", "scikitlearn"},
    # Views follow every new ranking (full or after new labels) on their own.
    automation_condition=follows_its_inputs(),
    ins={"feature_matrix": columns_of("feature_matrix", ["image_id", "embedding"])},
    description="A 2-D map of the embeddings (scikit-learn: PCA then t-SNE, PCA alone for "
    "large collections; seeded), in the unit square: image_id, x, y; attrs['method'] says "
    "which. Read by the report and the FiftyOne dataset.",
)
def embedding_map(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig, feature_matrix: Frame
) -> dg.Output[Frame]:
    run_in_background(context)  # never slows a label change (lib.priority)
    from imgrank_dagster.core.features.embeddings import embedding_matrix
    from imgrank_dagster.core.views.embedding_map import embedding_map_frame

    seed = imgrank.collection(context.partition_key).scoring.seed
    frame, method = embedding_map_frame(
        feature_matrix["image_id"], embedding_matrix(feature_matrix), seed=seed
    )
    frame.attrs["method"] = method
    return frame_output(frame, method=method, images=len(frame), seed=seed)


@collection_asset(
    VIEWS_GROUP,
    code_version="2",  # 2: the clustering plots and the map method come from the data
    kinds={"python", "html"},
    # Views follow every new ranking (full or after new labels) on their own.
    automation_condition=follows_its_inputs(),
    ins={
        "cluster_assignments": columns_of("cluster_assignments", ["cluster"], attrs=True),
        "embedding_map": columns_of("embedding_map", ["image_id", "x", "y"], attrs=True),
        "feature_matrix": columns_of("feature_matrix", ["image_id", "path"]),
        "collection_images": columns_of(
            "collection_images", ["image_id", "path", "status", "reason"]
        ),
        "focus_weights": columns_of(
            "focus_weights", ["image_id", "focus_example", "focus_similarity"]
        ),
    },
    description="A self-contained HTML report in data/exports/<collection>/report/ (open "
    "index.html from disk): top 100 with scores and reasons, a grid per cluster, the elbow and "
    "silhouette plots, near-duplicate groups, rejected images, a map of the embeddings, and "
    "with a focus the nearest unlabelled images of each focus example. One row per file "
    "written.",
)
def ranking_report(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    labeling_priority: Frame,
    image_scores: Frame,
    cluster_metrics: Frame,
    cluster_assignments: Frame,
    embedding_map: Frame,
    feature_matrix: Frame,
    collection_images: Frame,
    focus_weights: Frame,
) -> dg.Output[Frame]:
    run_in_background(context)
    from imgrank_dagster.core.views.plots import clustering_plots
    from imgrank_dagster.core.views.report import ReportData, write_report

    collection = imgrank.collection(context.partition_key)
    diagnostics = cluster_assignments.attrs.get("clustering", {})
    sizes = cluster_assignments["cluster"].value_counts().to_dict()
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
        plots=clustering_plots(diagnostics, sizes),
        clustering_notes=diagnostics.get("notes", []),
        map_method=str(embedding_map.attrs.get("method", "")),
        seed=collection.scoring.seed,
        focus=focus_weights if collection.focus is not None else None,
    )
    report_dir = imgrank.exports_dir(collection.name) / REPORT_DIR
    files = write_report(data, report_dir)
    index = report_dir / REPORT_INDEX
    return frame_output(
        files,
        report=dg.MetadataValue.path(str(index)),
        open_in_browser=dg.MetadataValue.url(index.as_uri()),
        thumbnails=int((files["kind"] == "thumbnail").sum()),
        total_bytes=int(files["bytes"].sum()),
        rejected_images=len(data.rejected),
    )


@collection_asset(
    VIEWS_GROUP,
    code_version="1",
    kinds={"python", "fiftyone"},
    # Views follow every new ranking (full or after new labels) on their own.
    automation_condition=follows_its_inputs(),
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
    labeling_priority: Frame,
    image_scores: Frame,
    cluster_metrics: Frame,
    embedding_map: Frame,
    feature_matrix: Frame,
) -> dg.Output[Frame]:
    run_in_background(context)
    from imgrank_dagster.core.views.fiftyone_dataset import (
        LABEL_NEXT_VIEW,
        LABELLED_TAG,
        MAP_BRAIN_KEY,
        NEAR_DUPLICATES_VIEW,
        sample_table,
        sync_dataset,
        use_database_dir,
    )

    collection = imgrank.collection(context.partition_key)
    use_database_dir(imgrank.fiftyone_database_dir)
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
