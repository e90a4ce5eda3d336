"""The class probe and the class-aware coverage ranking, on embeddings with planted classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imgrank_dagster.core.ranking import scores, strategies
from imgrank_dagster.core.ranking.neighbours import build_neighbour_graph
from imgrank_dagster.core.ranking.probe import class_uncertainty


def _planted(seed: int = 0, per_class: int = 40, dims: int = 32):
    """Three classes around orthogonal centres; class "c" lies between "a" and "b"'s halves."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dims)[:3] * 3.0
    labels = np.repeat(np.array(["a", "b", "c"]), per_class)
    points = centres[np.repeat(np.arange(3), per_class)]
    points = points + rng.standard_normal((len(labels), dims)) * 0.6
    return points.astype(np.float32), labels


def test_probe_is_unsure_between_classes_and_sure_inside_them() -> None:
    embeddings, labels = _planted()
    labelled = np.r_[0:10, 40:50]  # classes a and b only
    probe = class_uncertainty(embeddings, labelled, labels[labelled], seed=3)
    assert probe is not None and probe.classes == ("a", "b") and probe.trained_on == 20
    assert probe.uncertainty.min() >= 0.0 and probe.uncertainty.max() <= 1.0
    inside = probe.uncertainty[np.r_[10:40, 50:80]]
    between = probe.uncertainty[80:]  # class c: equally far from a and b
    assert np.median(between) > np.median(inside) + 0.3
    assert (probe.predicted[10:40] == "a").mean() > 0.9
    assert probe.cv_accuracy is not None and probe.cv_accuracy > 0.9
    again = class_uncertainty(embeddings, labelled, labels[labelled], seed=3)
    np.testing.assert_array_equal(again.uncertainty, probe.uncertainty)


def test_probe_needs_two_classes_and_matching_rows() -> None:
    embeddings, labels = _planted()
    assert class_uncertainty(embeddings, np.arange(10), labels[:10]) is None
    one_each = class_uncertainty(embeddings, np.array([0, 40]), np.array(["a", "b"]))
    assert one_each is not None and one_each.cv_accuracy is None  # too few to cross-validate
    with pytest.raises(ValueError, match="2 labelled rows but 3 classes"):
        class_uncertainty(embeddings, np.array([0, 1]), np.array(["a", "b", "c"]))


def _strategy_inputs(embeddings: np.ndarray):
    ids = [f"img/{row:03d}" for row in range(len(embeddings))]
    graph = build_neighbour_graph(embeddings, image_ids=ids).to_frame()
    features = pd.DataFrame(
        {
            "image_id": ids,
            "blur": 300.0,
            "brightness": 120.0,
            "min_value": 0.0,
            "max_value": 255.0,
            **{column: None for column in scores.IMAGE_INFO_COLUMNS if column != "image_id"},
        }
    )
    image_scores = pd.DataFrame({"image_id": ids, "cluster": 0, "labelled": False, "score": 0.5})
    metrics = pd.DataFrame({"cluster": [0], "priority_group": [1]})
    return ids, graph, features, image_scores, metrics


def test_coverage_turns_towards_what_the_class_probe_doubts() -> None:
    embeddings, labels = _planted(seed=4)
    ids, graph, features, image_scores, metrics = _strategy_inputs(embeddings)
    labelled = {ids[row] for row in np.r_[0:8, 40:48]}
    classes = pd.Series(labels, index=ids)[sorted(labelled)]

    def ranked(**kwargs) -> pd.DataFrame:
        return strategies.rank(
            "coverage",
            image_scores,
            metrics,
            features,
            labelled,
            neighbour_graph=graph,
            **kwargs,
        )

    plain = ranked()
    aware = ranked(classes=classes, embeddings=embeddings, seed=0)
    assert "class_probe" not in plain.attrs
    assert aware.attrs["class_probe"]["classes"] == ["a", "b"]
    assert aware.attrs["class_probe"]["trained_on"] == 16
    label_of = dict(zip(ids, labels, strict=True))
    # With the probe, more of the top 20 come from class c, which the probe doubts.
    in_c = lambda frame: (frame["image_id"].head(20).map(label_of) == "c").mean()  # noqa: E731
    assert in_c(aware) > in_c(plain)
    assert aware["reason"].head(5).str.contains(r"class probe: [ab] or [ab]\? \(uncertainty").all()
    assert (np.diff(aware["score"].to_numpy()) < 0).all()
    # One class only: pure coverage, the same order as without classes.
    one = ranked(classes=classes[classes == "a"], embeddings=embeddings)
    assert one["image_id"].tolist() == plain["image_id"].tolist()
    with pytest.raises(ValueError, match="embeddings have 3 rows"):
        ranked(classes=classes, embeddings=embeddings[:3])


def test_study_score_sorts_like_the_rank_and_keeps_the_formula() -> None:
    embeddings, _ = _planted(seed=5, per_class=10)
    _, _, features, image_scores, _ = _strategy_inputs(embeddings)
    rng = np.random.default_rng(5)
    image_scores = image_scores.assign(
        cluster=np.repeat([0, 1, 2], 10),
        score=np.round(rng.uniform(0, 1, 30), 1),  # ties on purpose
        **{column: 0.5 for column in scores.COMPONENT_COLUMNS},
    )
    metrics = pd.DataFrame({"cluster": [0, 1, 2], "priority_group": [2, 1, 1]})
    ranking = strategies.rank("study", image_scores, metrics, features, set())
    assert (np.diff(ranking["score"].to_numpy()) < 0).all()
    assert (ranking["score"] <= ranking["study_score"] + 1e-12).all()
    assert not ranking["study_score"].is_monotonic_decreasing  # groups first, then the score
