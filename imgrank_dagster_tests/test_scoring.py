"""Score components, the weighted formula, priority groups, the final order, the whole study."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imgrank_dagster.core.config import ScoringSettings
from imgrank_dagster.core.ranking import near_duplicates
from imgrank_dagster.core.ranking.scores import (
    STUDY_RANKING_COLUMNS,
    cluster_metrics,
    combine_score,
    duplicate_punishment,
    minmax_normalise,
    outlier_distance,
    priority_group,
    priority_groups,
    rank_images,
    score_region,
    similar_to_labelled,
)
from imgrank_dagster.core.ranking.study import (
    BASE_SCORE_COLUMNS,
    SCORE_COLUMNS,
    label_scores,
    run_study,
)

SETTINGS = ScoringSettings()


def pairs_frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["from_id", "to_id", "similarity"])


# --- near-duplicate punishment -------------------------------------------------------------


def test_duplicate_punishment_hand_table() -> None:
    ids = ["e", "b", "a", "d", "c", "f", "g"]
    clusters = np.array([0, 0, 0, 0, 1, 1, 0])
    pairs = pairs_frame(
        [
            ("b", "e", 0.95),
            ("d", "g", 0.93),
            ("c", "f", 0.99),
            ("a", "c", 0.97),  # a and c are in different clusters: ignored
            ("a", "b", 0.85),  # below the threshold: ignored
            ("e", "g", 0.90),  # exactly the threshold: joins {b, e} and {d, g}
        ]
    )
    punishment, group = duplicate_punishment(ids, clusters, pairs, threshold=0.9, punishment=0.5)
    # Groups {b, d, e, g} (first: b) and {c, f} (first: c); a is in none.
    expected = pd.DataFrame(
        {
            "punishment": [0.5, 1.0, 1.0, 0.5, 1.0, 0.5, 0.5],
            "group": [0, 0, -1, 0, 1, 1, 0],
        },
        index=ids,
    )
    np.testing.assert_array_equal(punishment, expected["punishment"])
    np.testing.assert_array_equal(group, expected["group"])


def test_duplicate_punishment_without_pairs_and_with_another_factor() -> None:
    ids = ["a", "b", "c"]
    punishment, group = duplicate_punishment(ids, np.zeros(3), pairs_frame([]), 0.9)
    assert punishment.tolist() == [1.0, 1.0, 1.0]
    assert group.tolist() == [-1, -1, -1]
    pairs = pairs_frame([("c", "b", 0.99)])
    punishment, group = duplicate_punishment(ids, np.zeros(3), pairs, 0.9, punishment=0.25)
    assert punishment.tolist() == [1.0, 1.0, 0.25]
    assert group.tolist() == [-1, 0, 0]


def test_pairs_must_name_known_images() -> None:
    with pytest.raises(ValueError, match="'x', which is not among image_ids"):
        duplicate_punishment(["a", "b"], np.zeros(2), pairs_frame([("a", "x", 0.99)]), 0.9)


# --- outliers per cluster -----------------------------------------------------------------


def test_outlier_distance_runs_fastdup_within_each_cluster() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(43, 16)).astype(np.float32)
    ids = [f"img-{i:02d}" for i in range(43)]
    clusters = np.array([0] * 20 + [1] * 20 + [2] * 3)  # cluster 2 is too small for outliers
    result = outlier_distance(ids, matrix, clusters, percentile=0.05)
    for cluster in (0, 1):
        members = np.flatnonzero(clusters == cluster)
        found = near_duplicates.outliers([ids[i] for i in members], matrix[members], 0.05)
        assert not found.empty
        expected = pd.Series(0.0, index=[ids[i] for i in members])
        expected[found["image_id"]] = found["outlier_distance"].to_numpy()
        np.testing.assert_allclose(result[members], expected.to_numpy())
    assert result[40:].tolist() == [0.0, 0.0, 0.0]


# --- similarity to labelled images ---------------------------------------------------------


def test_similar_to_labelled_hand_table() -> None:
    ids = ["a", "b", "c", "d", "e", "f"]
    pairs = pairs_frame(
        [
            ("a", "b", 0.95),
            ("b", "d", 0.97),  # b has two labelled neighbours: the higher similarity counts
            ("a", "c", 0.85),  # below the threshold
            ("d", "e", 0.90),  # exactly the threshold
            ("a", "d", 0.99),  # both labelled
            ("e", "f", 0.96),  # neither labelled
        ]
    )
    result = similar_to_labelled(ids, {"a", "d", "not-in-collection"}, pairs, threshold=0.9)
    np.testing.assert_allclose(result, [0.0, 0.97, 0.0, 0.0, 0.90, 0.0])


# --- normalisation and the formula ---------------------------------------------------------


def test_minmax_normalise() -> None:
    np.testing.assert_allclose(minmax_normalise([2.0, 6.0, 4.0]), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(minmax_normalise(pd.Series([-3, -1])), [0.0, 1.0])
    assert minmax_normalise([7.0, 7.0, 7.0]).tolist() == [0.0, 0.0, 0.0]  # no spread
    assert minmax_normalise([5.0]).tolist() == [0.0]
    assert minmax_normalise([]).size == 0
    with pytest.raises(ValueError, match="NaN"):
        minmax_normalise([1.0, np.nan])


COMPONENTS = pd.DataFrame(
    {
        "uniqueness": [0.8, 1.0, 0.6],
        "uniqueness_punishment": [0.5, 1.0, 1.0],
        "outlier_distance": [0.3, 0.0, 0.9],
        "similar_distance": [0.7, 0.0, 0.0],
        "blur": [0.11, 1.0, 0.5],
        "brightness": [0.13, 1.0, 0.25],
    },
    index=[10, 11, 12],
)


def test_combine_score_hand_table() -> None:
    score = combine_score(COMPONENTS)
    # 0.8*0.5 - 0.15*0.3 - 1*0.7 + 0.2*0.11 + 0.05*0.13 = 0.4 - 0.045 - 0.7 + 0.022 + 0.0065
    # 1*1 + 0.2*1 + 0.05*1; 0.6*1 - 0.15*0.9 + 0.2*0.5 + 0.05*0.25
    np.testing.assert_allclose(score, [-0.3165, 1.25, 0.5775])
    assert score.index.tolist() == [10, 11, 12]
    assert score.name == "score"


def test_combine_score_uses_each_weight_for_its_own_component() -> None:
    # Swapping the blur and brightness weights changes the first row's score by
    # (0.05 - 0.2) * 0.11 + (0.2 - 0.05) * 0.13 = +0.003.
    swapped = SETTINGS.model_copy(update={"w_blur": 0.05, "w_brightness": 0.2})
    np.testing.assert_allclose(combine_score(COMPONENTS, **swapped.score_weights).iloc[0], -0.3135)


@pytest.mark.parametrize(
    ("component", "weight"),
    [
        ("outlier_distance", "w_outlier"),
        ("similar_distance", "w_similar"),
        ("blur", "w_blur"),
        ("brightness", "w_brightness"),
    ],
)
def test_each_weight_multiplies_its_component(component: str, weight: str) -> None:
    components = pd.DataFrame({column: [0.0] for column in COMPONENTS.columns})
    components[component] = 0.37
    settings = ScoringSettings(w_outlier=-0.11, w_similar=-0.7, w_blur=0.3, w_brightness=0.07)
    expected = getattr(settings, weight) * 0.37
    assert combine_score(components, **settings.score_weights).iloc[0] == pytest.approx(expected)


def test_combine_score_rejects_missing_or_nan_components() -> None:
    with pytest.raises(ValueError, match="blur"):
        combine_score(COMPONENTS.drop(columns="blur"))
    broken = COMPONENTS.copy()
    broken.loc[11, "uniqueness"] = np.nan
    with pytest.raises(ValueError, match="'uniqueness' has NaN"):
        combine_score(broken)


# --- priority groups -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labelled", "size", "group"),
    [
        (0, 100, 1),
        (0, 1, 1),
        (1, 100, 2),
        (2, 100, 2),
        (3, 100, 3),  # exactly 3 %: not under 3 %
        (9, 301, 2),  # 2.99 %
        (9, 300, 3),  # exactly 3 %
        (1, 34, 2),  # 2.94 %
        (1, 33, 3),  # 3.03 %
        (9, 1000, 2),
        (10, 1000, 3),  # exactly 10: not fewer than 10
        (5, 100, 3),  # 5 %: not under 3 %
        (29, 100, 3),
        (30, 100, 4),  # exactly 30 %
        (3, 10, 4),  # exactly 30 %
        (49, 164, 3),  # 29.9 %
        (49, 163, 4),  # 30.06 %
        (49, 1000, 3),
        (50, 1000, 4),  # exactly 50
        (1, 1, 4),
    ],
)
def test_priority_group_boundaries(labelled: int, size: int, group: int) -> None:
    assert priority_group(labelled, size) == group
    assert priority_groups(np.array([labelled, 0]), np.array([size, 5])).tolist() == [
        group,
        1,
    ]


def test_priority_group_thresholds_come_from_the_settings() -> None:
    settings = ScoringSettings(priority_few_count=2, priority_few_fraction=0.2)
    assert priority_group(1, 10, **settings.priority_params) == 2
    assert priority_group(2, 10, **settings.priority_params) == 3
    assert priority_group(1, 10) == 3  # study: 10 % is not under 3 %
    with pytest.raises(ValueError, match="must not exceed priority_some_fraction"):
        ScoringSettings(priority_few_fraction=0.5)


@pytest.mark.parametrize(("labelled", "size"), [(1, 0), (3, 2), (-1, 5)])
def test_priority_group_rejects_impossible_counts(labelled: int, size: int) -> None:
    with pytest.raises(ValueError):
        priority_group(labelled, size)


# --- cluster metrics -----------------------------------------------------------------------


def test_cluster_metrics_hand_table() -> None:
    assignments = pd.DataFrame(
        {
            "image_id": ["c1", "a1", "b1", "z1", "y1"],
            "cluster": [0, 0, 0, 1, 1],
            "centroid_distance": [0.5, 0.3, 0.3, 1.0, 2.0],  # a1 and b1 tie: a1 first
            "silhouette": [0.2, 0.4, 0.6, -0.1, 0.3],
        }
    )
    metrics = cluster_metrics(assignments, {"b1", "not-in-collection"}, **SETTINGS.priority_params)
    expected = pd.DataFrame(
        {
            "cluster": [0, 1],
            "size": [3, 2],
            "labelled_count": [1, 0],
            "labelled_fraction": [1 / 3, 0.0],
            "priority_group": [4, 1],  # 33 % is not under 30 %
            "mean_silhouette": [0.4, 0.1],
            "nearest_image_id": ["a1", "z1"],
        }
    )
    pd.testing.assert_frame_equal(metrics, expected, check_dtype=False)
    assert metrics["priority_group"].dtype == np.int64


# --- regions and the final order -----------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "region"),
    [(0.81, "good"), (0.8, "medium"), (0.5, "medium"), (0.2, "medium"), (0.19, "bad"), (-1, "bad")],
)
def test_score_region(score: float, region: str) -> None:
    assert score_region(score, good=0.8, bad=0.2) == region


def test_score_region_vectorised() -> None:
    regions = score_region(np.array([0.9, 0.5, 0.1]), good=0.8, bad=0.2)
    assert list(regions) == ["good", "medium", "bad"]


def scores_table() -> pd.DataFrame:
    rows = [
        # image_id, cluster, labelled, score
        ("m", 1, False, 0.90),
        ("n", 0, False, 0.85),
        ("k", 0, False, 0.85),
        ("p", 2, False, 0.95),
        ("q", 0, False, 0.50),
        ("r", 2, False, 0.79),
        ("s", 1, False, 0.10),
        ("t", 0, False, -0.20),
        ("u", 0, True, 0.99),  # labelled: never ranked
    ]
    frame = pd.DataFrame(rows, columns=["image_id", "cluster", "labelled", "score"])
    for column, value in {
        "uniqueness": 0.5,
        "uniqueness_punishment": 1.0,
        "outlier_distance": 0.0,
        "similar_distance": 0.0,
        "blur": 0.5,
        "brightness": 0.5,
    }.items():
        frame[column] = value
    return frame


METRICS = pd.DataFrame({"cluster": [0, 1, 2], "priority_group": [1, 3, 4]})


def test_rank_order_region_then_priority_then_score_then_id() -> None:
    ranking = rank_images(scores_table(), METRICS, **SETTINGS.region_params)
    assert list(ranking.columns) == STUDY_RANKING_COLUMNS
    # good: k, n (group 1, tied score: by id), m (group 3), p (group 4, despite its higher
    # score); medium: q (group 1), r (group 4); bad: t (group 1), s (group 3).
    assert ranking["image_id"].tolist() == ["k", "n", "m", "p", "q", "r", "t", "s"]
    assert ranking["rank"].tolist() == list(range(1, 9))
    assert ranking["region"].tolist() == ["good"] * 4 + ["medium"] * 2 + ["bad"] * 2
    assert ranking["priority_group"].tolist() == [1, 1, 3, 4, 1, 4, 1, 3]


def test_rank_copies_image_info_and_writes_reasons() -> None:
    scores = scores_table()
    scores.loc[scores["image_id"] == "k", ["uniqueness", "uniqueness_punishment"]] = [1.0, 0.5]
    scores.loc[scores["image_id"] == "k", ["outlier_distance", "similar_distance"]] = [0.3, 0.9]
    scores.loc[scores["image_id"] == "k", ["blur", "brightness"]] = [0.9, 0.1]
    scores.loc[scores["image_id"] == "p", ["uniqueness", "blur", "brightness"]] = [0.1, 0.1, 0.9]
    info = pd.DataFrame(
        {
            "image_id": ["k", "p"],
            "path": ["seq-1/k.jpg", "seq-2/p.jpg"],
            "sequence_id": ["seq-1", "seq-2"],
            "lat": [52.5, 52.6],
        }
    )
    ranking = rank_images(scores, METRICS, image_info=info).set_index("image_id")
    assert ranking.loc["k", "reason"] == (
        "cluster 0 has no labelled image; most unique in its cluster; near-duplicate of an "
        "earlier image; outlier; similar to a labelled image; sharp; dark"
    )
    assert ranking.loc["p", "reason"] == "cluster 2 is well labelled; typical; blurry; bright"
    assert ranking.loc["m", "reason"] == "cluster 1 is partly labelled"
    assert ranking.loc["k", "path"] == "seq-1/k.jpg"
    assert ranking.loc["p", "lat"] == 52.6
    assert pd.isna(ranking.loc["m", "path"])
    assert ranking["lng"].isna().all()  # not in image_info


def test_rank_needs_metrics_for_every_cluster() -> None:
    with pytest.raises(ValueError, match=r"no row for cluster\(s\) \[2\]"):
        rank_images(scores_table(), METRICS[METRICS["cluster"] != 2])


# --- the whole study -----------------------------------------------------------------------


def study_features(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 24)) * 6
    matrix = np.vstack([centre + rng.normal(size=(30, 24)) for centre in centres])
    matrix[1] = matrix[0] + 0.001  # a near-duplicate pair in cluster of blob 0
    matrix = matrix.astype(np.float32)
    ids = [f"seq-{i // 30:03d}/frame_{i % 30:04d}" for i in range(90)]
    return pd.DataFrame(
        {
            "image_id": ids,
            "sequence_id": [image_id.split("/")[0] for image_id in ids],
            "path": [f"{image_id}.jpg" for image_id in ids],
            "embedding": list(matrix),
            "blur": rng.uniform(10, 900, 90),
            "brightness": rng.uniform(20, 230, 90),
        }
    )


def test_run_study_end_to_end() -> None:
    features = study_features()
    labelled = {"seq-001/frame_0003", "seq-001/frame_0004"}
    result = run_study(features, labelled, k_max=6)

    assert result.clustering.k == 3
    assert list(result.assignments.columns) == [
        "image_id",
        "cluster",
        "centroid_distance",
        "silhouette",
    ]
    assert list(result.base_scores.columns) == BASE_SCORE_COLUMNS
    assert list(result.scores.columns) == SCORE_COLUMNS
    assert list(result.ranking.columns) == STUDY_RANKING_COLUMNS
    assert list(result.similar_pairs.columns) == ["from_id", "to_id", "similarity"]

    # The planted near-duplicate: the later image id is punished.
    base = result.base_scores.set_index("image_id")
    assert base.loc["seq-000/frame_0000", "uniqueness_punishment"] == 1.0
    assert base.loc["seq-000/frame_0001", "uniqueness_punishment"] == 0.5
    assert base.loc["seq-000/frame_0001", "duplicate_group"] >= 0
    assert base["blur"].min() == 0.0 and base["blur"].max() == 1.0

    # Only the labelled images' cluster has labels: it is the one ranked after the others.
    metrics = result.cluster_metrics.set_index("cluster")
    labelled_cluster = base.loc["seq-001/frame_0003", "cluster"]
    assert metrics.loc[labelled_cluster, "labelled_count"] == 2
    assert metrics.loc[labelled_cluster, "priority_group"] == 3  # 2 of 30 = 6.7 %
    assert (metrics.drop(index=labelled_cluster)["priority_group"] == 1).all()
    ranking = result.ranking
    for _, region in ranking.groupby("region"):
        assert region["priority_group"].is_monotonic_increasing
    assert len(ranking) == 88
    assert not ranking["image_id"].isin(labelled).any()
    assert ranking["rank"].tolist() == list(range(1, 89))
    np.testing.assert_allclose(
        ranking["score"],
        result.scores.set_index("image_id").loc[ranking["image_id"], "score"],
    )


def test_label_scores_only_change_label_dependent_columns() -> None:
    features = study_features(seed=1)
    result = run_study(features, set(), k=3, similarity_threshold=0.5)
    pair = result.similar_pairs.iloc[0]
    relabelled = label_scores(
        result.base_scores, result.similar_pairs, {pair.from_id}, similarity_threshold=0.5
    )
    before = result.scores.set_index("image_id")
    after = relabelled.set_index("image_id")
    unchanged = [column for column in BASE_SCORE_COLUMNS if column != "image_id"]
    pd.testing.assert_frame_equal(before[unchanged], after[unchanged])
    assert after.loc[pair.from_id, "labelled"]
    assert after.loc[pair.to_id, "similar_distance"] >= pair.similarity
    assert after.loc[pair.to_id, "score"] < before.loc[pair.to_id, "score"]


def test_run_study_rejects_bad_embeddings() -> None:
    features = study_features().iloc[:5].copy()
    features["embedding"] = [np.ones(4), np.ones(4), np.ones(3), np.ones(4), np.ones(4)]
    with pytest.raises(ValueError):
        run_study(features, set())
    features["embedding"] = [np.ones(4)] * 4 + [np.array([1.0, np.nan, 1.0, 1.0])]
    with pytest.raises(ValueError, match="NaN or infinite values in 1 row"):
        run_study(features, set())
    with pytest.raises(ValueError, match="one row per feature row"):
        run_study(features, set(), embeddings=np.ones((4, 4), dtype=np.float32))
