"""FiftyOne uniqueness re-implemented in numpy, checked against fiftyone.brain itself."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

from imgrank_dagster.core.ranking import uniqueness  # imgrank_dagster sets FiftyOne's no-tracking
from imgrank_dagster.core.ranking.uniqueness import (
    fiftyone_uniqueness,
    uniqueness_by_cluster,
    uniqueness_within_clusters,
)

# Centred rows: A1, A2 = (1, 0) (twins), B1, B2 = (-1, 0) (twins), Z = (0, 0).
# Cosine distance: twins 0, A-B 2, anything-Z 1 (a zero row normalises to zero).
# A: 4 nearest others 0, 1, 2, 2 -> drop the nearest -> (0.6*1 + 0.3*2 + 0.1*2) / 3 = 1.4/3
# Z: 1, 1, 1, 1 -> (0.6 + 0.3 + 0.1) / 3 = 1/3; divided by the maximum 1.4/3: Z = 5/7.
HAND_MATRIX = np.array([[1, 0], [1, 0], [-1, 0], [-1, 0], [0, 0]], dtype=np.float32) + 5
HAND_EXPECTED = np.array([1, 1, 1, 1, 5 / 7])


def planted(n: int = 40, dim: int = 24, seed: int = 0) -> np.ndarray:
    """Random float32 embeddings (not centred, not normalised) with a twin and a triplet."""
    rng = np.random.default_rng(seed)
    matrix = (rng.normal(size=(n, dim)) + 2.0).astype(np.float32)
    matrix[1] = matrix[0] + 0.001  # near twin
    matrix[5] = matrix[4]
    matrix[6] = matrix[4]  # exact triplet
    return matrix


@pytest.fixture(scope="module")
def fiftyone_brain(fiftyone_database: str) -> Iterator[object]:
    """fiftyone and fiftyone.brain on the private MongoDB; test datasets are deleted after."""
    import fiftyone as fo
    import fiftyone.brain as fob

    yield fo, fob
    for name in fo.list_datasets():
        if name.startswith("imgrank-test-"):
            fo.delete_dataset(name)


def fiftyone_scores(fiftyone_brain: object, matrix: np.ndarray, name: str) -> np.ndarray:
    """fiftyone.brain.compute_uniqueness on a dataset of len(matrix) dummy samples."""
    fo, fob = fiftyone_brain  # type: ignore[misc]
    dataset = fo.Dataset(f"imgrank-test-{name}")
    try:
        # The files do not exist: with precomputed embeddings FiftyOne never opens them.
        dataset.add_samples(
            [fo.Sample(filepath=f"/nonexistent/{name}/{i:03d}.jpg") for i in range(len(matrix))]
        )
        fob.compute_uniqueness(dataset, embeddings=matrix.copy(), progress=False)
        return np.array(dataset.values("uniqueness"), dtype=np.float64)
    finally:
        dataset.delete()


def test_equals_fiftyone_on_forty_samples(fiftyone_brain: object) -> None:
    matrix = planted()
    expected = fiftyone_scores(fiftyone_brain, matrix, "forty")
    np.testing.assert_allclose(fiftyone_uniqueness(matrix), expected, rtol=0, atol=1e-6)
    # The exact twin pair and the triplet are not "unique" to the same degree as the rest.
    assert expected.max() == pytest.approx(1.0)


def test_equals_fiftyone_within_each_cluster(fiftyone_brain: object) -> None:
    """FiftyOne centres the set it is called on: per cluster = called on each cluster."""
    matrix = planted(n=30, seed=4)
    matrix[15:] += 3.0  # a second group, so per-cluster and global centring differ
    clusters = np.repeat([0, 1], 15)
    within = uniqueness_within_clusters(matrix, clusters)
    for cluster in (0, 1):
        members = clusters == cluster
        expected = fiftyone_scores(fiftyone_brain, matrix[members], f"cluster-{cluster}")
        np.testing.assert_allclose(within[members], expected, rtol=0, atol=1e-6)
    assert not np.allclose(within, fiftyone_uniqueness(matrix), atol=1e-3)


def test_hand_example_and_fiftyone_agree(fiftyone_brain: object) -> None:
    np.testing.assert_allclose(fiftyone_uniqueness(HAND_MATRIX), HAND_EXPECTED, atol=1e-6)
    expected = fiftyone_scores(fiftyone_brain, HAND_MATRIX, "hand")
    np.testing.assert_allclose(expected, HAND_EXPECTED, atol=1e-6)


def test_small_sets_follow_fiftyone(fiftyone_brain: object) -> None:
    matrix = np.random.default_rng(9).normal(size=(5, 6)).astype(np.float32)
    for size in (1, 2, 3):
        assert fiftyone_scores(fiftyone_brain, matrix[:size], f"n{size}").tolist() == [1.0] * size
        assert fiftyone_uniqueness(matrix[:size]).tolist() == [1.0] * size
    np.testing.assert_allclose(
        fiftyone_uniqueness(matrix),
        fiftyone_scores(fiftyone_brain, matrix, "n5"),
        atol=1e-6,
    )
    # Four samples: FiftyOne's 4th neighbour is its own excluded diagonal, so it returns NaN.
    assert np.isnan(fiftyone_scores(fiftyone_brain, matrix[:4], "n4")).all()


def test_four_samples_use_the_three_neighbours_there_are() -> None:
    # Centred: (3,0), (1,0), (-1,0), (-3,0) on a line: cosine distances 0 or 2.
    matrix = np.array([[13, 10], [11, 10], [9, 10], [7, 10]], dtype=np.float64)
    # Row 0: others at 0, 2, 2 -> drop nearest -> (0.6*2 + 0.3*2 + 0.1*0) / 3 = 0.6 for all.
    np.testing.assert_allclose(fiftyone_uniqueness(matrix), [1, 1, 1, 1])
    matrix = np.array([[3, 2], [2, 3], [1, 2], [2, 1]], dtype=np.float64)
    # Square: others at 1, 1, 2 for every row -> equal scores -> all 1.
    np.testing.assert_allclose(fiftyone_uniqueness(matrix), [1, 1, 1, 1])


def test_all_scores_zero_when_every_image_has_three_twins() -> None:
    matrix = np.repeat(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), 5, axis=0)
    # Nothing is unique. FiftyOne divides float32 rounding noise (about 1e-8) by its maximum
    # here, which gives arbitrary scores near 1 (or 0/0); every score is 0 instead.
    assert fiftyone_uniqueness(matrix).tolist() == [0.0] * 10


def test_large_sets_use_euclidean_distances_like_fiftyone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above 15,000 FiftyOne's sklearn backend searches neighbours on unit vectors."""
    monkeypatch.setattr(uniqueness, "_MAX_PRECOMPUTE_DISTS", 20)
    matrix = planted(n=60, dim=12, seed=2)
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    neighbours = NearestNeighbors(metric="euclidean").fit(normalize(centred, axis=1))
    distances, _ = neighbours.kneighbors(n_neighbors=4)  # X=None: oneself excluded
    expected = np.mean(distances[:, 1:] * [0.6, 0.3, 0.1], axis=1)
    expected /= expected.max()
    np.testing.assert_allclose(fiftyone_uniqueness(matrix), expected, atol=1e-6)


def test_within_clusters_scores_each_cluster_on_its_own() -> None:
    matrix = planted(n=20, seed=1)
    clusters = np.array([2, 7] * 10)
    within = uniqueness_within_clusters(matrix, clusters)
    for cluster in (2, 7):
        members = clusters == cluster
        np.testing.assert_array_equal(within[members], fiftyone_uniqueness(matrix[members]))
        assert within[members].max() == 1.0


def test_clusters_above_the_exact_limit_use_the_approximate_index_and_say_so() -> None:
    """Up to the exact limit the neighbours are exact (FiftyOne's scores); above it FAISS's
    inverted file index finds them, with its recall reported, and the scores follow."""
    matrix = planted(n=3000, dim=32, seed=5)
    clusters = np.repeat([0, 1], 1500)
    exact = uniqueness_by_cluster(matrix, clusters)
    approximate = uniqueness_by_cluster(matrix, clusters, exact_limit=1000)
    assert {search["method"] for search in exact.searches.values()} == {"exact"}
    for search in approximate.searches.values():
        assert search["method"] == "ivf"
        assert search["recall"] >= 0.95
    # A missed neighbour changes a score (and, for the cluster's most unique image, the scale
    # of all of them): the order stays.
    for cluster in (0, 1):
        members = clusters == cluster
        correlation = np.corrcoef(approximate.scores[members], exact.scores[members])[0, 1]
        assert correlation > 0.98


@pytest.mark.parametrize(
    ("matrix", "clusters", "message"),
    [
        (np.ones(4), np.zeros(4), "2-D"),
        (np.array([[1.0, np.nan]] * 5), np.zeros(5), "NaN"),
        (np.ones((5, 2)), np.zeros(4), "one label per embedding row"),
    ],
)
def test_bad_input_is_rejected(matrix: np.ndarray, clusters: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        uniqueness_within_clusters(matrix, clusters)
