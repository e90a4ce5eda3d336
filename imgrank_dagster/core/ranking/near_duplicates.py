"""Near-duplicate pairs and outliers with fastdup's definitions, from the neighbour graph.

The study used fastdup's `similarity()` and `outliers()`. fastdup finds them with its own
nearest-neighbour index over the embeddings; imgrank computes the collection's neighbours
once (core.ranking.index, FAISS) and derives both from them, with fastdup's definitions
(checked against fastdup itself on real photos, imgrank_dagster_tests/test_near_duplicates.py):

- fastdup searches the `nearest_neighbors_k` nearest neighbours of every image (default 2;
  cosine similarity of the embeddings).
- similar pairs: those neighbour pairs with similarity >= threshold, each unordered pair once
  (fastdup writes both directions).
- outliers: of all N * k neighbour pairs, the ones whose similarity falls in the lowest
  `percentile` (the first round(percentile * N * k) in ascending order, ties by image then
  neighbour rank) flag their image; its value is the lowest similarity among its flagged
  pairs. With k = 1 that is the similarity to its nearest neighbour; with fastdup's default
  k = 2 it is the similarity to the farther of its 2 nearest neighbours when both pairs are
  in the lowest percentile. `outliers` reports that value (a cosine similarity: lower = more
  isolated). Note for the score: w_outlier (negative) multiplies this similarity, so among
  flagged images a *more* isolated one (lower similarity) loses *less*.
- The study runs outliers within each cluster: the neighbours are then the nearest images of
  the same cluster. From a collection graph of K >= k neighbours these are the first k
  same-cluster images of each row (exact whenever the row holds k of them, since any closer
  same-cluster image would be in the row too); rows with fewer are searched exactly within
  their cluster.

Where fastdup and the graph can differ: fastdup's index (HNSW) is approximate and not
reproducible run to run (on 11,000 images two fastdup runs differ in a handful of the ~15,000
pairs and in a few marginal outliers); the graph is exact up to its exact limit, approximate
above with measured recall, and deterministic.

Tiny inputs: fewer than 2 rows give empty frames. Outliers need at least
MIN_IMAGES_FOR_OUTLIERS rows: with 2 or 3 rows there are at most 6 neighbour pairs, the
lowest percentile is then one pair, and which of two equally isolated images it flags depends
on row order; an outlier there means nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imgrank_dagster.core.ranking.index import (
    DEFAULT_EXACT_LIMIT,
    Neighbours,
    UnitRows,
    cosine_neighbours,
    exact_neighbours,
)

PAIR_COLUMNS = ["from_id", "to_id", "similarity"]
OUTLIER_COLUMNS = ["image_id", "outlier_distance"]
DEFAULT_NEAREST_NEIGHBORS_K = 2  # fastdup's default
MIN_IMAGES_FOR_OUTLIERS = 4


@dataclass(frozen=True)
class NearDuplicates:
    """Similar pairs and outliers of one set of images, by image id."""

    pairs: pd.DataFrame  # from_id, to_id, similarity
    outliers: pd.DataFrame  # image_id, outlier_distance


def pairs_from_neighbours(
    image_ids: Sequence[str],
    neighbours: Neighbours,
    threshold: float,
    nearest_neighbors_k: int = DEFAULT_NEAREST_NEIGHBORS_K,
) -> pd.DataFrame:
    """Similar pairs among each image's first nearest_neighbors_k neighbours: each unordered
    pair once, from_id < to_id, sorted by ids."""
    ids = _validated_ids(image_ids)
    _check_parameters(threshold=threshold, nearest_neighbors_k=nearest_neighbors_k)
    if neighbours.indices.shape[0] != len(ids):
        raise ValueError(
            f"the neighbours have {neighbours.indices.shape[0]} rows for {len(ids)} image ids"
        )
    columns = min(nearest_neighbors_k, neighbours.k)
    indices = neighbours.indices[:, :columns]
    similarities = neighbours.similarities[:, :columns]
    keep = (indices >= 0) & (similarities >= threshold)
    rows, slots = np.nonzero(keep)
    if not len(rows):
        return _empty_pairs()
    first, second = ids[rows], ids[indices[rows, slots]]
    pairs = pd.DataFrame(
        {
            "from_id": np.where(first < second, first, second),
            "to_id": np.where(first < second, second, first),
            "similarity": similarities[rows, slots].astype(np.float64),
        }
    )
    pairs = pairs[pairs["from_id"] != pairs["to_id"]]
    # Both directions of a pair carry the same similarity; keep the higher if they ever differ.
    pairs = pairs.sort_values(["from_id", "to_id", "similarity"], ascending=[True, True, False])
    pairs = pairs.drop_duplicates(["from_id", "to_id"], keep="first")
    return pairs.reset_index(drop=True)[PAIR_COLUMNS]


def outlier_values(similarities: np.ndarray, percentile: float) -> np.ndarray:
    """fastdup's outlier value per row of an (N, k) neighbour-similarity table (NaN = no
    neighbour): the lowest similarity among the row's pairs in the lowest `percentile` of all
    pairs, NaN for rows with none. Fewer than MIN_IMAGES_FOR_OUTLIERS rows: no outlier."""
    _check_parameters(percentile=percentile)
    n, k = similarities.shape
    values = np.full(n, np.nan)
    if n < MIN_IMAGES_FOR_OUTLIERS or k == 0:
        return values
    flat = similarities.astype(np.float64).ravel()
    present = np.flatnonzero(~np.isnan(flat))
    cut = round(percentile * len(present))
    if cut == 0:
        return values
    # Ascending similarity; ties in pair order (image, then neighbour rank), as a stable sort.
    lowest = present[np.argsort(flat[present], kind="stable")[:cut]]
    np.fmin.at(values, lowest // k, flat[lowest])
    return values


def within_cluster_neighbours(
    neighbours: Neighbours,
    clusters: np.ndarray,
    k: int,
    unit: UnitRows,
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's k nearest neighbours of its own cluster: (indices, similarities), -1 / NaN
    where the cluster has fewer other images. Taken from the collection's neighbours; rows
    holding fewer than k same-cluster neighbours (of clusters large enough) are searched
    exactly within their cluster."""
    labels = np.asarray(clusters)
    n = neighbours.indices.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"clusters must have one label per image ({n}), got {labels.shape}")
    listed = neighbours.indices
    same = (listed >= 0) & (labels[np.maximum(listed, 0)] == labels[:, None])
    rank = np.cumsum(same, axis=1)
    take = same & (rank <= k)
    indices = np.full((n, k), -1, dtype=np.int32)
    similarities = np.full((n, k), np.nan, dtype=np.float32)
    rows, slots = np.nonzero(take)
    indices[rows, rank[rows, slots] - 1] = listed[rows, slots]
    similarities[rows, rank[rows, slots] - 1] = neighbours.similarities[rows, slots]
    sizes = pd.Series(labels).map(pd.Series(labels).value_counts()).to_numpy()
    short = np.flatnonzero(take.sum(axis=1) < np.minimum(k, sizes - 1))
    for cluster in np.unique(labels[short]):
        queries = short[labels[short] == cluster]
        members = np.flatnonzero(labels == cluster)
        found, found_similarities = exact_neighbours(unit, queries, k, candidates=members)
        indices[queries], similarities[queries] = found, found_similarities
    return indices, similarities


def near_duplicates(
    image_ids: Sequence[str],
    embeddings: np.ndarray,
    threshold: float = 0.9,
    percentile: float = 0.05,
    nearest_neighbors_k: int = DEFAULT_NEAREST_NEIGHBORS_K,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
) -> NearDuplicates:
    """Similar pairs and outliers of one set of embeddings (its own neighbour search)."""
    ids = _validated_ids(image_ids)
    matrix = _validated_embeddings(embeddings, len(ids))
    _check_parameters(threshold, percentile, nearest_neighbors_k)
    if len(ids) < 2:
        return NearDuplicates(_empty_pairs(), _empty_outliers())
    found = cosine_neighbours(matrix, nearest_neighbors_k, exact_limit=exact_limit)
    pairs = pairs_from_neighbours(ids, found, threshold, nearest_neighbors_k)
    values = outlier_values(found.similarities, percentile)
    return NearDuplicates(pairs, _outlier_frame(ids, values))


def similar_pairs(
    image_ids: Sequence[str],
    embeddings: np.ndarray,
    threshold: float,
    nearest_neighbors_k: int = DEFAULT_NEAREST_NEIGHBORS_K,
) -> pd.DataFrame:
    """fastdup's similar pairs of one set of embeddings: each unordered pair once,
    from_id < to_id, sorted by ids."""
    return near_duplicates(
        image_ids, embeddings, threshold=threshold, nearest_neighbors_k=nearest_neighbors_k
    ).pairs


def outliers(
    image_ids: Sequence[str],
    embeddings: np.ndarray,
    percentile: float,
    nearest_neighbors_k: int = DEFAULT_NEAREST_NEIGHBORS_K,
) -> pd.DataFrame:
    """fastdup's outliers of one set of embeddings: image_id and the similarity value,
    sorted by image_id."""
    return near_duplicates(
        image_ids, embeddings, percentile=percentile, nearest_neighbors_k=nearest_neighbors_k
    ).outliers


def _outlier_frame(ids: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    flagged = ~np.isnan(values)
    frame = pd.DataFrame({"image_id": ids[flagged], "outlier_distance": values[flagged]})
    frame = frame.sort_values("image_id").reset_index(drop=True)
    return frame[OUTLIER_COLUMNS] if len(frame) else _empty_outliers()


def _check_parameters(
    threshold: float = 0.9, percentile: float = 0.05, nearest_neighbors_k: int = 1
) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not 0 < percentile < 1:
        raise ValueError(f"percentile must be in (0, 1), got {percentile}")
    if nearest_neighbors_k < 1:
        raise ValueError(f"nearest_neighbors_k must be at least 1, got {nearest_neighbors_k}")


def _validated_ids(image_ids: Sequence[str]) -> np.ndarray:
    ids = np.array([str(image_id) for image_id in image_ids], dtype=object)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(image_id for image_id in ids if image_id in seen or seen.add(image_id))
        raise ValueError(f"image_ids are not unique, e.g. {duplicate!r}")
    return ids


def _validated_embeddings(embeddings: np.ndarray, n_ids: int) -> np.ndarray:
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        shape = getattr(embeddings, "shape", None)
        raise ValueError(f"embeddings must be a 2-D numpy array (images x features), got {shape}")
    if embeddings.shape[0] != n_ids:
        raise ValueError(
            f"embeddings has {embeddings.shape[0]} rows but there are {n_ids} image ids"
        )
    # A sum is NaN or infinite when any value is (no N x D temporary).
    if embeddings.size and not np.isfinite(embeddings.sum(dtype=np.float64)):
        raise ValueError("embeddings contain NaN or infinite values")
    return embeddings


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "from_id": pd.Series(dtype=object),
            "to_id": pd.Series(dtype=object),
            "similarity": pd.Series(dtype=np.float64),
        }
    )


def _empty_outliers() -> pd.DataFrame:
    return pd.DataFrame(
        {"image_id": pd.Series(dtype=object), "outlier_distance": pd.Series(dtype=np.float64)}
    )
