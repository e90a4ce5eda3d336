"""The study's whole ranking in one call, without Dagster (benchmarks, strategy comparisons).

The stages follow the project's data contracts and are separate functions so that the Dagster
layer can make each one an asset:

    cluster_assignments  <- cluster(features, embeddings, settings)
    similar_pairs        <- collection_similar_pairs(features, embeddings, settings)
    image_base_scores    <- base_scores(features, embeddings, assignments, similar_pairs, ...)
    cluster_metrics      <- scoring.cluster_metrics(assignments, labelled_ids, settings)
    image_scores         <- label_scores(base_scores, similar_pairs, labelled_ids, settings)
    labeling_priority    <- scoring.rank_images(scores, cluster_metrics, settings, features)

Only cluster_metrics, image_scores and labeling_priority depend on the labelled set.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imgrank_dagster.core import fastdup_graph, scoring
from imgrank_dagster.core.clustering import (
    ClusteringResult,
    choose_k_and_cluster,
    cluster_assignments_frame,
    validate_embeddings,
)
from imgrank_dagster.core.collections import ScoringSettings
from imgrank_dagster.core.features import embedding_matrix
from imgrank_dagster.core.uniqueness import uniqueness_within_clusters

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
    features: pd.DataFrame, embeddings: np.ndarray, settings: ScoringSettings
) -> tuple[pd.DataFrame, ClusteringResult]:
    """cluster_assignments (and the full clustering result) for the feature matrix."""
    _check_aligned(features, embeddings)
    result = choose_k_and_cluster(embeddings, settings)
    return cluster_assignments_frame(features["image_id"], result), result


def collection_similar_pairs(
    features: pd.DataFrame, embeddings: np.ndarray, settings: ScoringSettings
) -> pd.DataFrame:
    """similar_pairs: fastdup's near-duplicate pairs over the whole collection."""
    _check_aligned(features, embeddings)
    return fastdup_graph.similar_pairs(
        features["image_id"].tolist(),
        embeddings,
        settings.similarity_threshold,
        settings.nearest_neighbors_k,
    )


def base_scores(
    features: pd.DataFrame,
    embeddings: np.ndarray,
    assignments: pd.DataFrame,
    similar_pairs: pd.DataFrame,
    settings: ScoringSettings,
) -> pd.DataFrame:
    """image_base_scores: the label-independent components, one row per image of features."""
    _check_aligned(features, embeddings)
    for column in ("blur", "brightness"):
        if column not in features:
            raise ValueError(f"features lack column {column!r}")
    image_ids = features["image_id"].tolist()
    clusters = _clusters_for(features, assignments)
    punishment, group = scoring.duplicate_punishment(
        image_ids,
        clusters,
        similar_pairs,
        settings.similarity_threshold,
        settings.duplicate_punishment,
    )
    return pd.DataFrame(
        {
            "image_id": features["image_id"].to_numpy(dtype=object),
            "cluster": clusters,
            "uniqueness": uniqueness_within_clusters(embeddings, clusters),
            "uniqueness_punishment": punishment,
            "duplicate_group": group,
            "outlier_distance": scoring.outlier_distance(
                image_ids,
                embeddings,
                clusters,
                settings.outlier_percentile,
                settings.nearest_neighbors_k,
            ),
            "blur": scoring.minmax_normalise(features["blur"]),
            "brightness": scoring.minmax_normalise(features["brightness"]),
        }
    )[BASE_SCORE_COLUMNS]


def label_scores(
    base_scores: pd.DataFrame,
    similar_pairs: pd.DataFrame,
    labelled_ids: Collection[str],
    settings: ScoringSettings,
) -> pd.DataFrame:
    """image_scores: base scores plus the label-dependent similar_distance, labelled and score."""
    missing = [column for column in BASE_SCORE_COLUMNS if column not in base_scores]
    if missing:
        raise ValueError(f"base_scores lack column(s) {missing}")
    labelled = set(labelled_ids)
    scores = base_scores[BASE_SCORE_COLUMNS].copy()
    scores["labelled"] = scores["image_id"].isin(labelled)
    scores["similar_distance"] = scoring.similar_to_labelled(
        scores["image_id"].tolist(), labelled, similar_pairs, settings.similarity_threshold
    )
    scores["score"] = scoring.combine_score(scores, settings)
    return scores[SCORE_COLUMNS].reset_index(drop=True)


def run_study(
    features: pd.DataFrame,
    labelled_ids: Collection[str],
    settings: ScoringSettings,
    embeddings: np.ndarray | None = None,
) -> StudyResult:
    """Every stage of the study on one collection's feature matrix.

    features: image_id, blur, brightness, and either an `embedding` column or the matrix
    passed as `embeddings` (rows aligned with features); path, sequence_id, captured_at, lat
    and lng are copied into the ranking when present.
    """
    if "image_id" not in features:
        raise ValueError("features lack column 'image_id'")
    features = features.reset_index(drop=True)
    matrix = embedding_matrix(features) if embeddings is None else embeddings
    embeddings = validate_embeddings(matrix)
    assignments, clustering = cluster(features, embeddings, settings)
    pairs = collection_similar_pairs(features, embeddings, settings)
    base = base_scores(features, embeddings, assignments, pairs, settings)
    metrics = scoring.cluster_metrics(assignments, labelled_ids, settings)
    scores = label_scores(base, pairs, labelled_ids, settings)
    ranking = scoring.rank_images(scores, metrics, settings, features)
    return StudyResult(
        assignments=assignments,
        clustering=clustering,
        similar_pairs=pairs,
        base_scores=base,
        cluster_metrics=metrics,
        scores=scores,
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
