"""Cosine nearest neighbours with FAISS: the one neighbour search of the project.

`cosine_neighbours(matrix, k)` returns the k nearest other rows of every row by cosine
similarity. The collection's neighbour graph (core.ranking.neighbours) is built with it once
per collection, and the study's similar pairs, outliers and the coverage strategy read that
graph; uniqueness (FiftyOne's definition centres each cluster first, so its neighbours live in
another space) runs the same search on each cluster's centred rows.

How it searches:
- up to `exact_limit` rows: exact, `faiss.knn` (BLAS inner products of unit rows, in blocks);
- above: an inverted-file index (`IndexIVFScalarQuantizer`: about sqrt(N) k-means cells, rows
  stored as 8-bit codes, a quarter of the float32 matrix) searched list by list with
  `faiss.contrib.big_batch_search` (the queries of each cell as one BLAS product), for a few
  more candidates than k; the candidates are then re-scored exactly from the float32 rows, so
  every reported similarity is exact and only the choice of neighbours is approximate.
  How many cells each query probes (nprobe) is tuned on a seeded sample: the smallest nprobe
  whose recall against exact search reaches `target_recall`. The recall of the final result
  is then measured on another seeded sample and reported (`Neighbours.recall`).

Memory: rows are normalised (and centred) block by block on the way into FAISS; the float32
matrix is never copied whole. Above the exact limit the index holds N x D bytes of codes.

FAISS uses OpenMP threads; their number is set explicitly on every call (`faiss_threads`,
`IMGRANK_FAISS_THREADS`, default: the cores this process may use).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_EXACT_LIMIT = 20_000
DEFAULT_TARGET_RECALL = 0.96
# Seeded rows whose exact neighbours tune nprobe, and (others) measure the recall reported.
TUNING_SAMPLE = 200
RECALL_SAMPLE = 500
# Cells probed per query, tried in this order until the tuning sample reaches the target
# (steps of 1/8 to 1/4: a coarser ladder overshoots, and the search costs what it probes).
NPROBE_STEPS = (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128)
NPROBE_STEPS += tuple(range(160, 1025, 32))
# Candidates fetched from the quantized index per query before exact re-scoring: k + k/4.
CANDIDATE_MARGIN = 0.25
# k-means of the coarse cells: iterations and training rows per cell (a seeded sample).
IVF_TRAIN_ITERATIONS = 10
IVF_TRAIN_ROWS_PER_CELL = 64
# Rows handled at once. Blocks stay under glibc's largest mmap threshold (32 MB): freed,
# such a block is reused by the next one instead of being mapped (and page-faulted) anew,
# which on this project's VMs costs more than the arithmetic.
_BLOCK = 8_192
_RESCORE_BLOCK = 256


def faiss_threads() -> int:
    """FAISS's thread count: IMGRANK_FAISS_THREADS, else the cores this process may use."""
    configured = os.environ.get("IMGRANK_FAISS_THREADS", "").strip()
    if configured:
        return max(1, int(configured))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def faiss_module() -> Any:
    """FAISS with its thread count set (heavy: imported on first use)."""
    import faiss

    faiss.omp_set_num_threads(faiss_threads())
    return faiss


class UnitRows:
    """Rows of a matrix, optionally a subset and centred, scaled to unit length on demand.

    `rows[i]` (a slice or an array of positions within the subset) returns unit vectors
    (float32 for FAISS unless `dtype` says otherwise); rows of zero length (after centring)
    stay zero, as in sklearn's `normalize`.
    Inside `reusing_buffer()` every call returns a view into one buffer, valid until the next
    call (for a consumer that uses each batch before asking for the next).
    """

    def __init__(
        self,
        matrix: np.ndarray,
        rows: np.ndarray | None = None,
        centre: np.ndarray | None = None,
        dtype: type | np.dtype = np.float32,
    ) -> None:
        if not isinstance(matrix, np.ndarray) or matrix.ndim != 2 or matrix.shape[1] == 0:
            shape = getattr(matrix, "shape", None)
            raise ValueError(f"embeddings must be a non-empty 2-d array, got shape {shape}")
        self.matrix = matrix
        self.dtype = np.dtype(dtype)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.centre = None if centre is None else np.asarray(centre, dtype=self.dtype)
        self.dimension = matrix.shape[1]
        self._buffer: np.ndarray | None = None
        self._scale = True
        self.norms = np.empty(len(self), dtype=self.dtype)
        for start in range(0, len(self), _BLOCK):
            block = self._raw(slice(start, start + _BLOCK))
            self.norms[start : start + len(block)] = np.sqrt(np.einsum("ij,ij->i", block, block))
        if not np.isfinite(self.norms).all():
            bad = int(np.flatnonzero(~np.isfinite(self.norms))[0])
            raise ValueError(f"embeddings row {self._source_row(bad)} contains NaN or infinity")

    def __len__(self) -> int:
        return self.matrix.shape[0] if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dimension)

    @property
    def nbytes(self) -> int:  # what faiss.contrib.big_batch_search logs for its queries
        return len(self) * self.dimension * 4

    def zero_rows(self) -> np.ndarray:
        return np.flatnonzero(self.norms == 0)

    def _source_row(self, position: int) -> int:
        return position if self.rows is None else int(self.rows[position])

    def _raw(self, index: slice | np.ndarray) -> np.ndarray:
        source = index if self.rows is None else self.rows[index]
        block = np.asarray(self.matrix[source], dtype=self.dtype)
        if self.centre is not None:
            block = block - self.centre
        return block

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        norms = self.norms[index]
        if self._buffer is None:
            out = np.empty((len(norms), self.dimension), dtype=self.dtype)
        else:
            if len(self._buffer) < len(norms):
                self._buffer = np.empty((len(norms), self.dimension), dtype=self.dtype)
            out = self._buffer[: len(norms)]
        source = index if self.rows is None else self.rows[index]
        if isinstance(source, slice) or self.matrix.dtype != self.dtype:
            out[:] = self.matrix[source]
        else:
            np.take(self.matrix, source, axis=0, out=out)
        if self.centre is not None:
            out -= self.centre
        if self._scale:
            out /= np.where(norms == 0, 1, norms)[:, None]
        return out

    def similarities(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Cosine similarity of unit vector queries[i] to row candidates[i, j] (-inf where
        candidates is -1), from the rows as stored: the candidates are not normalised first."""
        safe = np.maximum(candidates, 0)
        source = safe if self.rows is None else self.rows[safe]
        raw = np.take(self.matrix, source.ravel(), axis=0).reshape(*candidates.shape, -1)
        dots = np.einsum("id,ijd->ij", queries, raw)
        if self.centre is not None:
            dots -= (queries @ self.centre)[:, None]
        norms = self.norms[safe]
        similarities = (dots / np.where(norms == 0, 1, norms)).astype(np.float32)
        similarities[candidates < 0] = -np.inf
        return similarities

    @contextlib.contextmanager
    def reusing_buffer(self, scaled: bool = True):
        """Within the block, every batch is a view into one reused buffer; scaled=False
        leaves the rows at their length (centred still): enough to rank candidates for a
        query by inner product, since a query's length scales all its products alike."""
        self._buffer = np.empty((0, self.dimension), dtype=self.dtype)
        self._scale = scaled
        try:
            yield self
        finally:
            self._buffer = None
            self._scale = True


@dataclass(frozen=True, eq=False)
class Neighbours:
    """The k nearest other rows of every row, nearest first (ties: lower row first)."""

    indices: np.ndarray  # (N, k) int32 positions
    similarities: np.ndarray  # (N, k) float32 cosine similarities, descending along a row
    method: str  # "exact" or "ivf"
    recall: float | None = None  # recall@k against exact search on a sample; None if exact
    details: dict[str, Any] = field(default_factory=dict)  # how it searched, and timings

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def cosine_neighbours(
    matrix: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    centre: np.ndarray | None = None,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    target_recall: float = DEFAULT_TARGET_RECALL,
    seed: int = 0,
) -> Neighbours:
    """The k nearest other rows of every row of `matrix` (or of `matrix[rows]`, positions
    then counted within `rows`), by cosine similarity after subtracting `centre` if given.

    Exact up to `exact_limit` rows, an IVF index above (see the module docstring). k is
    clipped to the number of other rows.
    """
    unit = matrix if isinstance(matrix, UnitRows) else UnitRows(matrix, rows, centre)
    if unit.dtype != np.float32:
        raise ValueError(f"FAISS searches float32 unit rows, got {unit.dtype}")
    n = len(unit)
    if n < 2:
        raise ValueError(f"a neighbour search needs at least 2 rows, got {n}")
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    k = min(int(k), n - 1)
    if n <= exact_limit:
        started = time.perf_counter()
        indices, similarities = exact_neighbours(unit, np.arange(n), k)
        seconds = {"search": time.perf_counter() - started}
        return Neighbours(indices, similarities, "exact", None, {"seconds": seconds})
    return _ivf_neighbours(unit, k, target_recall, seed)


def exact_neighbours(
    unit: UnitRows, queries: np.ndarray, k: int, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows (among `candidates`, default all) of the rows `queries`, each
    query itself excluded: (indices, similarities), nearest first; -1 / NaN past the end."""
    faiss = faiss_module()
    queries = np.asarray(queries, dtype=np.int64)
    pool = np.arange(len(unit)) if candidates is None else np.asarray(candidates, np.int64)
    wanted = min(k + 1, len(pool))
    heap = faiss.ResultHeap(len(queries), wanted, keep_max=True)
    query_vectors = unit[queries]
    for start in range(0, len(pool), _BLOCK):
        block = pool[start : start + _BLOCK]
        found_similarities, found = faiss.knn(
            query_vectors, unit[block], min(wanted, len(block)), metric=faiss.METRIC_INNER_PRODUCT
        )
        found = np.where(found >= 0, block[np.maximum(found, 0)], -1)
        if found.shape[1] < wanted:
            pad = wanted - found.shape[1]
            found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
            found_similarities = np.pad(
                found_similarities, ((0, 0), (0, pad)), constant_values=-np.inf
            )
        heap.add_result(np.ascontiguousarray(found_similarities), np.ascontiguousarray(found))
    heap.finalize()
    return _without_self(heap.I, heap.D, queries, k)


def _without_self(
    indices: np.ndarray, similarities: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Drop each query from its own row (or the last entry when absent), order each row by
    similarity then row, and keep k: int32 indices (-1 when missing), float32 similarities."""
    indices = np.asarray(indices, dtype=np.int64)
    similarities = np.asarray(similarities, dtype=np.float32).copy()
    invalid = (indices < 0) | (indices == queries[:, None])
    similarities[invalid] = -np.inf
    order = np.lexsort((np.where(invalid, np.iinfo(np.int64).max, indices), -similarities), axis=1)
    indices = np.take_along_axis(indices, order, axis=1)[:, :k]
    similarities = np.take_along_axis(similarities, order, axis=1)[:, :k]
    missing = ~np.isfinite(similarities)
    indices[missing] = -1
    similarities[missing] = np.nan
    # Unit vectors' float32 products can exceed 1 by a rounding step (identical images).
    np.clip(similarities, -1.0, 1.0, out=similarities)
    return indices.astype(np.int32), similarities


def _rescore(
    unit: UnitRows, candidates: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact similarities of each query to its candidates; the k best (see _without_self)."""
    indices = np.empty((len(queries), k), dtype=np.int32)
    similarities = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), _RESCORE_BLOCK):
        stop = min(start + _RESCORE_BLOCK, len(queries))
        block = candidates[start:stop]
        exact = unit.similarities(unit[queries[start:stop]], block)
        indices[start:stop], similarities[start:stop] = _without_self(
            block, exact, queries[start:stop], k
        )
    return indices, similarities


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact neighbours (rows of `exact`, -1 = none) that `found` lists."""
    hits = total = 0
    for listed, truth in zip(found, exact, strict=True):
        truth = truth[truth >= 0]
        hits += len(np.intersect1d(listed, truth))
        total += len(truth)
    return hits / total if total else 1.0


def _ivf_neighbours(unit: UnitRows, k: int, target_recall: float, seed: int) -> Neighbours:
    faiss = faiss_module()
    from faiss.contrib.big_batch_search import big_batch_search

    n, dimension = unit.shape
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    # About sqrt(N) cells, each trained on at least 39 rows (FAISS's own minimum).
    cells = max(1, min(round(np.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer,
        dimension,
        cells,
        faiss.ScalarQuantizer.QT_8bit,
        faiss.METRIC_INNER_PRODUCT,
        False,  # codes of the vectors themselves: big_batch_search's residuals assume L2
    )
    index.cp.seed = seed
    index.cp.niter = IVF_TRAIN_ITERATIONS
    index.cp.max_points_per_centroid = IVF_TRAIN_ROWS_PER_CELL
    rng = np.random.default_rng(seed)
    training = np.sort(rng.choice(n, min(n, IVF_TRAIN_ROWS_PER_CELL * cells), replace=False))
    with _quiet():
        index.train(unit[training])
    seconds["train"] = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(0, n, _BLOCK):
        index.add(unit[slice(start, start + _BLOCK)])
    seconds["add"] = time.perf_counter() - started

    # Exact neighbours of two seeded samples: one tunes nprobe, the other measures recall.
    started = time.perf_counter()
    sample = rng.choice(n, min(n, TUNING_SAMPLE + RECALL_SAMPLE), replace=False)
    tuning, checking = np.sort(sample[:TUNING_SAMPLE]), np.sort(sample[TUNING_SAMPLE:])
    exact_sample, _ = exact_neighbours(unit, np.concatenate([tuning, checking]), k)
    exact_tuning, exact_checking = exact_sample[: len(tuning)], exact_sample[len(tuning) :]
    seconds["exact samples"] = time.perf_counter() - started

    started = time.perf_counter()
    wanted = min(n, k + 1 + int(np.ceil(CANDIDATE_MARGIN * k)))
    tuning_recall: dict[int, float] = {}
    steps = [step for step in NPROBE_STEPS if step < cells] + [cells]
    for nprobe in steps:
        index.nprobe = nprobe
        _, candidates = index.search(unit[tuning], wanted)
        found, _ = _rescore(unit, candidates, tuning, k)
        tuning_recall[nprobe] = recall_at_k(found, exact_tuning)
        if tuning_recall[nprobe] >= target_recall:
            break
    seconds["tune nprobe"] = time.perf_counter() - started

    started = time.perf_counter()
    # Queries at their own length: the candidates are ranked per query and re-scored anyway.
    with _quiet(), unit.reusing_buffer(scaled=False):
        _, candidates = big_batch_search(index, unit, wanted, verbose=1)
    del index, quantizer
    seconds["search"] = time.perf_counter() - started
    started = time.perf_counter()
    queries = np.arange(n)
    indices, similarities = _rescore(unit, candidates, queries, k)
    del candidates
    short = np.flatnonzero((indices < 0).any(axis=1))
    if len(short):  # a query whose probed cells held too few rows: search it exactly
        indices[short], similarities[short] = exact_neighbours(unit, short, k)
    seconds["rescore"] = time.perf_counter() - started
    recall = recall_at_k(indices[checking], exact_checking)
    details = {
        "cells": cells,
        "nprobe": nprobe,
        "candidates": wanted,
        "target_recall": target_recall,
        "tuning_recall": {str(step): round(value, 4) for step, value in tuning_recall.items()},
        "recall_sample": len(checking),
        "searched_exactly": len(short),
        "seconds": seconds,
    }
    return Neighbours(indices, similarities, "ivf", recall, details)


@contextlib.contextmanager
def _quiet():
    """faiss.contrib prints progress on stdout; a run log does not need it."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
