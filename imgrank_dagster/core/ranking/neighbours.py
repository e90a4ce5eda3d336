"""A k-nearest-neighbour graph over image embeddings, computed once per collection.

The graph is label-independent: the coverage ranking re-runs only its selection on it whenever
the labelled set changes. Distances are cosine distances (1 - cosine similarity, 0..2), the
measure every fastdup similarity uses. Up to `exact_limit` images the graph is exact (chunked
float32 matrix products on L2-normalised vectors); above it an inverted-file index (IVF:
cosine k-means cells, each searched together with its nearest cells) keeps 100,000 images
within a minute on two cores; `neighbour_recall` measures how much of the exact graph it finds.

Frames of one capture sequence that were taken close together (GPS, else capture time) show
the same place even when their content differs moderately (the car moved, something passed).
Where that metadata exists the graph mixes content and place distance, in the spirit of
imagecluster's `alpha` (both terms normalised, then blended):

    mixed = alpha * content + (1 - alpha) * place * near_duplicate_distance
    distance = min(content, mixed)          (for frames closer than PLACE_STEPS steps)

`place` is the spatial (else temporal) gap between two frames of one sequence in units of
the collection's median step between consecutive frames, divided by PLACE_STEPS (so 0 = same
spot, 1 = the horizon). `near_duplicate_distance` is the median distance from an image to its
nearest neighbour, the same statistic the coverage ranking uses as its near-duplicate radius.
Hence a frame at the same spot counts as a near-duplicate up to 1/alpha (2x) that distance,
one step away up to 1.67x, at the horizon exactly as without metadata. The `min` means
metadata only ever joins frames, never separates images that look alike, and images without
metadata keep their content distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Frames this many median steps apart (or more) are not "the same place" by metadata alone.
PLACE_STEPS = 3.0
DEFAULT_ALPHA = 0.5
DEFAULT_EXACT_LIMIT = 20_000
# Cells an IVF query searches (its own and the nearest others); see _ivf_neighbours.
IVF_PROBES = 24
_EARTH_RADIUS_M = 6_371_008.8
_QUERY_BLOCK = 1024
_TOPK_SLABS = 64


@dataclass(frozen=True)
class NeighbourGraph:
    """Row i lists the k nearest other images of image_ids[i], nearest first.

    distances are the effective (place-mixed) cosine distances the ranking uses;
    content_distances are the pure embedding distances of the same pairs.
    """

    image_ids: np.ndarray  # (N,) str
    indices: np.ndarray  # (N, k) int32, row positions into image_ids
    distances: np.ndarray  # (N, k) float32, ascending along each row
    content_distances: np.ndarray  # (N, k) float32
    method: str  # "exact" or "ivf"

    @property
    def size(self) -> int:
        return len(self.image_ids)

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        shape = self.indices.shape
        if len(shape) != 2 or shape[0] != n:
            raise ValueError(f"neighbour graph: indices shape {shape} does not match {n} images")
        for name in ("distances", "content_distances"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"neighbour graph: {name} shape differs from indices {shape}")
        if n and (self.indices.min() < 0 or self.indices.max() >= n):
            raise ValueError("neighbour graph: an index points outside the image list")
        sorted_rows = np.sort(self.indices, axis=1)
        repeats = (sorted_rows[:, 1:] == sorted_rows[:, :-1]).any(axis=1)
        repeats |= (self.indices == np.arange(n)[:, None]).any(axis=1)
        if repeats.any():
            row = int(np.argmax(repeats))
            raise ValueError(f"neighbour graph: row {row} lists an image twice or itself")
        if len(set(self.image_ids.tolist())) != n:
            raise ValueError("neighbour graph: image ids are not unique")

    def to_frame(self) -> pd.DataFrame:
        """One row per image: image_id, neighbour_rows (row positions in this frame, what
        `from_frame` reads), neighbour_ids (the same neighbours by id, for people),
        distances, content_distances (lists, nearest first) and method."""
        return pd.DataFrame(
            {
                "image_id": self.image_ids,
                "neighbour_rows": list(self.indices),
                "neighbour_ids": list(self.image_ids[self.indices]),
                "distances": list(self.distances),
                "content_distances": list(self.content_distances),
            }
        ).assign(method=self.method)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> NeighbourGraph:
        """Inverse of `to_frame` (e.g. after a Parquet round trip); neighbour_ids is not needed.

        Rows are positions, not ids: a re-rank reads the graph on its hot path, and looking up
        k ids per image costs more than the rest of the read.
        """
        required = {"image_id", "neighbour_rows", "distances", "content_distances"}
        missing = required - set(frame.columns)
        if missing:
            raise ValueError(f"neighbour graph frame lacks columns {sorted(missing)}")
        if frame.empty:
            raise ValueError("neighbour graph frame has no rows")
        lists = {
            name: frame[name].to_numpy()
            for name in ("neighbour_rows", "distances", "content_distances")
        }
        lengths = {len(row) for values in lists.values() for row in values}
        if len(lengths) > 1:
            raise ValueError(f"neighbour graph frame has rows of different lengths {lengths}")
        shape = (len(frame), lengths.pop())
        method = str(frame["method"].iloc[0]) if "method" in frame else "exact"
        return cls(
            image_ids=frame["image_id"].astype(str).to_numpy(),
            indices=np.concatenate(lists["neighbour_rows"]).astype(np.int32).reshape(shape),
            distances=np.concatenate(lists["distances"]).astype(np.float32).reshape(shape),
            content_distances=np.concatenate(lists["content_distances"])
            .astype(np.float32)
            .reshape(shape),
            method=method,
        )


def normalise_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """float32 rows of unit length; rejects non-finite or all-zero rows."""
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-d array, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise ValueError(f"embeddings row {bad} contains NaN or infinity")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"embeddings row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zero")
    return matrix / norms


def build_neighbour_graph(
    embeddings: np.ndarray,
    k: int = 20,
    *,
    image_ids: Sequence[str] | None = None,
    places: pd.DataFrame | None = None,
    alpha: float = DEFAULT_ALPHA,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    seed: int = 0,
) -> NeighbourGraph:
    """The k nearest neighbours of every row of `embeddings` by cosine distance.

    places, if given, is aligned row by row with embeddings and has columns sequence_id,
    captured_at, lat, lng (nullable) and optionally sequence_index; it joins nearby frames of
    one sequence (see the module docstring). Exact up to exact_limit rows, IVF above.
    """
    vectors = normalise_embeddings(embeddings)
    n = len(vectors)
    if n < 2:
        raise ValueError(f"a neighbour graph needs at least 2 images, got {n}")
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    ids = np.array([f"{row}" for row in range(n)] if image_ids is None else image_ids, dtype=str)
    if ids.shape != (n,):
        raise ValueError(f"image_ids has {len(ids)} entries for {n} embeddings")
    k = min(int(k), n - 1)
    if n <= exact_limit:
        indices, similarities = _exact_neighbours(vectors, k)
        method = "exact"
    else:
        indices, similarities = _ivf_neighbours(vectors, k, seed)
        method = "ivf"
    content = np.clip(1.0 - similarities, 0.0, 2.0).astype(np.float32)
    if places is None:
        return NeighbourGraph(ids, indices.astype(np.int32), content, content.copy(), method)
    if len(places) != n:
        raise ValueError(f"places has {len(places)} rows for {n} embeddings")
    indices, distances, content = _mix_places(vectors, indices, content, places, alpha)
    return NeighbourGraph(ids, indices, distances, content, method)


def neighbour_recall(
    embeddings: np.ndarray, graph: NeighbourGraph, sample: int = 1000, seed: int = 0
) -> float:
    """Share of the exact content k-NN of a random sample of rows that the graph holds."""
    vectors = normalise_embeddings(embeddings)
    rows = np.random.default_rng(seed).choice(len(vectors), min(sample, len(vectors)), False)
    similarities = vectors[rows] @ vectors.T
    similarities[np.arange(len(rows)), rows] = -np.inf
    exact, _ = _top_k(similarities, graph.k)
    found = [len(set(exact[i]) & set(graph.indices[row])) for i, row in enumerate(rows)]
    return float(np.sum(found) / exact.size)


def _top_k(similarities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the k largest entries of each row, largest first.

    Columns are split into _TOPK_SLABS strided slabs; a row's k largest values lie in the k
    slab positions with the largest maxima across slabs, so only those k * _TOPK_SLABS
    candidates are partitioned. The maximum across slabs is a vectorised element-wise pass,
    far cheaper than argpartition on full rows.
    """
    rows, columns = similarities.shape
    width = -(-columns // _TOPK_SLABS)
    if width <= 2 * k:
        candidates = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
    else:
        padded = similarities
        if width * _TOPK_SLABS != columns:
            padded = np.full((rows, width * _TOPK_SLABS), -np.inf, dtype=similarities.dtype)
            padded[:, :columns] = similarities
        slab_max = padded.reshape(rows, _TOPK_SLABS, width).max(axis=1)
        best = np.argpartition(-slab_max, k - 1, axis=1)[:, :k]
        candidates = (best[:, :, None] + width * np.arange(_TOPK_SLABS)).reshape(rows, -1)
        values = np.take_along_axis(padded, candidates, axis=1)
        pick = np.argpartition(-values, k - 1, axis=1)[:, :k]
        candidates = np.take_along_axis(candidates, pick, axis=1)
    values = np.take_along_axis(similarities, candidates, axis=1)
    # Largest first; ties by column so the graph is deterministic.
    order = np.lexsort((candidates, -values), axis=1)
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(values, order, axis=1)


def _exact_neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(vectors)
    # Zero rows pad the columns to whole slabs, so _top_k never copies a block.
    padded = np.zeros((-(-n // _TOPK_SLABS) * _TOPK_SLABS, vectors.shape[1]), np.float32)
    padded[:n] = vectors
    indices = np.empty((n, k), dtype=np.int64)
    similarities = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, _QUERY_BLOCK):
        stop = min(start + _QUERY_BLOCK, n)
        block = vectors[start:stop] @ padded.T
        block[:, n:] = -np.inf
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        indices[start:stop], similarities[start:stop] = _top_k(block, k)
    return indices, similarities


def _spherical_kmeans(
    vectors: np.ndarray, cells: int, rng: np.random.Generator, iterations: int = 10
) -> np.ndarray:
    """Unit-length centres of `cells` cosine clusters (Lloyd iterations; empty cells reseeded)."""
    centres = vectors[rng.choice(len(vectors), cells, replace=False)].copy()
    for _ in range(iterations):
        assignment = np.argmax(vectors @ centres.T, axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assignment, vectors)
        norms = np.linalg.norm(sums, axis=1)
        empty = norms == 0
        sums[empty] = vectors[rng.choice(len(vectors), int(empty.sum()), replace=False)]
        norms[empty] = 1.0
        centres = (sums / norms[:, None]).astype(np.float32)
    return centres


def _ivf_neighbours(vectors: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k-NN: each cosine-KMeans cell is searched against its nearest cells.

    About sqrt(N) cells, each searched together with its IVF_PROBES - 1 nearest cells (by
    centre similarity): a recall/speed trade-off that `neighbour_recall` measures.
    """
    n, dimensions = vectors.shape
    cells = max(8, round(np.sqrt(n)))
    probes = min(cells, IVF_PROBES)
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(n, min(n, 64 * cells), replace=False)]
    centres = _spherical_kmeans(sample, cells, rng)
    assignment = np.concatenate(
        [np.argmax(vectors[s : s + 8192] @ centres.T, axis=1) for s in range(0, n, 8192)]
    )
    members = [np.flatnonzero(assignment == cell) for cell in range(cells)]
    centre_similarity = centres @ centres.T
    np.fill_diagonal(centre_similarity, np.inf)  # a cell always searches itself first
    nearest_cells = np.argsort(-centre_similarity, axis=1, kind="stable")[:, :probes]
    # Row n is a zero vector: candidate lists are padded with it to whole _top_k slabs.
    padded_vectors = np.vstack([vectors, np.zeros((1, dimensions), np.float32)])
    indices = np.empty((n, k), dtype=np.int64)
    similarities = np.empty((n, k), dtype=np.float32)
    for cell in range(cells):
        queries = members[cell]
        if len(queries) == 0:
            continue
        candidates = np.concatenate([members[other] for other in nearest_cells[cell]])
        if len(candidates) <= k:  # a tiny neighbourhood: search every image
            candidates = np.concatenate([queries, np.setdiff1d(np.arange(n), queries)])
        real = len(candidates)
        padding = -real % _TOPK_SLABS
        candidates = np.concatenate([candidates, np.full(padding, n, dtype=candidates.dtype)])
        candidate_vectors = padded_vectors[candidates]
        for start in range(0, len(queries), _QUERY_BLOCK):
            block = queries[start : start + _QUERY_BLOCK]
            block_similarities = vectors[block] @ candidate_vectors.T
            block_similarities[:, real:] = -np.inf
            # The cell's own members come first, so query i sits at candidate start + i.
            own = np.arange(len(block))
            block_similarities[own, start + own] = -np.inf
            found, similarities[block] = _top_k(block_similarities, k)
            indices[block] = candidates[found]
    return indices, similarities


def _capture_order(places: pd.DataFrame) -> pd.DataFrame:
    """row, sequence (int code, -1 = none), seconds, lat, lng; sorted in capture order."""
    required = {"sequence_id", "captured_at", "lat", "lng"}
    missing = required - set(places.columns)
    if missing:
        raise ValueError(f"places lacks columns {sorted(missing)}")
    times = pd.to_datetime(places["captured_at"], utc=True, errors="coerce")
    epoch = pd.Timestamp(0, tz="UTC")
    sequence_index = (
        pd.to_numeric(places["sequence_index"], errors="coerce")
        if "sequence_index" in places
        else pd.Series(0.0, index=places.index)
    )
    frame = pd.DataFrame(
        {
            "row": np.arange(len(places)),
            "sequence": pd.factorize(places["sequence_id"])[0],
            "seconds": (times - epoch).dt.total_seconds().to_numpy(dtype=float),
            "lat": pd.to_numeric(places["lat"], errors="coerce").to_numpy(dtype=float),
            "lng": pd.to_numeric(places["lng"], errors="coerce").to_numpy(dtype=float),
            "sequence_index": sequence_index.to_numpy(dtype=float),
        }
    )
    return frame.sort_values(["sequence", "seconds", "sequence_index", "row"])


def _metres(lat1, lng1, lat2, lng2) -> np.ndarray:
    lat1, lng1, lat2, lng2 = (np.radians(value) for value in (lat1, lng1, lat2, lng2))
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _place_steps(frame: pd.DataFrame, first: np.ndarray, second: np.ndarray, steps) -> np.ndarray:
    """Gap between rows first[i] and second[i] in median steps; NaN when not comparable."""
    step_m, step_s = steps
    sequence = frame["sequence"].to_numpy()
    same = (sequence[first] == sequence[second]) & (sequence[first] >= 0)
    lat, lng = frame["lat"].to_numpy(), frame["lng"].to_numpy()
    seconds = frame["seconds"].to_numpy()
    gap = np.full(len(first), np.nan)
    if step_s > 0:
        gap = np.abs(seconds[first] - seconds[second]) / step_s
    if step_m > 0:
        metres = _metres(lat[first], lng[first], lat[second], lng[second]) / step_m
        gap = np.where(np.isfinite(metres), metres, gap)  # space decides when both exist
    gap[~same] = np.nan
    return gap


def _median_steps(ordered: pd.DataFrame) -> tuple[float, float]:
    """Median positive gap between consecutive frames of a sequence (metres, seconds)."""
    sequence = ordered["sequence"].to_numpy()
    same = (sequence[1:] == sequence[:-1]) & (sequence[1:] >= 0)
    lat, lng = ordered["lat"].to_numpy(), ordered["lng"].to_numpy()
    metres = _metres(lat[:-1], lng[:-1], lat[1:], lng[1:])[same]
    seconds = np.abs(np.diff(ordered["seconds"].to_numpy()))[same]
    metres, seconds = metres[metres > 0], seconds[seconds > 0]
    step_m = float(np.median(metres)) if len(metres) else 0.0
    step_s = float(np.median(seconds)) if len(seconds) else 0.0
    return step_m, step_s


def _row_similarities(vectors: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    out = np.empty(len(first), dtype=np.float32)
    for start in range(0, len(first), 8192):
        a, b = first[start : start + 8192], second[start : start + 8192]
        out[start : start + len(a)] = np.einsum("id,id->i", vectors[a], vectors[b])
    return out


def _mix_places(
    vectors: np.ndarray,
    indices: np.ndarray,
    content: np.ndarray,
    places: pd.DataFrame,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, k = indices.shape
    ordered = _capture_order(places)
    steps = _median_steps(ordered)
    near_duplicate_distance = float(np.median(np.min(content, axis=1)))
    if steps == (0.0, 0.0) or near_duplicate_distance <= 0:
        return indices.astype(np.int32), content, content.copy()
    by_row = ordered.sort_values("row").reset_index(drop=True)
    # Extra candidates: frames up to k positions apart in capture order that are place-close.
    order_rows = ordered["row"].to_numpy()
    extra_first, extra_second = [], []
    for offset in range(1, min(k, n - 1) + 1):
        a, b = order_rows[:-offset], order_rows[offset:]
        close = _place_steps(by_row, a, b, steps) < PLACE_STEPS
        extra_first.append(a[close])
        extra_second.append(b[close])
    extra_a, extra_b = np.concatenate(extra_first), np.concatenate(extra_second)
    extra_content = np.clip(1 - _row_similarities(vectors, extra_a, extra_b), 0, 2)
    first = np.concatenate([np.repeat(np.arange(n), k), extra_a, extra_b])
    second = np.concatenate([indices.ravel(), extra_b, extra_a])
    pair_content = np.concatenate([content.ravel(), extra_content, extra_content])
    pair_content = pair_content.astype(np.float32)
    place = _place_steps(by_row, first, second, steps) / PLACE_STEPS
    mixed = alpha * pair_content + (1 - alpha) * place * near_duplicate_distance
    # NaN (other sequence, no metadata) and place >= 1 (beyond the horizon) keep content.
    with np.errstate(invalid="ignore"):
        same_place = place < 1
    effective = np.where(same_place, np.minimum(pair_content, mixed), pair_content)
    effective = effective.astype(np.float32)
    # One entry per (image, neighbour), then the k smallest effective distances per image.
    order = np.lexsort((effective, second, first))
    first, second = first[order], second[order]
    effective, pair_content = effective[order], pair_content[order]
    keep = np.ones(len(first), dtype=bool)
    keep[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    first, second = first[keep], second[keep]
    effective, pair_content = effective[keep], pair_content[keep]
    order = np.lexsort((second, effective, first))
    first, second = first[order], second[order]
    effective, pair_content = effective[order], pair_content[order]
    take = (np.searchsorted(first, np.arange(n))[:, None] + np.arange(k)).ravel()
    return (
        second[take].reshape(n, k).astype(np.int32),
        effective[take].reshape(n, k),
        pair_content[take].reshape(n, k),
    )
