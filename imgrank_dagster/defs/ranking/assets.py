"""The study's ranking, one asset per stage; every computation lives in imgrank_dagster.core.

Label-independent: cluster_assignments, similar_pairs, image_base_scores.
Label-dependent (re-run by the labels sensor): cluster_metrics, image_scores, labeling_priority.
"""

import dagster as dg
import pandas as pd

from imgrank_dagster.core import scoring, study
from imgrank_dagster.core.features import embedding_matrix
from imgrank_dagster.core.files import write_csv_atomically
from imgrank_dagster.core.plots import bar_png, curve_png
from imgrank_dagster.core.ranking_checks import ranking_problems
from imgrank_dagster.defs.metadata import frame_output, frame_table, png_markdown
from imgrank_dagster.defs.ranking.features import RANKING_GROUP
from imgrank_dagster.partitions import collection_partitions
from imgrank_dagster.resources import ImgrankConfig
from imgrank_dagster.resources.parquet_io_manager import COLUMNS_METADATA

RANKING_EXPORT_NAME = "all_score_after_rank.csv"  # the study's file name
# What the ranking needs from the feature matrix: everything but the embeddings.
FEATURE_CONTEXT = dg.AssetIn(
    "feature_matrix",
    metadata={COLUMNS_METADATA: ["image_id", "sequence_id", "path", "captured_at", "lat", "lng"]},
)


def _asset(description: str, **kwargs):
    return dg.asset(
        partitions_def=collection_partitions,
        group_name=RANKING_GROUP,
        kinds={"python", "parquet"},
        code_version="1",
        description=description,
        **kwargs,
    )


@_asset(
    "KMeans over the feature matrix; k fixed or chosen by elbow then silhouette. Per image: "
    "cluster, distance to its centroid, silhouette.",
)
def cluster_assignments(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig, feature_matrix: pd.DataFrame
) -> dg.Output[pd.DataFrame]:
    settings = imgrank.collection(context.partition_key).scoring
    frame, result = study.cluster(feature_matrix, embedding_matrix(feature_matrix), settings)
    sizes = frame["cluster"].value_counts().sort_index()
    metadata = {
        "k": result.k,
        "elbow_k": result.elbow_k if result.elbow_k is not None else -1,
        "silhouette_method": str(result.silhouette_method),
        "how_k_was_chosen": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes)),
        "cluster_sizes": png_markdown(
            bar_png(sizes.to_dict(), "Images per cluster", "cluster", "images")
        ),
    }
    if result.inertia_by_k:
        metadata["elbow_curve"] = png_markdown(
            curve_png(
                result.inertia_by_k,
                "Elbow: KMeans inertia per k",
                "inertia",
                chosen_k=result.k,
                marked_k=result.elbow_k,
                marked_label=f"elbow k = {result.elbow_k}",
            )
        )
    if result.silhouette_by_k:
        metadata["silhouette_curve"] = png_markdown(
            curve_png(
                result.silhouette_by_k,
                "Mean silhouette per k",
                "silhouette",
                chosen_k=result.k,
            )
        )
    return frame_output(frame, **metadata)


@_asset(
    "fastdup's similar pairs over the whole collection (similarity at or above the "
    "collection's threshold).",
)
def similar_pairs(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig, feature_matrix: pd.DataFrame
) -> dg.Output[pd.DataFrame]:
    settings = imgrank.collection(context.partition_key).scoring
    pairs = study.collection_similar_pairs(
        feature_matrix, embedding_matrix(feature_matrix), settings
    )
    return frame_output(pairs, threshold=settings.similarity_threshold)


@_asset(
    "Label-independent score components: uniqueness within the cluster, near-duplicate "
    "punishment, fastdup outlier distance, normalised blur and brightness.",
)
def image_base_scores(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    feature_matrix: pd.DataFrame,
    cluster_assignments: pd.DataFrame,
    similar_pairs: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    settings = imgrank.collection(context.partition_key).scoring
    base = study.base_scores(
        feature_matrix,
        embedding_matrix(feature_matrix),
        cluster_assignments,
        similar_pairs,
        settings,
    )
    punished = int((base["uniqueness_punishment"] < 1).sum())
    return frame_output(
        base,
        duplicate_groups=int(base.loc[base["duplicate_group"] >= 0, "duplicate_group"].nunique()),
        punished_images=punished,
        outliers=int((base["outlier_distance"] > 0).sum()),
    )


@_asset(
    "Per cluster: size, labelled count and fraction, priority group (1 = no labelled "
    "image ... 4 = well covered), mean silhouette, the image nearest the centroid.",
)
def cluster_metrics(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    cluster_assignments: pd.DataFrame,
    labeled_images: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    settings = imgrank.collection(context.partition_key).scoring
    metrics = scoring.cluster_metrics(
        cluster_assignments, set(labeled_images["image_id"]), settings
    )
    groups = metrics["priority_group"].value_counts().sort_index()
    return frame_output(
        metrics,
        clusters=len(metrics),
        clusters_without_labels=int((metrics["labelled_count"] == 0).sum()),
        cluster_table=frame_table(metrics, limit=100),
        priority_groups=png_markdown(
            bar_png(groups.to_dict(), "Clusters per priority group", "priority group", "clusters")
        ),
    )


@_asset(
    "Every score component for every accepted image (labelled ones too, for reference), the "
    "similarity-to-labelled penalty, and the weighted score.",
)
def image_scores(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    image_base_scores: pd.DataFrame,
    similar_pairs: pd.DataFrame,
    labeled_images: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    settings = imgrank.collection(context.partition_key).scoring
    scores = study.label_scores(
        image_base_scores, similar_pairs, set(labeled_images["image_id"]), settings
    )
    return frame_output(
        scores,
        labelled=int(scores["labelled"].sum()),
        similar_to_labelled=int((scores["similar_distance"] > 0).sum()),
        score_histogram=png_markdown(
            bar_png(
                scores["score"].round(1).value_counts().sort_index().to_dict(),
                "Scores (rounded to 0.1)",
                "score",
                "images",
            )
        ),
    )


RANKING_CHECKS = {
    "ranks_run_1_to_n": "Ranks run 1..N without gaps.",
    "every_unlabelled_image_once": "Every accepted unlabelled image appears exactly once.",
    "no_labelled_or_rejected_image": "No labelled or rejected image is ranked.",
    "all_scores_finite": "All scores are finite.",
}


@_asset(
    "The ranked 'label this first' list: accepted unlabelled images ordered by score region, "
    "cluster priority group and score, with a readable reason. Also exported as CSV.",
    ins={"feature_matrix": FEATURE_CONTEXT},
    check_specs=[
        dg.AssetCheckSpec(name, asset="labeling_priority", description=description)
        for name, description in RANKING_CHECKS.items()
    ],
)
def labeling_priority(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    image_scores: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    labeled_images: pd.DataFrame,
    feature_matrix: pd.DataFrame,
):
    collection = imgrank.collection(context.partition_key)
    ranking = scoring.rank_images(
        image_scores, cluster_metrics, collection.scoring, image_info=feature_matrix
    )
    problems = ranking_problems(
        ranking, set(feature_matrix["image_id"]), set(labeled_images["image_id"])
    )
    export = imgrank.exports_dir(collection.name) / RANKING_EXPORT_NAME
    if not any(problems.values()):
        # A ranking that breaks an invariant never replaces the spreadsheet people work from.
        write_csv_atomically(ranking, export)
    regions = ranking["region"].value_counts()
    yield frame_output(
        ranking,
        export=dg.MetadataValue.path(str(export)),
        ranked_images=len(ranking),
        regions=dg.MetadataValue.json({k: int(v) for k, v in regions.items()}),
        top_20=dg.MetadataValue.md(
            ranking.head(20)[["rank", "image_id", "score", "region", "priority_group", "reason"]]
            .round(3)
            .to_markdown(index=False)
        ),
    )
    for name, found in problems.items():
        yield dg.AssetCheckResult(
            check_name=name,
            passed=not found,
            metadata={"problems": dg.MetadataValue.json(found)} if found else {},
        )
