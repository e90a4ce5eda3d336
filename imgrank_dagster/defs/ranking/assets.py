"""The study's ranking, one asset per stage; every computation lives in imgrank_dagster.core.

Label-independent: cluster_assignments, similar_pairs, image_base_scores.
Label-dependent (re-run by the labels sensor): cluster_metrics, image_scores, labeling_priority.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from imgrank_dagster.core import scoring, strategies, study
from imgrank_dagster.core.features import embedding_matrix
from imgrank_dagster.core.files import write_csv_atomically
from imgrank_dagster.core.neighbours import build_neighbour_graph
from imgrank_dagster.core.plots import bar_png, curve_png
from imgrank_dagster.core.ranking_checks import ranking_problems
from imgrank_dagster.core.report import thumbnail_data_uri
from imgrank_dagster.defs.metadata import frame_output, frame_table, png_markdown
from imgrank_dagster.defs.ranking.features import columns_of, ranking_asset
from imgrank_dagster.resources import ImgrankConfig

RANKING_EXPORT_NAME = "all_score_after_rank.csv"  # the study's file name
TOP_THUMBNAIL_PX = 64  # inline JPEGs in the top-20 preview: about 3 KB each
# What the ranking needs from the feature matrix: everything but the embeddings.
FEATURE_CONTEXT = columns_of(
    "feature_matrix",
    [
        *["image_id", "sequence_id", "path", "captured_at", "lat", "lng"],
        *["blur", "brightness", "min_value", "max_value"],
    ],
)

# What a re-rank reads of the graph: positions, not the ids kept for people.
NEIGHBOUR_GRAPH_COLUMNS = ["image_id", "neighbour_rows", "distances", "content_distances", "method"]


@ranking_asset(
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


@ranking_asset(
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


@ranking_asset(
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


@ranking_asset(
    "The k nearest neighbours of every image (cosine distance of the fastdup features; frames "
    "of one sequence close in time and space count as near): built once per collection, "
    "reused by every re-rank of the coverage strategy.",
    code_version="2",  # 2: neighbour_rows, so a re-rank reads positions instead of ids
)
def neighbour_graph(feature_matrix: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    graph = build_neighbour_graph(
        embedding_matrix(feature_matrix),
        image_ids=feature_matrix["image_id"].tolist(),
        places=feature_matrix,
    )
    return frame_output(graph.to_frame(), k=graph.k, method=graph.method)


@ranking_asset(
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
        # Counts, not a plot: label-dependent steps stay fast (no matplotlib on the hot path).
        clusters_per_priority_group=dg.MetadataValue.json(
            {str(group): int(count) for group, count in groups.items()}
        ),
    )


@ranking_asset(
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
        score_quantiles=dg.MetadataValue.json(
            {
                f"{q:.0%}": round(float(v), 4)
                for q, v in scores["score"].quantile([0, 0.1, 0.5, 0.9, 1]).items()
            }
        ),
    )


def _top_with_thumbnails(ranking: pd.DataFrame, image_root: Path, count: int = 20) -> str:
    """The top of the ranking as markdown, each row with a small inline thumbnail."""
    top = ranking.head(count)[["rank", "image_id", "score", "region", "priority_group", "reason"]]
    uris = [
        thumbnail_data_uri(image_root / path, TOP_THUMBNAIL_PX) if isinstance(path, str) else None
        for path in ranking["path"].head(count)
    ]
    top = top.round(3)
    top.insert(0, "thumbnail", [f"![]({uri})" if uri else "" for uri in uris])
    return top.to_markdown(index=False)


RANKING_CHECKS = {
    "ranks_run_1_to_n": "Ranks run 1..N without gaps.",
    "every_unlabelled_image_once": "Every accepted unlabelled image appears exactly once.",
    "no_labelled_or_rejected_image": "No labelled or rejected image is ranked.",
    "all_scores_finite": "All scores are finite.",
}


@ranking_asset(
    "The ranked 'label this first' list of accepted unlabelled images, with a readable reason: "
    "by score region, cluster priority group and score (strategy 'study'), or a greedy "
    "coverage order (strategy 'coverage'). Also exported as CSV.",
    ins={
        "feature_matrix": FEATURE_CONTEXT,
        "neighbour_graph": columns_of("neighbour_graph", NEIGHBOUR_GRAPH_COLUMNS),
    },
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
    neighbour_graph: pd.DataFrame,
):
    collection = imgrank.collection(context.partition_key)
    ranking = strategies.rank(
        collection.strategy,
        image_scores,
        cluster_metrics,
        feature_matrix,
        set(labeled_images["image_id"]),
        collection.scoring,
        neighbour_graph,
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
        strategy=collection.strategy,
        ranked_images=len(ranking),
        regions=dg.MetadataValue.json({k: int(v) for k, v in regions.items()}),
        top_20=dg.MetadataValue.md(_top_with_thumbnails(ranking, collection.image_root)),
    )
    for name, found in problems.items():
        yield dg.AssetCheckResult(
            check_name=name,
            passed=not found,
            metadata={"problems": dg.MetadataValue.json(found)} if found else {},
        )
