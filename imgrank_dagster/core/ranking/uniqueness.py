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

Scores are computed in the input's floating dtype (float32 embeddings stay float32, as in
FiftyOne) with the same operations: on float32 embeddings (40 x 24 and 300 x 576) the result
was bit-identical to fiftyone.brain.compute_uniqueness; float64 input differs by about 1e-7.
"""

from __future__ import annotations

import numpy as np

# FiftyOne's constants.
NEIGHBOUR_WEIGHTS = np.array([0.6, 0.3, 0.1])
# A largest score below this is float32 rounding noise: every image has three exact twins.
NOISE_SCORE = 1e-6
_NEIGHBOURS = len(NEIGHBOUR_WEIGHTS)  # FiftyOne's K = 3, queried as K + 1 = 4 neighbours
_MAX_PRECOMPUTE_DISTS = 15_000  # FiftyOne switches from cosine to euclidean-on-unit above this
# Above _MAX_PRECOMPUTE_DISTS: neighbours recomputed exactly among this many closest candidates.
_EUCLIDEAN_CANDIDATES = 8
# Rows of the distance matrix held at once.
_CHUNK_ELEMENTS = 20_000_000


def fiftyone_uniqueness(embeddings: np.ndarray) -> np.ndarray:
    """FiftyOne uniqueness of one set of embeddings (N x D); float64 scores in [0, 1]."""
    matrix = _validated(embeddings)
    n_samples = matrix.shape[0]
    if n_samples <= _NEIGHBOURS:
        return np.ones(n_samples)
    if not np.issubdtype(matrix.dtype, np.floating):
        matrix = matrix.astype(np.float64)
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", centred, centred))
    # sklearn.preprocessing.normalize leaves all-zero rows at zero.
    unit = centred / np.where(norms == 0, 1, norms)[:, None]
    euclidean = n_samples > _MAX_PRECOMPUTE_DISTS
    nearest = np.zeros((n_samples, _NEIGHBOURS + 1))
    step = max(16, _CHUNK_ELEMENTS // n_samples)
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        rows = np.arange(stop - start)
        distances = np.clip(1 - unit[start:stop] @ unit.T, 0, 2)
        distances[rows, np.arange(start, stop)] = np.inf  # not oneself
        if not euclidean:
            nearest[start:stop] = _smallest(distances, _NEIGHBOURS + 1)
            continue
        # sklearn's neighbour search computes these euclidean distances in float64; 2 - 2 cos
        # in float32 would lose near-duplicates' small distances, so recompute the closest
        # candidates exactly from differences.
        candidates = np.argpartition(distances, _EUCLIDEAN_CANDIDATES - 1, axis=1)
        candidates = candidates[:, :_EUCLIDEAN_CANDIDATES]
        difference = unit[candidates].astype(np.float64) - unit[start:stop, None, :]
        exact = np.sqrt(np.einsum("ijk,ijk->ij", difference, difference))
        nearest[start:stop] = np.sort(exact, axis=1)[:, : _NEIGHBOURS + 1]
    # Fewer than 4 others (a set of 4): the missing neighbour is inf; it contributes 0.
    nearest[~np.isfinite(nearest)] = 0.0
    scores = np.mean(nearest[:, 1:] * NEIGHBOUR_WEIGHTS, axis=1)
    largest = scores.max()
    if largest < NOISE_SCORE:
        return np.zeros(n_samples)
    return scores / largest


def uniqueness_within_clusters(embeddings: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """FiftyOne uniqueness computed separately within each cluster (one score per row)."""
    matrix = _validated(embeddings)
    labels = np.asarray(clusters)
    if labels.shape != (matrix.shape[0],):
        raise ValueError(
            f"clusters must have one label per embedding row ({matrix.shape[0]}), "
            f"got shape {labels.shape}"
        )
    scores = np.empty(matrix.shape[0])
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        scores[members] = fiftyone_uniqueness(matrix[members])
    return scores


def _smallest(distances: np.ndarray, count: int) -> np.ndarray:
    """The `count` smallest values of each row, ascending (inf pads short rows)."""
    if distances.shape[1] <= count:
        padded = np.full((distances.shape[0], count), np.inf, dtype=distances.dtype)
        padded[:, : distances.shape[1]] = distances
        return np.sort(padded, axis=1)
    part = np.partition(distances, count - 1, axis=1)[:, :count]
    return np.sort(part, axis=1)


def _validated(embeddings: np.ndarray) -> np.ndarray:
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        shape = getattr(embeddings, "shape", None)
        raise ValueError(f"embeddings must be a 2-D numpy array (images x features), got {shape}")
    if embeddings.size and not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return embeddings
