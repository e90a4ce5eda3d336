"""Similar pairs and outliers with fastdup's definitions, checked against exact cosine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imgrank_dagster.core.ranking.near_duplicates import near_duplicates, outliers, similar_pairs

K = 2  # fastdup's default number of neighbours


def random_embeddings(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Isotropic float32 vectors: distinct images have cosine similarity near 0."""
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def ids_for(n: int) -> list[str]:
    # Not in sorted order, with characters fastdup must never see in a file name.
    return [f"seq {(7 * i) % n:03d}/frame_{i:04d}" for i in range(n)]


def exact_neighbour_similarities(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    unit = matrix.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1)[:, :k]
    return neighbours, np.take_along_axis(similarity, neighbours, axis=1)


def test_planted_near_duplicates_are_the_similar_pairs() -> None:
    matrix = random_embeddings(60)
    rng = np.random.default_rng(1)
    matrix[10] = matrix[3] + 0.01 * rng.normal(size=32)
    matrix[20] = matrix[3] + 0.01 * rng.normal(size=32)
    matrix[7] = matrix[5] * 3.0  # same direction, other length: cosine similarity 1
    ids = ids_for(60)
    pairs = similar_pairs(ids, matrix, threshold=0.95)

    assert list(pairs.columns) == ["from_id", "to_id", "similarity"]
    expected = {tuple(sorted((ids[a], ids[b]))) for a, b in [(3, 10), (3, 20), (10, 20), (5, 7)]}
    assert set(zip(pairs["from_id"], pairs["to_id"], strict=True)) == expected
    assert (pairs["from_id"] < pairs["to_id"]).all()
    assert pairs[["from_id", "to_id"]].equals(
        pairs[["from_id", "to_id"]].sort_values(["from_id", "to_id"]).reset_index(drop=True)
    )
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    row = {image_id: i for i, image_id in enumerate(ids)}
    for pair in pairs.itertuples():
        exact = float(unit[row[pair.from_id]] @ unit[row[pair.to_id]])
        assert pair.similarity == pytest.approx(exact, abs=1e-5)


def test_pairs_are_the_neighbour_pairs_above_the_threshold() -> None:
    """fastdup keeps, among each image's K nearest neighbours, those at or above threshold."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 16))
    matrix = (centres[rng.integers(0, 4, 80)] + 0.35 * rng.normal(size=(80, 16))).astype(np.float32)
    ids = [f"img-{i:03d}" for i in range(80)]
    threshold = 0.9
    neighbours, similarity = exact_neighbour_similarities(matrix, K)
    expected = {
        tuple(sorted((ids[i], ids[neighbours[i, j]])))
        for i in range(80)
        for j in range(K)
        if similarity[i, j] >= threshold
    }
    pairs = similar_pairs(ids, matrix, threshold=threshold)
    assert len(expected) > 10
    assert set(zip(pairs["from_id"], pairs["to_id"], strict=True)) == expected
    assert (pairs["similarity"] >= threshold).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_outliers_are_the_lowest_percentile_of_neighbour_pairs(seed: int) -> None:
    """fastdup's rule: of all N*K neighbour pairs, the lowest `percentile` flag their source
    image; the value is the lowest similarity among that image's flagged pairs."""
    n, percentile = 100, 0.05
    matrix = random_embeddings(n, seed=seed)
    ids = ids_for(n)
    _, similarity = exact_neighbour_similarities(matrix, K)
    pairs = pd.DataFrame({"row": np.repeat(np.arange(n), K), "similarity": similarity.ravel()})
    lowest = pairs.nsmallest(round(percentile * n * K), "similarity")
    expected = lowest.groupby("row")["similarity"].min()
    expected.index = [ids[row] for row in expected.index]

    found = outliers(ids, matrix, percentile=percentile)
    assert list(found.columns) == ["image_id", "outlier_distance"]
    assert found["image_id"].tolist() == sorted(expected.index)
    np.testing.assert_allclose(
        found["outlier_distance"].to_numpy(), expected.sort_index().to_numpy(), atol=1e-5
    )


def test_an_isolated_image_is_an_outlier() -> None:
    matrix = np.abs(random_embeddings(40, seed=5))  # all in the positive orthant
    matrix[17] = -matrix[17]  # pointing away from everything
    ids = ids_for(40)
    found = outliers(ids, matrix, percentile=0.05).set_index("image_id")["outlier_distance"]
    assert ids[17] in found.index
    assert found[ids[17]] == found.min()
    assert found[ids[17]] < 0  # a cosine similarity: lower = more isolated


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_tiny_inputs_do_not_crash(n: int) -> None:
    matrix = random_embeddings(max(n, 1))[:n]
    graph = near_duplicates(ids_for(n), matrix)
    assert list(graph.pairs.columns) == ["from_id", "to_id", "similarity"]
    assert list(graph.outliers.columns) == ["image_id", "outlier_distance"]
    assert graph.outliers.empty  # too few images for a meaningful percentile
    assert graph.pairs.empty  # random vectors: nothing similar


def test_two_identical_images_are_a_pair() -> None:
    matrix = np.repeat(random_embeddings(1), 2, axis=0)
    pairs = similar_pairs(["b", "a"], matrix, threshold=0.9)
    assert pairs.to_dict("records") == [
        {"from_id": "a", "to_id": "b", "similarity": pytest.approx(1.0, abs=1e-6)}
    ]


@pytest.mark.parametrize(
    ("ids", "matrix", "message"),
    [
        (["a", "b"], np.ones((3, 4), dtype=np.float32), "3 rows but there are 2 image ids"),
        (["a", "a", "b"], np.ones((3, 4), dtype=np.float32), "not unique"),
        (["a", "b"], np.array([[1.0, np.nan], [1.0, 1.0]]), "NaN"),
        (["a", "b"], np.ones(2), "2-D"),
    ],
)
def test_bad_input_is_rejected(ids: list[str], matrix: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        similar_pairs(ids, matrix, threshold=0.9)


def test_bad_parameters_are_rejected() -> None:
    matrix = random_embeddings(4)
    with pytest.raises(ValueError, match="threshold"):
        similar_pairs(ids_for(4), matrix, threshold=1.5)
    with pytest.raises(ValueError, match="percentile"):
        outliers(ids_for(4), matrix, percentile=0)
