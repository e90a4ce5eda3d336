"""FiftyOne Brain's uniqueness, re-implemented in numpy and applied within each cluster.

What `fiftyone.brain.compute_uniqueness(samples, embeddings=X)` does (fiftyone-brain 0.21,
`internal/core/uniqueness.py` and the sklearn similarity backend, `internal/core/sklearn.py`):

1. With 3 samples or fewer every sample scores 1.
2. The embeddings of the samples it is called on are centred: X - X.mean(axis=0) (so within a
   cluster, the cluster's own mean is removed).
3. Up to 15,000 samples: the full cosine distance matrix (sklearn: normalise rows, zero rows
   stay zero; 1 - cosine similarity, clipped to [0, 2]) with the diagonal excluded; above
   15,000: a nearest-neighbour search on the unit-normalised centred embeddings, which returns
   *euclidean* distances between unit vectors (sqrt(2 * cosine distance)) - FiftyOne does not
   convert them back, so the scale changes above that size; mirrored here.
4. The 4 nearest other samples per row; score = mean(d[:, 1:4] * [0.6, 0.3, 0.1]) - the
   nearest neighbour is dropped, so an image with exactly one twin is not penalised.
5. Divided by the largest score of the set.

Choices where FiftyOne gives no usable number:
- exactly 4 samples: FiftyOne's 4th "neighbour" is the excluded diagonal (NaN), so every
  score is NaN. Here the missing neighbour contributes 0 (the same for every row, so the
  ranking within the set is what the 2nd and 3rd neighbours say).
- a set whose largest score is 0 up to rounding (every sample has at least three exact
  twins): FiftyOne divides rounding noise by its maximum (arbitrary scores near 1) or 0 by 0
  (NaN); here every score is 0. "Up to rounding" means a largest score below NOISE_SCORE,
  which only happens when every image has three (near-)exact twins.

How it is computed here: the 4 nearest neighbours come from the project's one neighbour
search (core.ranking.index, FAISS) run on the set's centred rows: the collection's neighbour
graph cannot be reused, because centring moves every cluster into its own space. The search
is exact up to `exact_limit` images per set (DEFAULT_EXACT_LIMIT, 10,000; the result equals
fiftyone.brain.compute_uniqueness within 1e-6, tested); a larger set uses FAISS's inverted
file index, and then the scores are those of the neighbours it finds (its recall against
exact search is reported with the scores). The distances to the chosen neighbours are then
recomputed in the input's floating dtype with FiftyOne's operations (float32 embeddings stay
float32, as in FiftyOne; above 15,000 the euclidean distances are computed in float64 from
differences, as sklearn's search does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgrank_dagster.core.ranking.index import UnitRows, cosine_neighbours

# FiftyOne's constants.
NEIGHBOUR_WEIGHTS = np.array([0.6, 0.3, 0.1])
# A largest score below this is float32 rounding noise: every image has three exact twins.
NOISE_SCORE = 1e-6
_NEIGHBOURS = len(NEIGHBOUR_WEIGHTS)  # FiftyOne's K = 3, queried as K + 1 = 4 neighbours
_MAX_PRECOMPUTE_DISTS = 15_000  # FiftyOne switches from cosine to euclidean-on-unit above this
# Sets (clusters) up to this size are searched exactly: FiftyOne's scores. An exact search
# costs N^2 per set; at a million images in 50 clusters that alone would be as much work as
# the whole collection's neighbour graph.
DEFAULT_EXACT_LIMIT = 10_000
# Rows whose neighbour distances are recomputed at once.
_BLOCK = 4_096


@dataclass(frozen=True, eq=False)
class Uniqueness:
    """Scores per row, and how each cluster's neighbours were searched."""

    scores: np.ndarray  # float64 in [0, 1]
    searches: dict[int, dict[str, Any]] = field(default_factory=dict)  # cluster -> method, ...


def fiftyone_uniqueness(
    embeddings: np.ndarray, *, exact_limit: int = DEFAULT_EXACT_LIMIT, seed: int = 0
) -> np.ndarray:
    """FiftyOne uniqueness of one set of embeddings (N x D); float64 scores in [0, 1]."""
    scores, _ = _uniqueness(_validated(embeddings), None, exact_limit, seed)
    return scores


def uniqueness_within_clusters(
    embeddings: np.ndarray,
    clusters: np.ndarray,
    *,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    seed: int = 0,
) -> np.ndarray:
    """FiftyOne uniqueness computed separately within each cluster (one score per row)."""
    return uniqueness_by_cluster(embeddings, clusters, exact_limit=exact_limit, seed=seed).scores


def uniqueness_by_cluster(
    embeddings: np.ndarray,
    clusters: np.ndarray,
    *,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    seed: int = 0,
) -> Uniqueness:
    """`uniqueness_within_clusters`, with each cluster's search method (and recall when
    approximate)."""
    matrix = _validated(embeddings)
    labels = np.asarray(clusters)
    if labels.shape != (matrix.shape[0],):
        raise ValueError(
            f"clusters must have one label per embedding row ({matrix.shape[0]}), "
            f"got shape {labels.shape}"
        )
    scores = np.empty(matrix.shape[0])
    searches: dict[int, dict[str, Any]] = {}
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        scores[members], searches[int(cluster)] = _uniqueness(matrix, members, exact_limit, seed)
    return Uniqueness(scores, searches)


def _uniqueness(
    matrix: np.ndarray, rows: np.ndarray | None, exact_limit: int, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Scores of matrix[rows] (all rows when None) and how their neighbours were searched."""
    n_samples = matrix.shape[0] if rows is None else len(rows)
    if n_samples <= _NEIGHBOURS:
        return np.ones(n_samples), {"images": n_samples, "method": "none"}
    if not np.issubdtype(matrix.dtype, np.floating):
        matrix = matrix.astype(np.float64)
    if rows is not None and n_samples <= exact_limit:
        matrix, rows = matrix[rows], None  # a small copy: the same mean as FiftyOne's
    if rows is None:
        centre = matrix.mean(axis=0)
    else:  # no copy of a large cluster: its mean in float64, block by block
        total = np.zeros(matrix.shape[1])
        for start in range(0, n_samples, _BLOCK):
            total += matrix[rows[start : start + _BLOCK]].sum(axis=0, dtype=np.float64)
        centre = (total / n_samples).astype(matrix.dtype)
    found = cosine_neighbours(
        UnitRows(matrix, rows, centre),
        min(_NEIGHBOURS + 1, n_samples - 1),
        exact_limit=exact_limit,
        seed=seed,
    )
    unit = UnitRows(matrix, rows, centre, dtype=matrix.dtype)
    euclidean = n_samples > _MAX_PRECOMPUTE_DISTS
    nearest = np.zeros((n_samples, _NEIGHBOURS + 1))
    columns = found.k
    for start in range(0, n_samples, _BLOCK):
        stop = min(start + _BLOCK, n_samples)
        mine = unit[slice(start, stop)]
        others = unit[found.indices[start:stop].ravel()].reshape(stop - start, columns, -1)
        if euclidean:
            # sklearn's neighbour search computes these in float64 from differences.
            difference = others.astype(np.float64) - mine[:, None, :]
            distances = np.sqrt(np.einsum("ijk,ijk->ij", difference, difference))
        else:
            distances = np.clip(1 - np.einsum("ik,ijk->ij", mine, others), 0, 2)
        # Ascending, as FiftyOne's neighbour lists (ties between neighbours do not matter).
        nearest[start:stop, :columns] = np.sort(distances, axis=1)
    # Fewer than 4 others (a set of 4): the missing neighbour contributes 0.
    scores = np.mean(nearest[:, 1:] * NEIGHBOUR_WEIGHTS, axis=1)
    largest = scores.max()
    search = {"images": n_samples, "method": found.method}
    if found.recall is not None:
        search["recall"] = round(found.recall, 4)
    if largest < NOISE_SCORE:
        return np.zeros(n_samples), search
    return scores / largest, search


def _validated(embeddings: np.ndarray) -> np.ndarray:
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        shape = getattr(embeddings, "shape", None)
        raise ValueError(f"embeddings must be a 2-D numpy array (images x features), got {shape}")
    # A sum is NaN or infinite when any value is (no N x D temporary).
    if embeddings.size and not np.isfinite(embeddings.sum(dtype=np.float64)):
        raise ValueError("embeddings contain NaN or infinite values")
    return embeddings
