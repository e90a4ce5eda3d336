"""The study's ranking: its stages one by one, and all of them in one call (`run_study`).

The stages follow the project's data contracts and are separate functions so that the Dagster
layer can make each one an asset:

    cluster_assignments  <- cluster(features, embeddings, **clustering parameters)
    neighbour_graph      <- core.ranking.neighbours.build_neighbour_graph(embeddings, ...)
    similar_pairs        <- collection_similar_pairs(image_ids, graph's nearest neighbours, ...)
    image_base_scores    <- base_scores(features, embeddings, assignments, similar_pairs,
                                        neighbours=graph's nearest neighbours, ...)
    cluster_metrics      <- scores.cluster_metrics(assignments, labelled_ids, ...)
    image_scores         <- label_scores(base_scores, similar_pairs, labelled_ids, ...)
    labeling_priority    <- scores.rank_images(image_scores, cluster_metrics, ...)

Only cluster_metrics, image_scores and labeling_priority depend on the labelled set. Every
constant of the method is a keyword parameter whose default is the study's value.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from imgrank_dagster.core.features.embeddings import embedding_matrix
from imgrank_dagster.core.ranking import near_duplicates, scores
from imgrank_dagster.core.ranking.clustering import (
    ClusteringResult,
    choose_k_and_cluster,
    cluster_assignments_frame,
    validate_embeddings,
)
from imgrank_dagster.core.ranking.index import Neighbours, cosine_neighbours
from imgrank_dagster.core.ranking.neighbours import DEFAULT_K
from imgrank_dagster.core.ranking.uniqueness import uniqueness_by_cluster

BASE_SCORE_COLUMNS = [
    "image_id",
    "cluster",
    "uniqueness",
    "uniqueness_punishment",
    "duplicate_group",
    "outlier_distance",
    "blur",
    "brightness",
]
SCORE_COLUMNS = [
    "image_id",
    "cluster",
    "labelled",
    "uniqueness",
    "uniqueness_punishment",
    "duplicate_group",
    "outlier_distance",
    "similar_distance",
    "blur",
    "brightness",
    "score",
]


@dataclass(frozen=True, eq=False)
class StudyResult:
    assignments: pd.DataFrame  # cluster_assignments
    clustering: ClusteringResult
    similar_pairs: pd.DataFrame  # from_id, to_id, similarity
    base_scores: pd.DataFrame  # image_base_scores
    cluster_metrics: pd.DataFrame
    scores: pd.DataFrame  # image_scores
    ranking: pd.DataFrame  # labeling_priority


def cluster(
    features: pd.DataFrame, embeddings: np.ndarray, **clustering: Any
) -> tuple[pd.DataFrame, ClusteringResult]:
    """cluster_assignments (and the full clustering result) for the feature matrix.

    clustering: keyword parameters of `clustering.choose_k_and_cluster` (k, k_min, ..., seed).
    """
    _check_aligned(features, embeddings)
    result = choose_k_and_cluster(embeddings, **clustering)
    return cluster_assignments_frame(features["image_id"], result), result


def collection_similar_pairs(
    image_ids: Sequence[str],
    neighbours: Neighbours,
    *,
    similarity_threshold: float = 0.9,
    nearest_neighbors_k: int = near_duplicates.DEFAULT_NEAREST_NEIGHBORS_K,
) -> pd.DataFrame:
    """similar_pairs: near-duplicate pairs over the whole collection with fastdup's
    definition, from the collection's neighbours (rows aligned with image_ids)."""
    if neighbours.k < nearest_neighbors_k and neighbours.k < len(image_ids) - 1:
        raise ValueError(
            f"the neighbour graph lists {neighbours.k} neighbours per image; similar pairs "
            f"need nearest_neighbors_k = {nearest_neighbors_k}"
        )
    return near_duplicates.pairs_from_neighbours(
        image_ids, neighbours, similarity_threshold, nearest_neighbors_k
    )


def base_scores(
    features: pd.DataFrame,
    embeddings: np.ndarray,
    assignments: pd.DataFrame,
    similar_pairs: pd.DataFrame,
    *,
    neighbours: Neighbours | None = None,
    similarity_threshold: float = 0.9,
    duplicate_punishment: float = 0.5,
    outlier_percentile: float = 0.05,
    nearest_neighbors_k: int = near_duplicates.DEFAULT_NEAREST_NEIGHBORS_K,
    seed: int = 0,
) -> pd.DataFrame:
    """image_base_scores: the label-independent components, one row per image of features.

    neighbours: the collection's neighbours (rows aligned with features), which the outliers
    are taken from; without it each cluster is searched on its own. attrs["uniqueness_search"]
    says how each cluster's uniqueness neighbours were searched.
    """
    _check_aligned(features, embeddings)
    for column in ("blur", "brightness"):
        if column not in features:
            raise ValueError(f"features lack column {column!r}")
    image_ids = features["image_id"].tolist()
    clusters = _clusters_for(features, assignments)
    punishment, group = scores.duplicate_punishment(
        image_ids, clusters, similar_pairs, similarity_threshold, duplicate_punishment
    )
    uniqueness = uniqueness_by_cluster(embeddings, clusters, seed=seed)
    outliers = scores.outlier_distance(
        image_ids,
        embeddings,
        clusters,
        outlier_percentile,
        nearest_neighbors_k,
        neighbours=neighbours,
    )
    table = pd.DataFrame(
        {
            "image_id": features["image_id"].to_numpy(dtype=object),
            "cluster": clusters,
            "uniqueness": uniqueness.scores,
            "uniqueness_punishment": punishment,
            "duplicate_group": group,
            "outlier_distance": outliers,
            "blur": scores.minmax_normalise(features["blur"]),
            "brightness": scores.minmax_normalise(features["brightness"]),
        }
    )[BASE_SCORE_COLUMNS]
    table.attrs["uniqueness_search"] = _search_summary(uniqueness.searches)
    return table


def _search_summary(searches: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """How many clusters' uniqueness neighbours were searched exactly, how many approximately
    (and the lowest recall of those)."""
    methods = [search["method"] for search in searches.values()]
    recalls = [search["recall"] for search in searches.values() if "recall" in search]
    summary: dict[str, Any] = {
        "exact_clusters": methods.count("exact") + methods.count("none"),
        "approximate_clusters": methods.count("ivf"),
    }
    if recalls:
        summary["lowest_recall"] = min(recalls)
    return summary


def label_scores(
    base_scores: pd.DataFrame,
    similar_pairs: pd.DataFrame,
    labelled_ids: Collection[str],
    *,
    similarity_threshold: float = 0.9,
    **weights: float,
) -> pd.DataFrame:
    """image_scores: base scores plus the label-dependent similar_distance, labelled and score.

    weights: the keyword parameters of `scores.combine_score` (w_outlier, w_similar, ...).
    """
    missing = [column for column in BASE_SCORE_COLUMNS if column not in base_scores]
    if missing:
        raise ValueError(f"base_scores lack column(s) {missing}")
    labelled = set(labelled_ids)
    table = base_scores[BASE_SCORE_COLUMNS].copy()
    table["labelled"] = table["image_id"].isin(labelled)
    table["similar_distance"] = scores.similar_to_labelled(
        table["image_id"].tolist(), labelled, similar_pairs, similarity_threshold
    )
    table["score"] = scores.combine_score(table, **weights)
    return table[SCORE_COLUMNS].reset_index(drop=True)


def run_study(
    features: pd.DataFrame,
    labelled_ids: Collection[str],
    *,
    embeddings: np.ndarray | None = None,
    k: int | None = None,
    k_min: int = 2,
    k_max: int | None = None,
    silhouette_window: int = 2,
    silhouette_sample_size: int = 5000,
    exact_silhouette_max: int = 10_000,
    seed: int = 0,
    similarity_threshold: float = 0.9,
    duplicate_punishment: float = 0.5,
    outlier_percentile: float = 0.05,
    nearest_neighbors_k: int = near_duplicates.DEFAULT_NEAREST_NEIGHBORS_K,
    w_outlier: float = -0.15,
    w_similar: float = -1.0,
    w_blur: float = 0.2,
    w_brightness: float = 0.05,
    priority_few_count: int = 10,
    priority_few_fraction: float = 0.03,
    priority_some_count: int = 50,
    priority_some_fraction: float = 0.30,
    good_threshold: float = 0.8,
    bad_threshold: float = 0.2,
) -> StudyResult:
    """Every stage of the study on one collection's feature matrix.

    features: image_id, blur, brightness, and either an `embedding` column or the matrix
    passed as `embeddings` (rows aligned with features); path, sequence_id, captured_at, lat
    and lng are copied into the ranking when present. The other parameters are the study's
    constants, passed on to the stage that uses them.
    """
    if "image_id" not in features:
        raise ValueError("features lack column 'image_id'")
    features = features.reset_index(drop=True)
    matrix = embedding_matrix(features) if embeddings is None else embeddings
    embeddings = validate_embeddings(matrix)
    assignments, clustering = cluster(
        features,
        embeddings,
        k=k,
        k_min=k_min,
        k_max=k_max,
        silhouette_window=silhouette_window,
        silhouette_sample_size=silhouette_sample_size,
        exact_silhouette_max=exact_silhouette_max,
        seed=seed,
    )
    image_ids = features["image_id"].tolist()
    if len(image_ids) < 2:
        raise ValueError(f"the study needs at least 2 images, got {len(image_ids)}")
    neighbours = cosine_neighbours(embeddings, max(DEFAULT_K, nearest_neighbors_k), seed=seed)
    pairs = collection_similar_pairs(
        image_ids,
        neighbours,
        similarity_threshold=similarity_threshold,
        nearest_neighbors_k=nearest_neighbors_k,
    )
    base = base_scores(
        features,
        embeddings,
        assignments,
        pairs,
        neighbours=neighbours,
        similarity_threshold=similarity_threshold,
        duplicate_punishment=duplicate_punishment,
        outlier_percentile=outlier_percentile,
        nearest_neighbors_k=nearest_neighbors_k,
        seed=seed,
    )
    metrics = scores.cluster_metrics(
        assignments,
        labelled_ids,
        priority_few_count=priority_few_count,
        priority_few_fraction=priority_few_fraction,
        priority_some_count=priority_some_count,
        priority_some_fraction=priority_some_fraction,
    )
    image_scores = label_scores(
        base,
        pairs,
        labelled_ids,
        similarity_threshold=similarity_threshold,
        w_outlier=w_outlier,
        w_similar=w_similar,
        w_blur=w_blur,
        w_brightness=w_brightness,
    )
    ranking = scores.rank_images(
        image_scores,
        metrics,
        good_threshold=good_threshold,
        bad_threshold=bad_threshold,
        image_info=features,
    )
    return StudyResult(
        assignments=assignments,
        clustering=clustering,
        similar_pairs=pairs,
        base_scores=base,
        cluster_metrics=metrics,
        scores=image_scores,
        ranking=ranking,
    )


def _check_aligned(features: pd.DataFrame, embeddings: np.ndarray) -> None:
    if "image_id" not in features:
        raise ValueError("features lack column 'image_id'")
    if getattr(embeddings, "ndim", None) != 2 or embeddings.shape[0] != len(features):
        raise ValueError(
            f"embeddings must have one row per feature row ({len(features)}), "
            f"got shape {getattr(embeddings, 'shape', None)}"
        )
    if features["image_id"].duplicated().any():
        duplicated = features.loc[features["image_id"].duplicated(), "image_id"].iloc[0]
        raise ValueError(f"features' image_id values are not unique, e.g. {duplicated!r}")


def _clusters_for(features: pd.DataFrame, assignments: pd.DataFrame) -> np.ndarray:
    """The cluster of every feature row, from assignments (any row order)."""
    for column in ("image_id", "cluster"):
        if column not in assignments:
            raise ValueError(f"assignments lack column {column!r}")
    by_id = assignments.set_index("image_id")["cluster"]
    clusters = features["image_id"].map(by_id)
    if clusters.isna().any():
        missing = features.loc[clusters.isna(), "image_id"].iloc[0]
        raise ValueError(f"assignments have no cluster for image {missing!r}")
    return clusters.to_numpy(dtype=np.int64)
