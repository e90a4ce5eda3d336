"""The one neighbour search (core.ranking.index, FAISS): exact below its limit, an inverted
file index above it whose recall is tuned, measured and reported truthfully."""

from __future__ import annotations

import numpy as np
import pytest

from imgrank_dagster.core.ranking.index import UnitRows, cosine_neighbours, exact_neighbours


def street_like(n: int, dims: int = 96, clusters: int = 12, seed: int = 0) -> np.ndarray:
    """bench_ranking's generator in small: non-negative vectors around cluster centres with a
    low-dimensional variation each, isotropic noise, and 15 % near-copies of the previous row."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(2.0, 0.5, size=(clusters, dims))
    bases = rng.normal(size=(clusters, 8, dims)) * 0.4
    labels = rng.integers(0, clusters, n)
    latent = rng.normal(size=(n, 8))
    rows = centres[labels] + np.einsum("nl,nld->nd", latent, bases[labels])
    rows += rng.normal(scale=0.05, size=rows.shape)
    copies = np.flatnonzero(rng.random(n) < 0.15)
    copies = copies[copies > 0]
    rows[copies] = rows[copies - 1] + rng.normal(scale=0.01, size=(len(copies), dims))
    return np.maximum(rows, 0).astype(np.float32)


def brute_force(matrix: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    similarity = unit[rows] @ unit.T
    similarity[np.arange(len(rows)), rows] = -np.inf
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def test_exact_search_is_brute_force() -> None:
    matrix = street_like(1500, seed=1)
    found = cosine_neighbours(matrix, 10)
    assert found.method == "exact" and found.recall is None
    expected = brute_force(matrix, np.arange(1500), 10)
    # Identical neighbour sets; the order may differ only between (near-)ties.
    matches = [len(set(a) & set(b)) for a, b in zip(found.indices, expected, strict=True)]
    assert np.mean(matches) / 10 > 0.999
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    listed = np.einsum("id,ikd->ik", unit, unit[found.indices])
    np.testing.assert_allclose(found.similarities, listed, atol=1e-5)
    assert (np.diff(found.similarities, axis=1) <= 1e-7).all()  # nearest first


def test_approximate_index_above_the_exact_limit_reports_its_true_recall() -> None:
    """6,000 rows with the exact limit at 2,000: FAISS's IVF index; the recall it reports is
    the recall an independent brute force finds, and at least its target."""
    matrix = street_like(6000, seed=2)
    found = cosine_neighbours(matrix, 20, exact_limit=2000, target_recall=0.95, seed=3)
    assert found.method == "ivf"
    assert found.details["nprobe"] < found.details["cells"]  # not an exhaustive scan
    rows = np.random.default_rng(7).choice(6000, 600, replace=False)
    truth = brute_force(matrix, rows, 20)
    recall = np.mean(
        [len(set(a) & set(b)) for a, b in zip(found.indices[rows], truth, strict=True)]
    )
    recall /= 20
    assert recall >= 0.95
    assert found.recall == pytest.approx(recall, abs=0.02)
    # Every reported similarity is exact (candidates are re-scored from the float32 rows).
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    listed = np.einsum("id,ikd->ik", unit, unit[found.indices])
    np.testing.assert_allclose(found.similarities, listed, atol=1e-5)
    assert (found.indices != np.arange(6000)[:, None]).all()
    # Deterministic for the seed.
    again = cosine_neighbours(matrix, 20, exact_limit=2000, target_recall=0.95, seed=3)
    np.testing.assert_array_equal(again.indices, found.indices)


def test_subsets_and_centring_search_in_their_own_space() -> None:
    matrix = street_like(400, dims=16, seed=4)
    members = np.arange(0, 400, 3)
    centre = matrix[members].mean(axis=0)
    found = cosine_neighbours(matrix, 4, rows=members, centre=centre)
    centred = matrix[members] - centre
    np.testing.assert_array_equal(
        np.sort(found.indices, axis=1),
        np.sort(brute_force(centred, np.arange(len(members)), 4), axis=1),
    )
    # Candidates restrict an exact search; a query never finds itself.
    unit = UnitRows(matrix)
    indices, _ = exact_neighbours(unit, np.array([0, 5]), 3, candidates=np.arange(0, 50))
    assert set(indices.ravel()) <= set(range(50))
    assert 0 not in indices[0] and 5 not in indices[1]


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.ones(4, dtype=np.float32), "2-d"),
        (np.array([[1.0, np.nan], [1.0, 0.0]], dtype=np.float32), "NaN"),
        (np.ones((1, 3), dtype=np.float32), "at least 2"),
    ],
)
def test_bad_input_is_rejected(matrix: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cosine_neighbours(matrix, 3)
