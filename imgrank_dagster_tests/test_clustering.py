"""KMeans with the study's elbow + silhouette choice of k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import silhouette_samples

from imgrank_dagster.core.ranking import clustering
from imgrank_dagster.core.ranking.clustering import (
    choose_k_and_cluster,
    cluster_assignments_frame,
    find_elbow,
    silhouette_exact,
    silhouette_simplified,
)

PARAMS = {"k_min": 2, "k_max": 10, "silhouette_window": 2, "seed": 7}


def blobs(sizes: list[int], dim: int = 16, spread: float = 8.0, seed: int = 0) -> np.ndarray:
    """Well separated gaussian blobs, rows grouped blob by blob."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * spread
    rows = [
        centre + rng.normal(size=(size, dim)) for centre, size in zip(centres, sizes, strict=True)
    ]
    return np.vstack(rows).astype(np.float32)


def truth(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def test_elbow_and_silhouette_find_the_planted_k() -> None:
    sizes = [50, 45, 40, 35]
    result = choose_k_and_cluster(blobs(sizes), **PARAMS)
    assert result.elbow_k == 4
    assert result.k == 4
    assert sorted(result.inertia_by_k) == list(range(2, 11))
    assert sorted(result.silhouette_by_k) == list(range(2, 11))
    assert max(result.silhouette_by_k, key=result.silhouette_by_k.get) == 4
    # Every blob is exactly one cluster; clusters are numbered by size (largest = 0).
    assert pd.crosstab(truth(sizes), result.labels).to_numpy().tolist() == [
        [50, 0, 0, 0],
        [0, 45, 0, 0],
        [0, 0, 40, 0],
        [0, 0, 0, 35],
    ]
    assert result.silhouette_method == "exact"
    assert result.silhouette.min() > 0.5


def test_silhouette_window_moves_k_away_from_the_elbow() -> None:
    # Two big blobs and four small ones: the inertia curve bends at 5, while the mean
    # silhouette is best at the planted 6, which lies inside the window 5 +- 2.
    matrix = blobs([80, 80, 20, 20, 20, 20], dim=8, spread=4.0, seed=1)
    result = choose_k_and_cluster(matrix, **PARAMS)
    assert result.elbow_k == 5
    window = [k for k in result.silhouette_by_k if abs(k - result.elbow_k) <= 2]
    assert result.k == max(window, key=result.silhouette_by_k.get) == 6
    assert sorted(np.bincount(result.labels)) == [20, 20, 20, 20, 80, 80]
    no_window = choose_k_and_cluster(matrix, **{**PARAMS, "silhouette_window": 0})
    assert no_window.k == no_window.elbow_k == 5


def test_large_collections_choose_k_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clustering, "SWEEP_SAMPLE_MAX", 100)
    sizes = [70, 60, 50, 40]
    result = choose_k_and_cluster(blobs(sizes), **PARAMS)
    assert result.k == 4
    assert any("seeded sample of 100 images" in note for note in result.notes)
    # The final fit covers every image: each blob is one cluster.
    assert sorted(np.bincount(result.labels)) == [40, 50, 60, 70]
    assert pd.crosstab(truth(sizes), result.labels).gt(0).sum(axis=1).tolist() == [1, 1, 1, 1]


def test_clustering_is_deterministic_for_a_seed() -> None:
    matrix = blobs([30, 30, 30], dim=8, spread=3.0, seed=3)
    first = choose_k_and_cluster(matrix, **PARAMS)
    second = choose_k_and_cluster(matrix.copy(), **PARAMS)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.silhouette, second.silhouette)
    np.testing.assert_array_equal(first.centroid_distance, second.centroid_distance)
    assert first.inertia_by_k == second.inertia_by_k
    assert first.silhouette_by_k == second.silhouette_by_k
    assert first.notes == second.notes


@pytest.mark.parametrize(
    ("inertia", "elbow"),
    [
        # x = 0, .25, .5, .75, 1; y = 1, .2045, .0909, .0341, 0; 1 - x - y peaks at k = 3.
        ({2: 100.0, 3: 30.0, 4: 20.0, 5: 15.0, 6: 12.0}, 3),
        ({2: 100.0, 3: 90.0, 4: 80.0, 5: 10.0, 6: 5.0}, 5),
        ({2: 5.0, 3: 5.0, 4: 5.0}, 2),  # flat: the smallest k
        ({2: 10.0, 3: 5.0}, 2),  # two points: no knee, the smallest k
        ({2: 100.0, 3: 99.0, 4: 97.0, 5: 0.0}, 2),  # concave: nothing below the chord
    ],
)
def test_find_elbow(inertia: dict[int, float], elbow: int) -> None:
    assert find_elbow(inertia) == elbow


def test_fixed_k_skips_the_sweep() -> None:
    result = choose_k_and_cluster(blobs([20, 20, 20, 20]), **{**PARAMS, "k": 3})
    assert result.k == 3
    assert set(result.labels) == {0, 1, 2}
    assert result.inertia_by_k == {}
    assert result.silhouette_by_k == {}
    assert result.elbow_k is None
    assert "k fixed at 3" in result.notes


def test_exact_silhouette_matches_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix = blobs([90, 60, 49], dim=6, spread=2.0, seed=5)
    labels = np.array([0] * 80 + [1] * 70 + [2] * 48 + [3])  # includes a singleton cluster
    expected = silhouette_samples(matrix.astype(np.float64), labels)
    np.testing.assert_allclose(silhouette_exact(matrix, labels, 4), expected, atol=1e-5)
    assert silhouette_exact(matrix, labels, 4)[-1] == 0.0  # singleton
    # The same in blocks of 64 rows (each pair computed once, added to both images).
    monkeypatch.setattr(clustering, "_CHUNK_ELEMENTS", 1)
    np.testing.assert_allclose(silhouette_exact(matrix, labels, 4), expected, atol=1e-5)


def test_simplified_silhouette_above_the_exact_limit() -> None:
    matrix = blobs([30, 30], dim=4, seed=2)
    result = choose_k_and_cluster(matrix, **{**PARAMS, "exact_silhouette_max": 10})
    assert result.silhouette_method == "simplified"
    assert any("simplified" in note for note in result.notes)
    np.testing.assert_allclose(
        result.silhouette, silhouette_simplified(matrix, result.centroids, result.labels)
    )


def test_simplified_silhouette_by_hand() -> None:
    matrix = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    labels = np.array([0, 0, 1])
    # a = 0, 1, 0; b = 10, 9, 10 -> (b - a) / max(a, b) = 1, 8/9, 1
    np.testing.assert_allclose(
        silhouette_simplified(matrix, centroids, labels), [1.0, 8 / 9, 1.0], rtol=1e-6
    )


def test_centroid_distance_is_the_distance_to_the_own_centroid() -> None:
    matrix = blobs([20, 20], dim=5)
    result = choose_k_and_cluster(matrix, **{**PARAMS, "k": 2})
    expected = np.linalg.norm(
        matrix.astype(np.float64) - result.centroids[result.labels].astype(np.float64), axis=1
    )
    np.testing.assert_allclose(result.centroid_distance, expected, rtol=1e-5)
    for cluster in range(2):
        members = matrix[result.labels == cluster]
        np.testing.assert_allclose(result.centroids[cluster], members.mean(axis=0), atol=1e-4)


@pytest.mark.parametrize(
    "matrix",
    [
        np.zeros((0, 4), dtype=np.float32),
        np.ones((1, 4), dtype=np.float32),
        np.array([[0, 1], [1, 0]], dtype=np.float32),
        np.tile(np.array([[3.0, 4.0, 5.0]], dtype=np.float32), (12, 1)),  # all identical
    ],
    ids=["empty", "one", "two", "identical"],
)
def test_degenerate_inputs_give_one_cluster(matrix: np.ndarray) -> None:
    result = choose_k_and_cluster(matrix, **PARAMS)
    assert result.k == 1
    assert result.labels.tolist() == [0] * len(matrix)
    assert result.silhouette.tolist() == [0.0] * len(matrix)
    assert result.silhouette_method == "none"
    assert result.elbow_k is None
    assert np.isfinite(result.centroid_distance).all()


def test_k_range_is_clipped_to_the_images() -> None:
    matrix = blobs([2, 2, 1], dim=3)
    result = choose_k_and_cluster(matrix, **PARAMS)
    assert max(result.inertia_by_k) == 4  # N - 1
    assert 2 <= result.k <= 4
    assert any("clipped" in note for note in result.notes)


def test_fixed_k_larger_than_distinct_points_is_clipped() -> None:
    matrix = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 12 rows, 3 distinct
    result = choose_k_and_cluster(matrix, **{**PARAMS, "k": 6})
    assert result.k == 3
    assert any("clipped to 3" in note for note in result.notes)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), "NaN or infinite values in 1 row"),
        (np.array([[1.0, 2.0], [np.inf, 1.0], [1.0, 1.0]]), "first at row 1"),
        (np.ones(5), "2-D"),
        (np.ones((2, 2, 2)), "2-D"),
        (np.ones((3, 0)), "no feature columns"),
        ([[1.0, 2.0]], "numpy array"),
    ],
)
def test_bad_embeddings_are_rejected(matrix: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_k_and_cluster(matrix, **PARAMS)  # type: ignore[arg-type]


def test_assignments_frame() -> None:
    matrix = blobs([10, 10], dim=3)
    result = choose_k_and_cluster(matrix, **{**PARAMS, "k": 2})
    ids = [f"seq-001/frame_{i:04d}" for i in range(20)]
    frame = cluster_assignments_frame(ids, result)
    assert list(frame.columns) == ["image_id", "cluster", "centroid_distance", "silhouette"]
    assert frame["image_id"].tolist() == ids
    assert frame["cluster"].dtype == np.int64
    np.testing.assert_array_equal(frame["silhouette"], result.silhouette)
    with pytest.raises(ValueError, match="has 19 entries"):
        cluster_assignments_frame(ids[:19], result)
    with pytest.raises(ValueError, match="not unique"):
        cluster_assignments_frame(ids[:19] + ids[:1], result)


def test_the_k_range_grows_with_the_collection() -> None:
    assert clustering.sweep_k_max(600) == 20  # small collections: the study's old range
    assert clustering.sweep_k_max(11_000) == 52  # reaches well past the study's 26
    assert clustering.sweep_k_max(100_000) == 158
    assert clustering.sweep_k_max(1_000_000) == 500


def test_the_sweep_finds_the_studys_26_clusters_at_11000_images() -> None:
    """The study chose k = 26 on 11,084 images; a collection of that size with 26 planted
    clusters must get k = 26 from the default range (FAISS k-means at this size)."""
    sizes = list(np.random.default_rng(11).multinomial(11_000, [1 / 26] * 26))
    matrix = blobs(sizes, dim=32, spread=6.0, seed=12)
    result = choose_k_and_cluster(matrix, seed=0)
    assert max(result.inertia_by_k) == 52  # the derived k_max
    assert result.elbow_k == 26
    assert result.k == 26
    assert any("coarse grid" in note for note in result.notes)
    assert any("FAISS" in note for note in result.notes)
    # Every planted cluster is one cluster.
    assert pd.crosstab(truth(sizes), result.labels).gt(0).sum(axis=1).eq(1).all()
    again = choose_k_and_cluster(matrix, seed=0)
    np.testing.assert_array_equal(again.labels, result.labels)
