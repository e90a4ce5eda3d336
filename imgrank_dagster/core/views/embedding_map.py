"""A 2-D map of the image embeddings (PixPlot-like), computed with scikit-learn.

Rows are L2-normalised first (fastdup's similarities are cosine similarities, so direction is
what matters), reduced with PCA, then laid out with t-SNE. t-SNE costs about O(n log n) with a
large constant; above `tsne_max_images` the PCA's first two components are the map instead.
The result is seeded (same input, same map) and scaled into the unit square with the aspect
ratio kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

TSNE_MAX_IMAGES = 2000  # about 20 s on 2 cores; larger collections get the PCA map
PCA_DIMENSIONS = 50  # t-SNE input, as usual for high-dimensional embeddings
DEFAULT_PERPLEXITY = 30.0
MIN_TSNE_IMAGES = 6  # t-SNE needs perplexity < n; below this PCA is as good
MAP_COLUMNS = ["image_id", "x", "y"]


def embedding_map(
    embeddings: np.ndarray, seed: int = 0, tsne_max_images: int = TSNE_MAX_IMAGES
) -> tuple[np.ndarray, str]:
    """(N x 2 points in [0, 1], method) for N x D embeddings; method is "tsne" or "pca"."""
    matrix = _validated(embeddings)
    if tsne_max_images < 0:
        raise ValueError(f"tsne_max_images must be >= 0, got {tsne_max_images}")
    count = matrix.shape[0]
    if count == 1:
        return np.full((1, 2), 0.5), "pca"
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms == 0, 1.0, norms)
    components = min(PCA_DIMENSIONS, count, unit.shape[1])
    reduced = PCA(n_components=components, random_state=seed).fit_transform(unit)
    if MIN_TSNE_IMAGES <= count <= tsne_max_images:
        perplexity = min(DEFAULT_PERPLEXITY, (count - 1) / 3)
        points = TSNE(
            n_components=2, init="pca", perplexity=perplexity, random_state=seed
        ).fit_transform(reduced)
        method = "tsne"
    else:
        points = reduced[:, :2] if reduced.shape[1] >= 2 else np.hstack([reduced, reduced * 0])
        method = "pca"
    return _unit_square(points), method


def embedding_map_frame(
    image_ids: list[str] | pd.Series,
    embeddings: np.ndarray,
    seed: int = 0,
    tsne_max_images: int = TSNE_MAX_IMAGES,
) -> tuple[pd.DataFrame, str]:
    """The map as a frame (image_id, x, y), and the method used."""
    ids = pd.Series(image_ids, dtype=object).reset_index(drop=True)
    if len(ids) != np.shape(embeddings)[0]:
        raise ValueError(
            f"image_ids ({len(ids)}) and embeddings ({np.shape(embeddings)[0]} rows) differ "
            "in length"
        )
    if ids.duplicated().any():
        raise ValueError(f"image_ids are not unique, e.g. {ids[ids.duplicated()].iloc[0]!r}")
    points, method = embedding_map(embeddings, seed, tsne_max_images)
    frame = pd.DataFrame({"image_id": ids, "x": points[:, 0], "y": points[:, 1]})
    return frame[MAP_COLUMNS], method


def _validated(embeddings: np.ndarray) -> np.ndarray:
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty N x D matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return matrix


def _unit_square(points: np.ndarray) -> np.ndarray:
    """Scale into [0, 1] x [0, 1], centred, with one factor for both axes (no distortion)."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = float((high - low).max())
    if span == 0:
        return np.full_like(points, 0.5, dtype=np.float64)
    scaled = (points - low) / span
    return scaled + (1 - scaled.max(axis=0)) / 2
