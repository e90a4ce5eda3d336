"""The study's score components, score formula, cluster priority groups and final order.

score = uniqueness * uniqueness_punishment
        + w_outlier * outlier_distance + w_similar * similar_distance
        + w_blur * blur + w_brightness * brightness

with the study's weights -0.15, -1, 0.2 and 0.05 (keyword parameters); blur and brightness are
min-max normalised over the collection. Images are then ordered by score region (good,
medium, bad), their cluster's priority group (1 = no labelled image first) and score.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np
import pandas as pd

from imgrank_dagster.core.ranking import near_duplicates
from imgrank_dagster.core.ranking.index import Neighbours, UnitRows, cosine_neighbours

COMPONENT_COLUMNS = (
    "uniqueness",
    "uniqueness_punishment",
    "outlier_distance",
    "similar_distance",
    "blur",
    "brightness",
)
REGIONS = ("good", "medium", "bad")  # in ranking order
# The study's ranking (strategies.RANKING_COLUMNS adds the coverage strategy's columns).
STUDY_RANKING_COLUMNS = [
    "rank",
    "image_id",
    "path",
    "sequence_id",
    "captured_at",
    "lat",
    "lng",
    "score",
    "uniqueness",
    "uniqueness_punishment",
    "outlier_distance",
    "similar_distance",
    "blur",
    "brightness",
    "cluster",
    "priority_group",
    "region",
    "reason",
]
IMAGE_INFO_COLUMNS = ["path", "sequence_id", "captured_at", "lat", "lng"]
NO_GROUP = -1

# Wording of the ranking's reasons (presentation only, not part of the method): uniqueness
# at or above UNIQUE_FROM reads "unique", below TYPICAL_BELOW "typical"; normalised blur and
# brightness read "sharp"/"blurry" and "bright"/"dark" beyond these bounds.
UNIQUE_FROM = 0.75
TYPICAL_BELOW = 0.25
SHARP_FROM = 2 / 3
BLURRY_BELOW = 1 / 3
BRIGHT_FROM = 0.8
DARK_BELOW = 0.2
_PRIORITY_PHRASES = {
    1: "cluster {cluster} has no labelled image",
    2: "cluster {cluster} has few labelled images",
    3: "cluster {cluster} is partly labelled",
    4: "cluster {cluster} is well labelled",
}


def duplicate_punishment(
    image_ids: Sequence[str],
    clusters: np.ndarray,
    pairs: pd.DataFrame,
    threshold: float,
    punishment: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate punishment and group per image.

    Groups are the connected components of the pairs with similarity >= threshold whose two
    images lie in the same cluster. Going through the images sorted by image_id, the first
    image of a group keeps 1.0 and every later member gets `punishment`; images in no group
    keep 1.0 and group -1. Groups are numbered 0, 1, ... in the order of their first image.
    """
    ids = _ids(image_ids)
    labels = _labels(clusters, len(ids))
    if not 0 <= punishment <= 1:
        raise ValueError(f"punishment must be in [0, 1], got {punishment}")
    first, second, _ = _pair_rows(pairs, ids, threshold)
    same_cluster = (labels[first] == labels[second]) & (first != second)
    first, second = first[same_cluster], second[same_cluster]
    factor = np.ones(len(ids))
    group = np.full(len(ids), NO_GROUP, dtype=np.int64)
    if first.size == 0:
        return factor, group
    # Number the images by sorted image_id so that component order follows image_id order.
    order = np.argsort(ids, kind="stable")
    position = np.empty(len(ids), dtype=np.int64)
    position[order] = np.arange(len(ids))
    # SciPy only here: the label-dependent stages never need it (they run on every label change).
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix(
        (np.ones(first.size), (position[first], position[second])), shape=(len(ids), len(ids))
    )
    _, component = connected_components(graph, directed=False)
    in_group = np.zeros(len(ids), dtype=bool)
    in_group[position[first]] = True
    in_group[position[second]] = True
    # Walk images in image_id order: the first member of each component keeps 1.0.
    sorted_component = component[in_group]
    sorted_rows = order[in_group]
    _, first_index, group_number = np.unique(
        sorted_component, return_index=True, return_inverse=True
    )
    # np.unique numbers components by label; renumber by first appearance (image_id order).
    appearance = np.argsort(np.argsort(first_index))
    group[sorted_rows] = appearance[group_number]
    punished = np.ones(sorted_rows.size, dtype=bool)
    punished[first_index] = False
    factor[sorted_rows[punished]] = punishment
    return factor, group


def outlier_distance(
    image_ids: Sequence[str],
    embeddings: np.ndarray,
    clusters: np.ndarray,
    percentile: float,
    nearest_neighbors_k: int = near_duplicates.DEFAULT_NEAREST_NEIGHBORS_K,
    *,
    neighbours: Neighbours | None = None,
) -> np.ndarray:
    """fastdup's outlier value for images flagged within their own cluster, 0 elsewhere.

    The value is the cosine similarity fastdup reports for the outlier (see near_duplicates).
    neighbours: the collection's neighbour search (rows aligned with image_ids); each image's
    nearest same-cluster neighbours are taken from it. Without it every cluster is searched on
    its own. Clusters too small for outliers contribute none.
    """
    ids = _ids(image_ids)
    labels = _labels(clusters, len(ids))
    if embeddings.shape[0] != len(ids):
        raise ValueError(
            f"embeddings has {embeddings.shape[0]} rows but there are {len(ids)} image ids"
        )
    result = np.zeros(len(ids))
    unit = UnitRows(embeddings)
    if neighbours is not None:
        if neighbours.indices.shape[0] != len(ids):
            raise ValueError(
                f"the neighbours have {neighbours.indices.shape[0]} rows for {len(ids)} images"
            )
        _, similarities = near_duplicates.within_cluster_neighbours(
            neighbours, labels, nearest_neighbors_k, unit
        )
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        if len(members) < near_duplicates.MIN_IMAGES_FOR_OUTLIERS:
            continue
        if neighbours is None:
            found = cosine_neighbours(UnitRows(embeddings, members), nearest_neighbors_k)
            cluster_similarities = found.similarities
        else:
            cluster_similarities = similarities[members]
        values = near_duplicates.outlier_values(cluster_similarities, percentile)
        flagged = ~np.isnan(values)
        result[members[flagged]] = values[flagged]
    return result


def similar_to_labelled(
    image_ids: Sequence[str],
    labelled_ids: Collection[str],
    pairs: pd.DataFrame,
    threshold: float,
) -> np.ndarray:
    """Per image: the highest similarity of a pair (>= threshold) joining it to a labelled
    image, for unlabelled images; 0 for images with no such pair and for labelled images."""
    ids = _ids(image_ids)
    first, second, similarity = _pair_rows(pairs, ids, threshold)
    labelled = pd.Series(ids).isin(set(labelled_ids)).to_numpy()
    result = np.zeros(len(ids))
    for target, other in ((first, second), (second, first)):
        joins = labelled[other] & ~labelled[target]
        np.maximum.at(result, target[joins], similarity[joins])
    return result


def minmax_normalise(values: Iterable[float]) -> np.ndarray:
    """Scale to [0, 1] over the collection: (v - min) / (max - min).

    A constant input (including a single value) has no spread and maps to zeros, so such a
    component adds nothing to the score. NaN is an error.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return array
    if not np.isfinite(array).all():
        raise ValueError("values contain NaN or infinite numbers")
    spread = array.max() - array.min()
    if spread == 0:
        return np.zeros_like(array)
    return (array - array.min()) / spread


def combine_score(
    components: pd.DataFrame,
    *,
    w_outlier: float = -0.15,
    w_similar: float = -1.0,
    w_blur: float = 0.2,
    w_brightness: float = 0.05,
) -> pd.Series:
    """The study's weighted score of every row of components (columns: COMPONENT_COLUMNS)."""
    missing = [column for column in COMPONENT_COLUMNS if column not in components]
    if missing:
        raise ValueError(f"components lack column(s) {missing}")
    values = {column: components[column].to_numpy(dtype=np.float64) for column in COMPONENT_COLUMNS}
    for column, array in values.items():
        if not np.isfinite(array).all():
            raise ValueError(f"components column {column!r} has NaN or infinite values")
    score = (
        values["uniqueness"] * values["uniqueness_punishment"]
        + w_outlier * values["outlier_distance"]
        + w_similar * values["similar_distance"]
        + w_blur * values["blur"]
        + w_brightness * values["brightness"]
    )
    return pd.Series(score, index=components.index, name="score")


def priority_group(labelled_count: int, size: int, **bounds: float) -> int:
    """Priority group of one cluster: 1 = no labelled image, 2 = few, 3 = some, 4 = many.

    bounds: the keyword parameters of `priority_groups`.
    """
    return int(priority_groups(np.array([labelled_count]), np.array([size]), **bounds)[0])


def priority_groups(
    labelled_counts: np.ndarray,
    sizes: np.ndarray,
    *,
    priority_few_count: int = 10,
    priority_few_fraction: float = 0.03,
    priority_some_count: int = 50,
    priority_some_fraction: float = 0.30,
) -> np.ndarray:
    """Vectorised priority_group.

    1: no labelled image; 2: fewer than priority_few_count labelled and a labelled fraction
    under priority_few_fraction; 3: fewer than priority_some_count and under
    priority_some_fraction; 4: every other cluster. The fraction is compared as count / size
    (not count < fraction * size, whose rounding misplaces exact boundaries such as 3 of 100).
    """
    counts = np.asarray(labelled_counts)
    sizes = np.asarray(sizes)
    if counts.shape != sizes.shape:
        raise ValueError(f"labelled_counts {counts.shape} and sizes {sizes.shape} differ in shape")
    if (sizes < 1).any():
        raise ValueError("every cluster size must be at least 1")
    if (counts < 0).any() or (counts > sizes).any():
        raise ValueError("labelled counts must be between 0 and the cluster size")
    fraction = counts / sizes
    few = (counts < priority_few_count) & (fraction < priority_few_fraction)
    some = (counts < priority_some_count) & (fraction < priority_some_fraction)
    return np.select([counts == 0, few, some], [1, 2, 3], default=4).astype(np.int64)


def cluster_metrics(
    assignments: pd.DataFrame,
    labelled_ids: Collection[str],
    **priority_bounds: float,
) -> pd.DataFrame:
    """One row per cluster: cluster, size, labelled_count, labelled_fraction, priority_group,
    mean_silhouette, nearest_image_id (smallest centroid_distance, ties by image_id).

    priority_bounds: the keyword parameters of `priority_groups`.
    """
    required = ["image_id", "cluster", "centroid_distance", "silhouette"]
    missing = [column for column in required if column not in assignments]
    if missing:
        raise ValueError(f"assignments lack column(s) {missing}")
    frame = assignments[required].copy()
    frame["labelled"] = frame["image_id"].isin(set(labelled_ids))
    grouped = frame.groupby("cluster", sort=True)
    metrics = pd.DataFrame(
        {
            "size": grouped.size(),
            "labelled_count": grouped["labelled"].sum().astype(np.int64),
            "mean_silhouette": grouped["silhouette"].mean(),
        }
    )
    nearest = frame.sort_values(["cluster", "centroid_distance", "image_id"]).drop_duplicates(
        "cluster"
    )
    metrics["nearest_image_id"] = nearest.set_index("cluster")["image_id"]
    metrics["labelled_fraction"] = metrics["labelled_count"] / metrics["size"]
    metrics["priority_group"] = priority_groups(
        metrics["labelled_count"].to_numpy(), metrics["size"].to_numpy(), **priority_bounds
    )
    metrics = metrics.reset_index()
    metrics["cluster"] = metrics["cluster"].astype(np.int64)
    metrics["size"] = metrics["size"].astype(np.int64)
    return metrics[
        [
            "cluster",
            "size",
            "labelled_count",
            "labelled_fraction",
            "priority_group",
            "mean_silhouette",
            "nearest_image_id",
        ]
    ]


def score_region(score: float | np.ndarray, good: float, bad: float) -> str | np.ndarray:
    """'good' above good, 'bad' below bad, 'medium' otherwise (bounds themselves: medium)."""
    if bad > good:
        raise ValueError(f"bad ({bad}) must not exceed good ({good})")
    array = np.asarray(score, dtype=np.float64)
    region = np.where(array > good, "good", np.where(array < bad, "bad", "medium")).astype(object)
    return str(region) if region.ndim == 0 else region


def rank_images(
    scores: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    *,
    good_threshold: float = 0.8,
    bad_threshold: float = 0.2,
    image_info: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The labeling_priority table: unlabelled images, best first.

    Order: region (good, medium, bad), then the cluster's priority group ascending (clusters
    with fewer labels first), then score descending, then image_id. image_info supplies
    path, sequence_id, captured_at, lat and lng by image_id (missing columns stay empty).
    """
    required = ["image_id", "cluster", "labelled", "score", *COMPONENT_COLUMNS]
    missing = [column for column in required if column not in scores]
    if missing:
        raise ValueError(f"scores lack column(s) {missing}")
    groups = cluster_metrics.set_index("cluster")["priority_group"]
    unknown = set(scores["cluster"]) - set(groups.index)
    if unknown:
        raise ValueError(f"cluster_metrics has no row for cluster(s) {sorted(unknown)}")
    ranking = scores.loc[~scores["labelled"].astype(bool), required].copy()
    ranking["priority_group"] = groups.loc[ranking["cluster"]].to_numpy().astype(np.int64)
    ranking["region"] = score_region(ranking["score"].to_numpy(), good_threshold, bad_threshold)
    region_order = ranking["region"].map({region: i for i, region in enumerate(REGIONS)})
    ranking = ranking.assign(_region_order=region_order, _negative_score=-ranking["score"])
    ranking = ranking.sort_values(
        ["_region_order", "priority_group", "_negative_score", "image_id"], kind="stable"
    ).drop(columns=["_region_order", "_negative_score"])
    ranking["rank"] = np.arange(1, len(ranking) + 1, dtype=np.int64)
    ranking["reason"] = [reason(row) for row in ranking.itertuples(index=False)]
    info = _image_info(image_info)
    ranking = ranking.merge(info, on="image_id", how="left")
    return ranking[STUDY_RANKING_COLUMNS].reset_index(drop=True)


def reason(row: object) -> str:
    """A short readable reason built from one ranking row's components."""
    phrases = [_PRIORITY_PHRASES[int(row.priority_group)].format(cluster=int(row.cluster))]
    if row.uniqueness >= 1.0:
        phrases.append("most unique in its cluster")
    elif row.uniqueness >= UNIQUE_FROM:
        phrases.append("unique")
    elif row.uniqueness < TYPICAL_BELOW:
        phrases.append("typical")
    if row.uniqueness_punishment < 1.0:
        phrases.append("near-duplicate of an earlier image")
    if row.outlier_distance > 0:
        phrases.append("outlier")
    if row.similar_distance > 0:
        phrases.append("similar to a labelled image")
    if row.blur >= SHARP_FROM:
        phrases.append("sharp")
    elif row.blur < BLURRY_BELOW:
        phrases.append("blurry")
    if row.brightness >= BRIGHT_FROM:
        phrases.append("bright")
    elif row.brightness < DARK_BELOW:
        phrases.append("dark")
    return "; ".join(phrases)


def _image_info(image_info: pd.DataFrame | None) -> pd.DataFrame:
    if image_info is None:
        return pd.DataFrame({"image_id": pd.Series(dtype=object)}).assign(
            **{column: pd.Series(dtype=object) for column in IMAGE_INFO_COLUMNS}
        )
    if "image_id" not in image_info:
        raise ValueError("image_info lacks column 'image_id'")
    info = image_info[["image_id", *[c for c in IMAGE_INFO_COLUMNS if c in image_info]]]
    info = info.drop_duplicates("image_id")
    for column in IMAGE_INFO_COLUMNS:
        if column not in info:
            info = info.assign(**{column: pd.Series(pd.NA, index=info.index, dtype=object)})
    return info


def _ids(image_ids: Sequence[str]) -> np.ndarray:
    ids = np.array([str(image_id) for image_id in image_ids], dtype=object)
    if len(pd.unique(ids)) != len(ids):
        duplicated = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise ValueError(f"image_ids are not unique, e.g. {duplicated!r}")
    return ids


def _labels(clusters: np.ndarray, n_images: int) -> np.ndarray:
    labels = np.asarray(clusters)
    if labels.shape != (n_images,):
        raise ValueError(
            f"clusters must have one label per image ({n_images}), got shape {labels.shape}"
        )
    return labels


def _pair_rows(
    pairs: pd.DataFrame, ids: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row numbers of both ends, and the similarity, of the pairs with similarity >= threshold."""
    missing = [column for column in ("from_id", "to_id", "similarity") if column not in pairs]
    if missing:
        raise ValueError(f"pairs lack column(s) {missing}")
    kept = pairs[pairs["similarity"].to_numpy(dtype=np.float64) >= threshold]
    row_of_id = pd.Series(np.arange(len(ids)), index=ids)
    rows = []
    for column in ("from_id", "to_id"):
        found = kept[column].map(row_of_id)
        if found.isna().any():
            unknown = kept.loc[found.isna(), column].iloc[0]
            raise ValueError(f"pairs mention image {unknown!r}, which is not among image_ids")
        rows.append(found.to_numpy(dtype=np.int64))
    return rows[0], rows[1], kept["similarity"].to_numpy(dtype=np.float64)
