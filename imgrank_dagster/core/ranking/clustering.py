"""KMeans clustering of the feature matrix with the study's choice of k (elbow + silhouette).

The study clusters the image embeddings with KMeans. k is either fixed or chosen in two steps:

1. Elbow: KMeans for k in [k_min, k_max] (k_max clipped to N - 1); the inertia curve's
   knee is found with the Kneedle idea: normalise k and inertia to [0, 1] and take the k whose
   point lies farthest below the chord joining the first and last points of the curve.
2. Silhouette: the mean silhouette of every k within +-silhouette_window of the elbow (and
   inside the swept range); the best one wins (ties: the smaller k).

The range grows with the collection: unless k_max is set, it is `sweep_k_max(N)` =
max(20, round(sqrt(N) / 2)): 20 up to 1,600 images, 52 at 11,000, 158 at 100,000, 500 at
1,000,000; at k_max an average cluster still holds 2 sqrt(N) images (210 at 11,000). Kneedle
looks for the knee relative to the range, so the range must reach well past the k it should
find: with 26 planted clusters in 11,000 images, a range ending at 33 put the elbow at 17 (the
curve's bend before 26 outweighs the short flat part after it), one ending at 52 finds 26, the
study's k on its 11,084 images (tested).

Cost control (KMeans seeding and the silhouette dominate; the silhouette is O(N^2)):
- up to DENSE_SWEEP_MAX values of k the sweep tries every k; a longer range is swept on a
  coarse grid (every k up to k_min + 10, then steps of about 25 %), then refined: the gaps
  beside the elbow are halved until the elbow's neighbours are tried, and its silhouette
  window is filled (Kneedle's chord joins the range's ends, so added points never move it);
- the sweep fits KMeans once per k on all images, or on a seeded sample of SWEEP_SAMPLE_MAX
  images when there are more; every k starts from one k-means++ seeding of the largest k's
  centres (its first k centres: k-means++ picks centres one after another, so that prefix is
  itself a k-means++ seeding, made with the largest k's number of local trials);
- from FAISS_KMEANS_FROM images each fit is FAISS's k-means (SWEEP_ITERATIONS Lloyd
  iterations in the sweep, KMEANS_ITERATIONS more for the final fit, every image used,
  deterministic for the seed and thread count) instead of scikit-learn's KMeans (iterated to
  convergence);
- the final fit at the chosen k always uses all images: with scikit-learn, the best of
  FINAL_N_INIT k-means++ runs, or, above SWEEP_SAMPLE_MAX images, one run started from the
  sample fit's centres for that k; with FAISS, Lloyd iterations from the sweep's centres for
  that k (a fixed k: from a k-means++ seeding);
- the mean silhouette used to choose k is computed on a seeded sample of at most
  silhouette_sample_size images (one distance matrix, reused for every k);
- per-image silhouettes are exact (euclidean, sklearn.metrics.silhouette_samples' definition;
  each pair's distance computed once, in blocks) up to exact_silhouette_max images;
  above that they use the simplified silhouette, (b - a) / max(a, b) with a = distance to the
  own centroid and b = distance to the nearest other centroid.
  ClusteringResult.silhouette_method says which was used.

Degenerate inputs (fewer than 3 images, or fewer than 2 distinct embeddings) give one cluster
(label 0), silhouette 0 for every image, and empty inertia/silhouette curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

# Above this many images the k sweep runs on a seeded sample of this size.
SWEEP_SAMPLE_MAX = 20_000
FINAL_N_INIT = 3
DEFAULT_K_MAX = 20  # the sweep's upper end for collections up to 1,600 images
# Ranges of more k than this are swept on a coarse grid refined around its elbow.
DENSE_SWEEP_MAX = 20
COARSE_STEP = 1.25
# From this many images KMeans runs on FAISS (sweep and final fit); Lloyd iterations per
# sweep fit (enough to compare k) and for the final fit.
FAISS_KMEANS_FROM = 10_000
SWEEP_ITERATIONS = 10
KMEANS_ITERATIONS = 10  # the final fit starts from the sweep's centres for its k
# Distance-matrix entries held at once (float64) by the chunked computations: 16 MB, under
# glibc's largest mmap threshold, so each block reuses the last one's memory instead of
# mapping (and page-faulting) new pages.
_CHUNK_ELEMENTS = 2_000_000

SilhouetteMethod = Literal["exact", "simplified", "none"]


@dataclass(frozen=True, eq=False)
class ClusteringResult:
    """Clusters of one collection. Arrays are aligned with the rows of the embedding matrix."""

    labels: np.ndarray  # int64, 0..k-1; cluster 0 is the largest (ties: first image first)
    centroid_distance: np.ndarray  # float64, euclidean distance to the own centroid
    silhouette: np.ndarray  # float64 in [-1, 1], see silhouette_method
    k: int
    centroids: np.ndarray  # float32, k x D, row i = centroid of cluster i
    inertia_by_k: dict[int, float]  # empty when k was fixed or the input is degenerate
    silhouette_by_k: dict[int, float]  # mean silhouette of the seeded sample per swept k
    elbow_k: int | None  # None when k was fixed or the input is degenerate
    silhouette_method: SilhouetteMethod
    notes: tuple[str, ...]  # how k was chosen and any clipping, for metadata and reports


def validate_embeddings(embeddings: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """Return embeddings as a C-contiguous float32 N x D array or raise a clear ValueError."""
    if not isinstance(embeddings, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(embeddings).__name__}")
    if embeddings.ndim != 2:
        raise ValueError(f"{name} must be 2-D (images x features), got shape {embeddings.shape}")
    if embeddings.shape[1] == 0:
        raise ValueError(f"{name} has no feature columns (shape {embeddings.shape})")
    if not np.issubdtype(embeddings.dtype, np.number) or np.issubdtype(
        embeddings.dtype, np.complexfloating
    ):
        raise ValueError(f"{name} must be real numbers, got dtype {embeddings.dtype}")
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    # A sum is NaN or infinite when any value is: no N x D temporary unless something is wrong.
    if matrix.size and not np.isfinite(matrix.sum(dtype=np.float64)):
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        raise ValueError(
            f"{name} has NaN or infinite values in {bad.size} row(s), first at row {bad[0]}"
        )
    return matrix


def sweep_k_max(n_images: int) -> int:
    """The sweep's default upper end for a collection of n_images (see the module docstring)."""
    return max(DEFAULT_K_MAX, round(np.sqrt(max(n_images, 0)) / 2))


def choose_k_and_cluster(
    embeddings: np.ndarray,
    *,
    k: int | None = None,
    k_min: int = 2,
    k_max: int | None = None,
    silhouette_window: int = 2,
    silhouette_sample_size: int = 5000,
    exact_silhouette_max: int = 10_000,
    seed: int = 0,
) -> ClusteringResult:
    """Cluster the rows of embeddings (N x D) with KMeans; k fixed or elbow + silhouette.

    k: a fixed number of clusters, or None to choose it in [k_min, k_max] (elbow, then the best
    mean silhouette within +-silhouette_window of it); k_max None: `sweep_k_max(N)`.
    silhouette_sample_size and exact_silhouette_max bound the cost (see the module
    docstring); seed makes it repeatable.
    """
    fixed_k = k
    matrix = validate_embeddings(embeddings)
    n_images = matrix.shape[0]
    derived = k_max is None
    if k_max is None:
        k_max = max(k_min, sweep_k_max(n_images))
    if k_min > k_max:
        raise ValueError(f"k_min ({k_min}) must not exceed k_max ({k_max})")
    enough = max(k_max, fixed_k or 0) + 1
    distinct = _count_distinct_rows(matrix, enough)
    if n_images < 3 or distinct < 2:
        return _single_cluster(matrix, f"{n_images} image(s), {distinct} distinct: one cluster")

    notes: list[str] = []
    engine = "faiss" if n_images >= FAISS_KMEANS_FROM else "sklearn"
    inertia_by_k: dict[int, float] = {}
    silhouette_by_k: dict[int, float] = {}
    elbow_k: int | None = None
    start_centres: np.ndarray | None = None
    # KMeans cannot make more non-empty clusters than distinct points; silhouette needs k < N.
    k_cap = min(n_images - 1, distinct)
    if fixed_k is not None:
        k = min(fixed_k, k_cap)
        notes.append(f"k fixed at {fixed_k}")
        if k != fixed_k:
            notes.append(f"k clipped to {k}: only {n_images} images, {distinct} distinct")
    else:
        if derived:
            notes.append(f"k range [{k_min}, {k_max}]: k_max = max(20, sqrt(N) / 2)")
        k_high = min(k_max, k_cap)
        k_low = min(k_min, k_high)
        if (k_low, k_high) != (k_min, k_max):
            notes.append(
                f"k range [{k_min}, {k_max}] clipped to [{k_low}, {k_high}]: "
                f"{n_images} images, {distinct} distinct"
            )
        sweep = _sweep(
            matrix,
            k_low,
            k_high,
            silhouette_window=silhouette_window,
            seed=seed,
            sample_size=silhouette_sample_size,
            engine=engine,
        )
        inertia_by_k, silhouette_by_k = sweep.inertia_by_k, sweep.silhouette_by_k
        elbow_k = sweep.elbow_k
        if len(inertia_by_k) < k_high - k_low + 1:
            notes.append(
                f"k swept on a coarse grid refined around the elbow: "
                f"{len(inertia_by_k)} of the {k_high - k_low + 1} values of k"
            )
        window = [
            candidate
            for candidate in sorted(silhouette_by_k)
            if abs(candidate - elbow_k) <= silhouette_window
        ]
        # max() keeps the first maximum: ties go to the smaller k.
        k = max(window, key=lambda candidate: silhouette_by_k[candidate])
        sampled = min(n_images, silhouette_sample_size)
        notes.append(
            f"elbow (Kneedle, max distance below the chord) at k={elbow_k}; best mean "
            f"silhouette ({sampled}-image sample) within +-{silhouette_window} "
            f"at k={k}"
        )
        if sweep.sampled:
            notes.append(
                f"k sweep on a seeded sample of {SWEEP_SAMPLE_MAX} images; final KMeans on "
                f"all {n_images} started from the sample's centres"
            )
        if sweep.sampled or engine == "faiss":
            start_centres = sweep.centres_by_k[k]

    if engine == "faiss":
        notes.append(
            f"KMeans on FAISS ({SWEEP_ITERATIONS} Lloyd iterations per sweep fit, "
            f"{KMEANS_ITERATIONS} for the final fit)"
        )
        if start_centres is None:
            start_centres = _kmeans_plusplus(matrix, k, seed)
        fitted, centres, _ = _fit(matrix, k, start_centres, seed, engine)
    else:
        from sklearn.cluster import KMeans  # heavy: imported when clustering runs

        if start_centres is None:
            model = KMeans(n_clusters=k, n_init=FINAL_N_INIT, random_state=seed)
        else:
            model = KMeans(n_clusters=k, init=start_centres, n_init=1, random_state=seed)
        fitted, centres = model.fit_predict(matrix), model.cluster_centers_
    labels, centroids = _ordered_clusters(fitted, centres, k)
    centroid_distance = _centroid_distances(matrix, centroids, labels)
    if n_images <= exact_silhouette_max:
        silhouette = silhouette_exact(matrix, labels, k)
        method: SilhouetteMethod = "exact"
    else:
        silhouette = silhouette_simplified(matrix, centroids, labels)
        method = "simplified"
        notes.append(
            f"per-image silhouette simplified (centroids): more than {exact_silhouette_max} images"
        )
    return ClusteringResult(
        labels=labels,
        centroid_distance=centroid_distance,
        silhouette=silhouette,
        k=k,
        centroids=centroids,
        inertia_by_k=inertia_by_k,
        silhouette_by_k=silhouette_by_k,
        elbow_k=elbow_k,
        silhouette_method=method,
        notes=tuple(notes),
    )


def clustering_diagnostics(result: ClusteringResult) -> dict[str, Any]:
    """How k was chosen, JSON-ready: k, elbow_k, inertia and mean silhouette per swept k,
    silhouette_method and the notes. Stored with cluster_assignments; plots and reports read it.
    """
    return {
        "k": int(result.k),
        "elbow_k": None if result.elbow_k is None else int(result.elbow_k),
        "inertia_by_k": {str(k): float(v) for k, v in result.inertia_by_k.items()},
        "silhouette_by_k": {str(k): float(v) for k, v in result.silhouette_by_k.items()},
        "silhouette_method": str(result.silhouette_method),
        "notes": list(result.notes),
    }


def cluster_assignments_frame(image_ids: Sequence[str], result: ClusteringResult) -> pd.DataFrame:
    """The cluster_assignments table: image_id, cluster, centroid_distance, silhouette."""
    ids = pd.Series(list(image_ids), dtype=object)
    if len(ids) != len(result.labels):
        raise ValueError(
            f"image_ids has {len(ids)} entries but the clustering has {len(result.labels)} images"
        )
    if ids.duplicated().any():
        raise ValueError(f"image_ids are not unique, e.g. {ids[ids.duplicated()].iloc[0]!r}")
    return pd.DataFrame(
        {
            "image_id": ids.to_numpy(),
            "cluster": result.labels.astype(np.int64),
            "centroid_distance": result.centroid_distance.astype(np.float64),
            "silhouette": result.silhouette.astype(np.float64),
        }
    )


def find_elbow(inertia_by_k: dict[int, float]) -> int:
    """Knee of a decreasing inertia curve (Kneedle: farthest point below the normalised chord).

    k and inertia are scaled to [0, 1]; the chord joins the first and last points; the elbow is
    the k whose point has the largest distance below that chord. A flat curve, or one with
    fewer than three points or no point below the chord, gives the smallest k.
    """
    if not inertia_by_k:
        raise ValueError("inertia_by_k is empty: no k to choose from")
    ks = np.array(sorted(inertia_by_k), dtype=np.float64)
    inertia = np.array([inertia_by_k[int(k)] for k in ks], dtype=np.float64)
    if len(ks) < 3 or np.ptp(inertia) == 0:
        return int(ks[0])
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    y = (inertia - inertia.min()) / np.ptp(inertia)
    dx, dy = x[-1] - x[0], y[-1] - y[0]
    # Signed cross product: negative below the chord (for a curve running left to right).
    below = -(dx * (y - y[0]) - dy * (x - x[0])) / np.hypot(dx, dy)
    best = int(np.argmax(below))
    return int(ks[best]) if below[best] > 0 else int(ks[0])


def silhouette_exact(matrix: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-image euclidean silhouette (sklearn's definition), chunked: O(N^2 D) time.

    Each pair's distance is computed once (row block x the rows from it onwards) and added to
    both images' per-cluster sums. Memory stays near _CHUNK_ELEMENTS float64 values whatever
    N is. An image alone in its cluster scores 0, as in sklearn.metrics.silhouette_samples.
    """
    n_images = matrix.shape[0]
    one_hot = _one_hot(labels, k)
    squared_norms = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)
    sums = np.zeros((n_images, k))  # summed distance from each image to each cluster
    step = max(64, _CHUNK_ELEMENTS // max(n_images, 1))
    for start in range(0, n_images, step):
        stop = min(start + step, n_images)
        distances = _euclidean(matrix[start:stop], matrix[start:], squared_norms[start:])
        # Exact zeros on the diagonal: the Gram trick leaves rounding noise there.
        index = np.arange(stop - start)
        distances[index, index] = 0.0
        sums[start:stop] += distances @ one_hot[start:]
        sums[stop:] += distances[:, stop - start :].T @ one_hot[start:stop]
    return _silhouette_block(sums, labels, np.bincount(labels, minlength=k))


def silhouette_simplified(
    matrix: np.ndarray, centroids: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Simplified silhouette: a = distance to own centroid, b = to the nearest other centroid."""
    k = centroids.shape[0]
    if k < 2:
        return np.zeros(matrix.shape[0])
    result = np.empty(matrix.shape[0])
    centroid_sq = np.einsum("ij,ij->i", centroids, centroids, dtype=np.float64)
    step = max(64, _CHUNK_ELEMENTS // k)
    for start in range(0, matrix.shape[0], step):
        rows = matrix[start : start + step]
        own = labels[start : start + len(rows)]
        distance = _euclidean(rows, centroids, centroid_sq)
        a = distance[np.arange(len(rows)), own]
        distance[np.arange(len(rows)), own] = np.inf
        b = distance.min(axis=1)
        denominator = np.maximum(a, b)
        with np.errstate(invalid="ignore", divide="ignore"):
            result[start : start + len(rows)] = np.where(denominator > 0, (b - a) / denominator, 0)
    return result


@dataclass(frozen=True, eq=False)
class _Sweep:
    inertia_by_k: dict[int, float]
    silhouette_by_k: dict[int, float]
    centres_by_k: dict[int, np.ndarray]
    elbow_k: int
    sampled: bool  # fitted on a sample of SWEEP_SAMPLE_MAX images, not on all


def sweep_grid(k_low: int, k_high: int) -> list[int]:
    """The k a sweep tries first: every k for a short range, else a coarse grid (every k up
    to k_low + 10, then steps of about COARSE_STEP), both ends included."""
    if k_high - k_low + 1 <= DENSE_SWEEP_MAX:
        return list(range(k_low, k_high + 1))
    grid = list(range(k_low, k_low + 11))
    while grid[-1] < k_high:
        grid.append(min(k_high, max(grid[-1] + 1, round(grid[-1] * COARSE_STEP))))
    return grid


def _sweep(
    matrix: np.ndarray,
    k_low: int,
    k_high: int,
    *,
    silhouette_window: int,
    seed: int,
    sample_size: int,
    engine: str,
) -> _Sweep:
    """Inertia of a KMeans fit per k, the elbow, and the mean silhouette of a seeded sample
    under each fit (see the module docstring for the grid)."""
    n_images = matrix.shape[0]
    rng = np.random.default_rng(seed)
    sampled = n_images > SWEEP_SAMPLE_MAX
    if sampled:
        matrix = matrix[np.sort(rng.choice(n_images, size=SWEEP_SAMPLE_MAX, replace=False))]
        n_images = SWEEP_SAMPLE_MAX
    if n_images > sample_size:
        sample = np.sort(rng.choice(n_images, size=sample_size, replace=False))
    else:
        sample = np.arange(n_images)
    # float32 halves the cost of the per-k cluster sums; ample precision to compare k.
    sample_distances = _pairwise_euclidean(matrix[sample]).astype(np.float32)
    # One k-means++ seeding of the largest k's centres; every k starts from its first k (see
    # the module docstring).
    seeds = _kmeans_plusplus(matrix, k_high, seed)
    inertia_by_k: dict[int, float] = {}
    silhouette_by_k: dict[int, float] = {}
    centres_by_k: dict[int, np.ndarray] = {}

    def evaluate(ks: list[int]) -> None:
        for k in sorted(set(ks) - set(inertia_by_k)):
            labels, centres, inertia = _fit(
                matrix, k, seeds[:k], seed, engine, iterations=SWEEP_ITERATIONS
            )
            inertia_by_k[k] = inertia
            centres_by_k[k] = centres
            silhouette_by_k[k] = float(
                _silhouette_from_distances(sample_distances, labels[sample], k).mean()
            )

    evaluate(sweep_grid(k_low, k_high))
    elbow_k = find_elbow(inertia_by_k)
    while True:  # refine: halve the gaps beside the elbow, then fill its silhouette window
        tried = sorted(inertia_by_k)
        below = max([k for k in tried if k < elbow_k], default=elbow_k)
        above = min([k for k in tried if k > elbow_k], default=elbow_k)
        wanted = {(below + elbow_k) // 2, (elbow_k + above + 1) // 2}
        wanted |= set(range(max(k_low, elbow_k - silhouette_window), elbow_k))
        wanted |= set(range(elbow_k + 1, min(k_high, elbow_k + silhouette_window) + 1))
        missing = sorted(wanted - set(tried))
        if not missing:
            break
        evaluate(missing)
        elbow_k = find_elbow(inertia_by_k)
    ordered = sorted(inertia_by_k)
    return _Sweep(
        {k: inertia_by_k[k] for k in ordered},
        {k: silhouette_by_k[k] for k in ordered},
        centres_by_k,
        elbow_k,
        sampled,
    )


def _kmeans_plusplus(matrix: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import kmeans_plusplus

    centres, _ = kmeans_plusplus(matrix, n_clusters=k, random_state=seed)
    return centres


def _fit(
    matrix: np.ndarray,
    k: int,
    init: np.ndarray,
    seed: int,
    engine: str,
    iterations: int = KMEANS_ITERATIONS,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One KMeans fit from `init`: (labels, centres, inertia); iterations: FAISS's only."""
    if engine == "sklearn":
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(matrix)
        return model.labels_, model.cluster_centers_, float(model.inertia_)
    from imgrank_dagster.core.ranking.index import faiss_module

    faiss = faiss_module()
    kmeans = faiss.Kmeans(
        matrix.shape[1],
        k,
        niter=iterations,
        seed=seed,
        max_points_per_centroid=max(matrix.shape[0], 1),  # every image, no subsample
        min_points_per_centroid=1,
        verbose=False,
    )
    kmeans.train(matrix, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
    distances, assigned = kmeans.index.search(matrix, 1)
    inertia = float(distances[:, 0].sum(dtype=np.float64))
    return assigned[:, 0].astype(np.int64), kmeans.centroids.copy(), inertia


def _single_cluster(matrix: np.ndarray, note: str) -> ClusteringResult:
    n_images, dim = matrix.shape
    centroids = matrix.mean(axis=0, keepdims=True) if n_images else np.zeros((1, dim), np.float32)
    labels = np.zeros(n_images, dtype=np.int64)
    return ClusteringResult(
        labels=labels,
        centroid_distance=_centroid_distances(matrix, centroids, labels),
        silhouette=np.zeros(n_images),
        k=1,
        centroids=centroids.astype(np.float32),
        inertia_by_k={},
        silhouette_by_k={},
        elbow_k=None,
        silhouette_method="none",
        notes=(note,),
    )


def _ordered_clusters(
    labels: np.ndarray, centroids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters by size (largest = 0), ties by their first image: stable names."""
    sizes = np.bincount(labels, minlength=k)
    first_seen = np.full(k, labels.size)
    np.minimum.at(first_seen, labels, np.arange(labels.size))
    order = np.lexsort((first_seen, -sizes))  # old labels in their new order
    new_label = np.empty(k, dtype=np.int64)
    new_label[order] = np.arange(k)
    return new_label[labels], np.ascontiguousarray(centroids[order], dtype=np.float32)


def _centroid_distances(
    matrix: np.ndarray, centroids: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    result = np.empty(matrix.shape[0])
    step = max(64, _CHUNK_ELEMENTS // matrix.shape[1])
    for start in range(0, matrix.shape[0], step):
        rows = matrix[start : start + step].astype(np.float64)
        difference = rows - centroids[labels[start : start + step]]
        result[start : start + step] = np.sqrt(np.einsum("ij,ij->i", difference, difference))
    return result


def _count_distinct_rows(matrix: np.ndarray, enough: int) -> int:
    """Number of distinct rows, but stop counting once `enough` have been seen."""
    seen: set[bytes] = set()
    for row in matrix:
        seen.add(row.tobytes())
        if len(seen) >= enough:
            break
    return len(seen)


def _euclidean(rows: np.ndarray, others: np.ndarray, others_sq: np.ndarray) -> np.ndarray:
    """Euclidean distances rows x others via the Gram trick (float32 GEMM, float64 result)."""
    rows_sq = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
    distances = (rows @ others.T).astype(np.float64)
    distances *= -2.0
    distances += rows_sq[:, None]
    distances += others_sq[None, :]
    np.maximum(distances, 0.0, out=distances)
    return np.sqrt(distances, out=distances)


def _pairwise_euclidean(matrix: np.ndarray) -> np.ndarray:
    squared_norms = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)
    distances = _euclidean(matrix, matrix, squared_norms)
    np.fill_diagonal(distances, 0.0)
    return distances


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    one_hot = np.zeros((labels.size, k))
    one_hot[np.arange(labels.size), labels] = 1.0
    return one_hot


def _silhouette_from_distances(distances: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Silhouette of every point from a full (N x N) distance matrix."""
    sums = distances @ _one_hot(labels, k).astype(distances.dtype)
    return _silhouette_block(sums.astype(np.float64), labels, np.bincount(labels, minlength=k))


def _silhouette_block(sums: np.ndarray, row_labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """sklearn's silhouette from each row's summed distance to every cluster (rows x k)."""
    counts = counts.astype(np.float64)
    index = np.arange(len(row_labels))
    own_count = counts[row_labels]
    with np.errstate(invalid="ignore", divide="ignore"):
        a = sums[index, row_labels] / np.maximum(own_count - 1, 1)
        means = sums / counts[None, :]
        means[index, row_labels] = np.inf
        means[:, counts == 0] = np.inf  # clusters absent from a sample do not count
        b = means.min(axis=1)
        silhouette = (b - a) / np.maximum(a, b)
    # As sklearn: an image alone in its cluster scores 0, and 0/0 becomes 0; with no other
    # cluster present (possible in a sample) the silhouette is undefined: 0.
    silhouette[(own_count <= 1) | ~np.isfinite(silhouette)] = 0.0
    return silhouette
