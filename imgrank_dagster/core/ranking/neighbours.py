"""A k-nearest-neighbour graph over image embeddings, computed once per collection.

The neighbours come from FAISS (core.ranking.index: exact up to `exact_limit` images, an
inverted-file index above it whose recall against exact search is measured on a sample).
Every stage that needs neighbours reads this graph: the coverage ranking (its selection
re-runs on it whenever the labelled set changes), the study's similar pairs and outliers
(core.ranking.near_duplicates), the report's and FiftyOne's near-duplicate groups (through
the similar pairs). Distances are cosine distances (1 - cosine similarity, 0..2), the measure
every fastdup similarity uses.

A graph holds two views of the same search:
- `nearest`: the k nearest neighbours by embedding alone, as FAISS found them (what the
  study's definitions need: fastdup's neighbours are by embedding only);
- `indices`/`distances`: the coverage strategy's rows, where frames of one capture sequence
  that were taken close together (GPS, else capture time) count as near even when their
  content differs moderately (the car moved, something passed). Where that metadata exists
  the distance mixes content and place, in the spirit of imagecluster's `alpha` (both terms
  normalised, then blended):

    mixed = alpha * content + (1 - alpha) * place * near_duplicate_distance
    distance = min(content, mixed)          (for frames closer than PLACE_STEPS steps)

`place` is the spatial (else temporal) gap between two frames of one sequence in units of
the collection's median step between consecutive frames, divided by PLACE_STEPS (so 0 = same
spot, 1 = the horizon). `near_duplicate_distance` is the median distance from an image to its
nearest neighbour, the same statistic the coverage ranking uses as its near-duplicate radius.
Hence a frame at the same spot counts as a near-duplicate up to 1/alpha (2x) that distance,
one step away up to 1.67x, at the horizon exactly as without metadata. The `min` means
metadata only ever joins frames, never separates images that look alike, and images without
metadata keep their content distance. Without metadata both views are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imgrank_dagster.core.arrays import column_matrix, matrix_column
from imgrank_dagster.core.ranking.index import (
    DEFAULT_EXACT_LIMIT,
    DEFAULT_TARGET_RECALL,
    Neighbours,
    UnitRows,
    cosine_neighbours,
    exact_neighbours,
    recall_at_k,
)

# Frames this many median steps apart (or more) are not "the same place" by metadata alone.
PLACE_STEPS = 3.0
DEFAULT_ALPHA = 0.5
DEFAULT_K = 20
_EARTH_RADIUS_M = 6_371_008.8
_MIX_BLOCK = 16_384  # rows whose candidates are merged at once
# The graph frame's columns (to_frame): the coverage rows, then the embedding-only neighbours.
GRAPH_COLUMNS = ["image_id", "neighbour_rows", "distances", "content_distances", "method"]
NEAREST_COLUMNS = ["image_id", "nearest_rows", "nearest_similarities", "method"]


@dataclass(frozen=True)
class NeighbourGraph:
    """Row i lists the k nearest other images of image_ids[i], nearest first.

    distances are the effective (place-mixed) cosine distances the ranking uses;
    content_distances are the pure embedding distances of the same pairs. `nearest` is the
    embedding-only k-NN the graph was built from (None for a graph built by hand).
    """

    image_ids: np.ndarray  # (N,) str
    indices: np.ndarray  # (N, k) int32, row positions into image_ids
    distances: np.ndarray  # (N, k) float32, ascending along each row
    content_distances: np.ndarray  # (N, k) float32
    method: str  # "exact" or "ivf"
    nearest: Neighbours | None = None

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
        if pd.Index(self.image_ids).has_duplicates:
            raise ValueError("neighbour graph: image ids are not unique")
        if self.nearest is not None and self.nearest.indices.shape[0] != n:
            raise ValueError("neighbour graph: its nearest neighbours have another row count")

    def to_frame(self) -> pd.DataFrame:
        """One row per image: image_id; neighbour_rows (row positions in this frame, what
        `from_frame` reads), distances, content_distances (the coverage rows, nearest first);
        nearest_rows, nearest_similarities (the embedding-only neighbours, when known); and
        method. Each list column is one Arrow fixed-size list over a contiguous matrix."""
        columns = {
            "image_id": self.image_ids,
            "neighbour_rows": matrix_column(self.indices.astype(np.int32, copy=False)),
            "distances": matrix_column(self.distances.astype(np.float32, copy=False)),
            "content_distances": matrix_column(
                self.content_distances.astype(np.float32, copy=False)
            ),
        }
        if self.nearest is not None:
            columns["nearest_rows"] = matrix_column(self.nearest.indices)
            columns["nearest_similarities"] = matrix_column(self.nearest.similarities)
        return pd.DataFrame(columns).assign(method=self.method)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> NeighbourGraph:
        """Inverse of `to_frame` (e.g. after a Parquet round trip); the nearest columns are
        read when present.

        Rows are positions, not ids: a re-rank reads the graph on its hot path, and looking up
        k ids per image costs more than the rest of the read.
        """
        _require(frame, ["image_id", "neighbour_rows", "distances", "content_distances"])
        lists = {
            name: column_matrix(frame[name], what=f"neighbour graph column {name}")
            for name in ("neighbour_rows", "distances", "content_distances")
        }
        widths = {matrix.shape for matrix in lists.values()}
        if len(widths) > 1:
            raise ValueError(f"neighbour graph frame has rows of different lengths {widths}")
        nearest = None
        if {"nearest_rows", "nearest_similarities"} <= set(frame.columns):
            nearest = nearest_from_frame(frame)
        return cls(
            image_ids=frame["image_id"].astype(str).to_numpy(),
            indices=lists["neighbour_rows"].astype(np.int32, copy=False),
            distances=lists["distances"].astype(np.float32, copy=False),
            content_distances=lists["content_distances"].astype(np.float32, copy=False),
            method=_method(frame),
            nearest=nearest,
        )


def nearest_from_frame(frame: pd.DataFrame) -> Neighbours:
    """The embedding-only neighbours stored in a graph frame (NEAREST_COLUMNS), rows aligned
    with the frame's rows; frame.attrs["neighbours"] (the search's recall) when present."""
    _require(frame, NEAREST_COLUMNS[:3])
    search = frame.attrs.get("neighbours", {})
    return Neighbours(
        indices=column_matrix(frame["nearest_rows"], np.int32, "nearest_rows"),
        similarities=column_matrix(frame["nearest_similarities"], np.float32, "similarities"),
        method=_method(frame),
        recall=search.get("recall"),
        details=search.get("details", {}),
    )


def _require(frame: pd.DataFrame, columns: list[str]) -> None:
    missing = set(columns) - set(frame.columns)
    if missing:
        raise ValueError(f"neighbour graph frame lacks columns {sorted(missing)}")
    if frame.empty:
        raise ValueError("neighbour graph frame has no rows")


def _method(frame: pd.DataFrame) -> str:
    return str(frame["method"].iloc[0]) if "method" in frame else "exact"


def build_neighbour_graph(
    embeddings: np.ndarray,
    k: int = DEFAULT_K,
    *,
    image_ids: Sequence[str] | None = None,
    places: pd.DataFrame | None = None,
    alpha: float = DEFAULT_ALPHA,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    target_recall: float = DEFAULT_TARGET_RECALL,
    seed: int = 0,
) -> NeighbourGraph:
    """The k nearest neighbours of every row of `embeddings` by cosine distance.

    places, if given, is aligned row by row with embeddings and has columns sequence_id,
    captured_at, lat, lng (nullable) and optionally sequence_index; it joins nearby frames of
    one sequence (see the module docstring). Exact up to exact_limit rows, FAISS IVF above
    (target_recall: see core.ranking.index).
    """
    unit = UnitRows(np.asarray(embeddings))
    n = len(unit)
    zero = unit.zero_rows()
    if len(zero):
        raise ValueError(f"embeddings row {int(zero[0])} is all zero")
    if n < 2:
        raise ValueError(f"a neighbour graph needs at least 2 images, got {n}")
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    ids = np.array([f"{row}" for row in range(n)] if image_ids is None else image_ids, dtype=str)
    if ids.shape != (n,):
        raise ValueError(f"image_ids has {len(ids)} entries for {n} embeddings")
    if places is not None and len(places) != n:
        raise ValueError(f"places has {len(places)} rows for {n} embeddings")
    nearest = cosine_neighbours(
        unit, int(k), exact_limit=exact_limit, target_recall=target_recall, seed=seed
    )
    content = np.clip(1.0 - nearest.similarities, 0.0, 2.0).astype(np.float32)
    if places is None:
        return NeighbourGraph(
            ids, nearest.indices, content, content.copy(), nearest.method, nearest
        )
    indices, distances, content = _mix_places(unit, nearest.indices, content, places, alpha)
    return NeighbourGraph(ids, indices, distances, content, nearest.method, nearest)


def neighbour_recall(
    embeddings: np.ndarray, graph: NeighbourGraph, sample: int = 1000, seed: int = 0
) -> float:
    """Share of the exact content k-NN of a random sample of rows that the graph holds (its
    embedding-only neighbours when known, else its rows)."""
    unit = UnitRows(np.asarray(embeddings))
    rows = np.sort(np.random.default_rng(seed).choice(len(unit), min(sample, len(unit)), False))
    listed = graph.indices if graph.nearest is None else graph.nearest.indices
    exact, _ = exact_neighbours(unit, rows, listed.shape[1])
    return recall_at_k(listed[rows], exact)


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


def _close_later(
    frame: pd.DataFrame, order: np.ndarray, offsets: int, steps: tuple[float, float]
) -> np.ndarray:
    """close[p, o - 1]: the frame at capture position p and the one o positions later show
    the same place (fewer than PLACE_STEPS median steps apart, same sequence)."""
    n = len(order)
    close = np.zeros((n, offsets), dtype=bool)
    for offset in range(1, offsets + 1):
        close[: n - offset, offset - 1] = (
            _place_steps(frame, order[:-offset], order[offset:], steps) < PLACE_STEPS
        )
    return close


def _later_similarities(vectors: UnitRows, order: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Cosine similarity of the frame at capture position p to the one o positions later,
    where close[p, o - 1] (NaN elsewhere): each frame's unit vector is made once per block."""
    n, offsets = close.shape
    similarities = np.full(close.shape, np.nan, dtype=np.float32)
    for start in range(0, n, _MIX_BLOCK):
        stop = min(start + _MIX_BLOCK, n)
        block = vectors[order[start : min(stop + offsets, n)]]
        for offset in range(1, offsets + 1):
            rows = np.flatnonzero(close[start:stop, offset - 1])
            if len(rows):
                similarities[start + rows, offset - 1] = np.einsum(
                    "id,id->i", block[rows], block[rows + offset]
                )
    return similarities


def _mix_places(
    vectors: UnitRows,
    indices: np.ndarray,
    content: np.ndarray,
    places: pd.DataFrame,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's k nearest by effective distance among its content neighbours and the frames
    up to k positions before or after it in capture order that show the same place.

    Row by row in blocks, so memory stays bounded: a row's candidates are its k content
    neighbours and 2k frames around it; a neighbour listed twice keeps its smaller effective
    distance (the first listed on a tie); the k smallest remain, ties by neighbour row.
    """
    n, k = indices.shape
    ordered = _capture_order(places)
    steps = _median_steps(ordered)
    near_duplicate_distance = float(np.median(np.min(content, axis=1)))
    if steps == (0.0, 0.0) or near_duplicate_distance <= 0:
        return indices.astype(np.int32), content, content.copy()
    by_row = ordered.sort_values("row").reset_index(drop=True)
    order = ordered["row"].to_numpy()  # capture position -> row
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    offsets = min(k, n - 1)
    close = _close_later(by_row, order, offsets, steps)
    later = _later_similarities(vectors, order, close)
    steps_ahead = np.arange(1, offsets + 1)
    out_indices = np.empty((n, k), dtype=np.int32)
    out_distances = np.empty((n, k), dtype=np.float32)
    out_content = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, _MIX_BLOCK):
        rows = np.arange(start, min(start + _MIX_BLOCK, n))
        here = position[rows][:, None]
        ahead, behind = here + steps_ahead, here - steps_ahead
        ahead_ok, behind_ok = ahead < n, behind >= 0
        ahead, behind = np.minimum(ahead, n - 1), np.maximum(behind, 0)
        # A frame o positions behind sees this one o positions ahead of it.
        slot = steps_ahead[None, :] - 1
        is_close = np.hstack([ahead_ok & close[here[:, 0]], behind_ok & close[behind, slot]])
        similarity = np.hstack([later[here[:, 0]], later[behind, slot]])
        columns = np.hstack([indices[rows], order[ahead], order[behind]]).astype(np.int64)
        pair_content = np.hstack(
            [content[rows], np.clip(1 - similarity, 0, 2).astype(np.float32)]
        ).astype(np.float32)
        first = np.repeat(rows, columns.shape[1])
        place = _place_steps(by_row, first, columns.ravel(), steps).reshape(columns.shape)
        place /= PLACE_STEPS
        mixed = alpha * pair_content + (1 - alpha) * place * near_duplicate_distance
        # NaN (other sequence, no metadata) and place >= 1 (beyond the horizon) keep content.
        with np.errstate(invalid="ignore"):
            same_place = place < 1
        effective = np.where(same_place, np.minimum(pair_content, mixed), pair_content)
        effective = effective.astype(np.float32)
        effective[:, k:][~is_close] = np.inf
        # One entry per neighbour (the smallest effective distance; ties: the first listed).
        by_neighbour = np.lexsort((effective, columns), axis=1)
        columns = np.take_along_axis(columns, by_neighbour, 1)
        effective = np.take_along_axis(effective, by_neighbour, 1)
        pair_content = np.take_along_axis(pair_content, by_neighbour, 1)
        effective[:, 1:][columns[:, 1:] == columns[:, :-1]] = np.inf
        # The k nearest, ties by neighbour row.
        nearest = np.lexsort((columns, effective), axis=1)[:, :k]
        out_indices[rows] = np.take_along_axis(columns, nearest, 1)
        out_distances[rows] = np.take_along_axis(effective, nearest, 1)
        out_content[rows] = np.take_along_axis(pair_content, nearest, 1)
    return out_indices, out_distances, out_content
