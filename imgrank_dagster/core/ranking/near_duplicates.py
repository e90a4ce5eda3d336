"""Near-duplicate pairs and outliers from fastdup, run on precomputed embeddings.

fastdup's v1 API accepts precomputed features: `fd.run(annotations=<file names>,
embeddings=<float32 N x D>)` stores them as its feature file and runs only the
nearest-neighbour part (run_mode 2: no image is read, no image statistics). fastdup needs file
names, so rows are given stable fake names (`000000042.jpg` = row 42) in a temporary work
directory, and the names are mapped back to image ids afterwards. The work directory is
removed when the call returns.

What fastdup computes (checked against exact cosine neighbours on small sets):
- it finds the `nearest_neighbors_k` nearest neighbours of every row (HNSW32 index, cosine;
  approximate: exact in practice on small sets, and not reproducible run to run - on 11,000
  images two runs differ in a handful of the ~15,000 pairs and in a few marginal outliers,
  with or without num_threads=1);
- similarity pairs: neighbour pairs with cosine similarity >= threshold, written in both
  directions; `similar_pairs` keeps each unordered pair once;
- outliers: the neighbour pairs whose similarity falls in the lowest `percentile` of all
  neighbour pairs; `fd.outliers()` keeps, per outlier image, its lowest such similarity. With
  k = 1 that is the similarity to its nearest neighbour; with fastdup's default k = 2 it is the
  similarity to the farthest of its 2 nearest neighbours when both pairs are in the lowest
  percentile. `outliers` reports that value (a cosine similarity: lower = more isolated).
  Note for the score: w_outlier (negative) multiplies this similarity, so among flagged
  images a *more* isolated one (lower similarity) loses *less*.

Tiny inputs: fastdup fails on a single row, so fewer than 2 rows give empty frames without
running it. Outliers need at least MIN_IMAGES_FOR_OUTLIERS rows: with 2 or 3 rows there are
at most 6 neighbour pairs, fastdup's lowest percentile is then one pair, and which of two
equally isolated images it flags depends on row order; an outlier there means nothing.
Cost: a run has a small fixed cost (about 0.1 s; the v1 API's own bookkeeping adds ~20 % at
11,000 rows) and then grows with N and with the data's intrinsic dimension (HNSW build):
576-d rows took ~6 s CPU at 11,000, ~110 s CPU at 100,000 with low intrinsic dimension like
real features, but ~9 CPU-minutes at 100,000 for isotropic gaussian noise (the worst case).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PAIR_COLUMNS = ["from_id", "to_id", "similarity"]
OUTLIER_COLUMNS = ["image_id", "outlier_distance"]
DEFAULT_NEAREST_NEIGHBORS_K = 2  # fastdup's default
MIN_IMAGES_FOR_OUTLIERS = 4


@dataclass(frozen=True)
class FastdupGraph:
    """What one fastdup run reports: similar pairs and outliers, by image id."""

    pairs: pd.DataFrame  # from_id, to_id, similarity
    outliers: pd.DataFrame  # image_id, outlier_distance


def similar_pairs(
    image_ids: Sequence[str],
    embeddings: np.ndarray,
    threshold: float,
    nearest_neighbors_k: int = DEFAULT_NEAREST_NEIGHBORS_K,
) -> pd.DataFrame:
    """fastdup similar pairs: each unordered pair once, from_id < to_id, sorted by ids."""
    return run_fastdup(
        image_ids, embeddings, threshold=threshold, nearest_neighbors_k=nearest_neighbors_k
    ).pairs


def outliers(
    image_ids: Sequence[str],
    embeddings: np.ndarray,
    percentile: float,
    nearest_neighbors_k: int = DEFAULT_NEAREST_NEIGHBORS_K,
) -> pd.DataFrame:
    """fastdup outliers: image_id and the similarity fastdup reports, sorted by image_id."""
    return run_fastdup(
        image_ids, embeddings, percentile=percentile, nearest_neighbors_k=nearest_neighbors_k
    ).outliers


def run_fastdup(
    image_ids: Sequence[str],
    embeddings: np.ndarray,
    threshold: float = 0.9,
    percentile: float = 0.05,
    nearest_neighbors_k: int = DEFAULT_NEAREST_NEIGHBORS_K,
) -> FastdupGraph:
    """One fastdup run on precomputed embeddings; both of its answers, mapped to image ids."""
    ids = _validated_ids(image_ids)
    matrix = _validated_embeddings(embeddings, len(ids))
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not 0 < percentile < 1:
        raise ValueError(f"percentile must be in (0, 1), got {percentile}")
    if nearest_neighbors_k < 1:
        raise ValueError(f"nearest_neighbors_k must be at least 1, got {nearest_neighbors_k}")
    if len(ids) < 2:
        return FastdupGraph(_empty_pairs(), _empty_outliers())

    # Heavy import, done late; importing this package already ran imgrank_dagster/__init__,
    # which sets fastdup's no-telemetry variables.
    import fastdup

    names = [f"{row:09d}.jpg" for row in range(len(ids))]
    row_of_name = {name: row for row, name in enumerate(names)}
    with tempfile.TemporaryDirectory(prefix="imgrank-fastdup-") as tmp:
        input_dir = Path(tmp) / "input"
        input_dir.mkdir()
        # fastdup prints banners on stdout; keep the caller's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            fd = fastdup.create(work_dir=str(Path(tmp) / "work"), input_dir=str(input_dir))
            fd.run(
                annotations=names,
                embeddings=matrix,
                overwrite=True,
                threshold=threshold,
                lower_threshold=percentile,
                nearest_neighbors_k=nearest_neighbors_k,
                verbose=False,
            )
            similarity = fd.similarity()
            outlier_frame = fd.outliers()
    pairs = _pairs_from(similarity, row_of_name, ids)
    if len(ids) < MIN_IMAGES_FOR_OUTLIERS:
        return FastdupGraph(pairs, _empty_outliers())
    return FastdupGraph(pairs, _outliers_from(outlier_frame, row_of_name, ids))


def _pairs_from(
    similarity: pd.DataFrame | None, row_of_name: dict[str, int], ids: np.ndarray
) -> pd.DataFrame:
    if similarity is None or similarity.empty:
        return _empty_pairs()
    first = ids[_rows(similarity["filename_from"], row_of_name)]
    second = ids[_rows(similarity["filename_to"], row_of_name)]
    pairs = pd.DataFrame(
        {
            "from_id": np.where(first < second, first, second),
            "to_id": np.where(first < second, second, first),
            "similarity": similarity["distance"].to_numpy(dtype=np.float64),
        }
    )
    pairs = pairs[pairs["from_id"] != pairs["to_id"]]
    # Both directions of a pair carry the same similarity; keep the higher if they ever differ.
    pairs = pairs.sort_values(["from_id", "to_id", "similarity"], ascending=[True, True, False])
    pairs = pairs.drop_duplicates(["from_id", "to_id"], keep="first")
    return pairs.reset_index(drop=True)[PAIR_COLUMNS]


def _outliers_from(
    outlier_frame: pd.DataFrame | None, row_of_name: dict[str, int], ids: np.ndarray
) -> pd.DataFrame:
    if outlier_frame is None or outlier_frame.empty or "distance" not in outlier_frame:
        return _empty_outliers()
    image_ids = ids[_rows(outlier_frame["filename_outlier"], row_of_name)]
    frame = pd.DataFrame(
        {
            "image_id": image_ids,
            "outlier_distance": outlier_frame["distance"].to_numpy(dtype=np.float64),
        }
    )
    # fastdup already keeps one row per outlier (its lowest similarity); make sure of it.
    frame = frame.sort_values(["image_id", "outlier_distance"]).drop_duplicates("image_id")
    return frame.reset_index(drop=True)[OUTLIER_COLUMNS]


def _rows(file_names: pd.Series, row_of_name: dict[str, int]) -> np.ndarray:
    """Rows of the fake file names fastdup reports (it may prefix the input directory)."""
    rows = file_names.astype(str).str.rsplit("/", n=1).str[-1].map(row_of_name)
    if rows.isna().any():
        unknown = file_names[rows.isna()].iloc[0]
        raise RuntimeError(f"fastdup reported a file name it was not given: {unknown!r}")
    return rows.to_numpy(dtype=np.int64)


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
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)  # fastdup requires float32
    if matrix.size and not np.isfinite(matrix).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return matrix


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
