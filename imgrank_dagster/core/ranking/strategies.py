"""One entry point for the final ranking, whichever strategy a collection selects.

Both strategies return RANKING_COLUMNS (the study's ranking columns, then the coverage
strategy's own), so everything downstream (exports, report, FiftyOne) reads one table. In
both the exported `score` decreases strictly with rank (sorting by it gives the ranking's
order): the coverage strategy's is what each pick adds; the study's is its formula's score,
lowered where the priority groups put a lower score first (the formula's own value stays in
`study_score`).
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import pandas as pd

from imgrank_dagster.core.config.collections import STRATEGIES, Strategy
from imgrank_dagster.core.ranking import scores
from imgrank_dagster.core.ranking.coverage import (
    Objective,
    rank_by_coverage,
    strictly_decreasing,
)
from imgrank_dagster.core.ranking.focus import FOCUS_COLUMNS
from imgrank_dagster.core.ranking.neighbours import NeighbourGraph
from imgrank_dagster.core.ranking.probe import ProbeResult, class_uncertainty

QUALITY_COLUMNS = ["image_id", "blur", "brightness", "min_value", "max_value"]
COVERAGE_EXTRA_COLUMNS = [
    "study_score",
    "covers",
    "stage",
    "radius",
    "typicality",
    "opens_unlabelled_cluster",
    "nearest_chosen_id",
    "nearest_chosen_similarity",
    "held_back_reason",
]
# The labeling_priority table: the same columns whichever strategy ranked.
RANKING_COLUMNS = [*scores.STUDY_RANKING_COLUMNS, *COVERAGE_EXTRA_COLUMNS]


def rank(
    strategy: Strategy,
    image_scores: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    features: pd.DataFrame,
    labelled_ids: Set[str],
    *,
    neighbour_graph: pd.DataFrame | None = None,
    focus: pd.DataFrame | None = None,
    good_threshold: float = 0.8,
    bad_threshold: float = 0.2,
    objective: Objective = "soft",
    classes: pd.Series | None = None,
    embeddings: np.ndarray | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The labeling_priority table for a collection (see RANKING_COLUMNS).

    focus: image_id and focus.FOCUS_COLUMNS (core.ranking.focus.focus_frame; strategy
    "coverage" only): covering an image is worth its focus_weight, the reason of an image near
    an example names it, and the focus columns follow RANKING_COLUMNS. None: no focus.
    good_threshold and bad_threshold are the study's score regions (strategy "study" only).
    Strategy "coverage": objective (see core.ranking.coverage); classes (image_id -> class of
    the labelled images, '' for none) with embeddings (rows aligned with features) turn on
    the class-aware weighting when at least two classes are labelled; attrs["class_probe"]
    then says how the probe was trained and its cross-validated accuracy.
    """
    if strategy == "study":
        if focus is not None:
            raise ValueError("a focus needs the coverage strategy")
        ranking = scores.rank_images(
            image_scores,
            cluster_metrics,
            good_threshold=good_threshold,
            bad_threshold=bad_threshold,
            image_info=features,
        )
        ranking["study_score"] = ranking["score"]
        ranking["score"] = strictly_decreasing(ranking["score"].to_numpy(dtype=float))
        return ranking.reindex(columns=RANKING_COLUMNS)
    if strategy == "coverage":
        if neighbour_graph is None:
            raise ValueError("the coverage strategy needs the collection's neighbour graph")
        probe = None
        if classes is not None and embeddings is not None:
            probe = _class_probe(features, labelled_ids, classes, embeddings, seed=seed)
        ranking = _coverage(
            image_scores,
            cluster_metrics,
            features,
            labelled_ids,
            neighbour_graph,
            objective=objective,
            probe=probe,
            focus=focus,
        )
        attrs = dict(ranking.attrs)
        if focus is not None:
            ranking = _with_focus(ranking, focus)
        if probe is not None:
            attrs["class_probe"] = {
                "classes": list(probe.classes),
                "trained_on": probe.trained_on,
                "cv_accuracy": probe.cv_accuracy,
            }
        ranking.attrs = attrs
        return ranking
    raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")


def _class_probe(
    features: pd.DataFrame,
    labelled_ids: Set[str],
    classes: pd.Series,
    embeddings: np.ndarray,
    *,
    seed: int,
) -> ProbeResult | None:
    """The class probe over `features`' rows, from the labelled images that have a class
    (None: fewer than two classes, or no labelled image among the features)."""
    if len(embeddings) != len(features):
        raise ValueError(f"embeddings have {len(embeddings)} rows but the features {len(features)}")
    named = classes.astype(str)
    named = named[(named != "") & named.index.isin(list(labelled_ids))]
    rows = pd.Index(features["image_id"].astype(str)).get_indexer(named.index.astype(str))
    known = rows >= 0
    return class_uncertainty(embeddings, rows[known], named.to_numpy()[known], seed=seed)


def _coverage(
    image_scores: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    features: pd.DataFrame,
    labelled_ids: Set[str],
    neighbour_graph: pd.DataFrame,
    *,
    objective: Objective,
    probe: ProbeResult | None,
    focus: pd.DataFrame | None = None,
) -> pd.DataFrame:
    graph = NeighbourGraph.from_frame(neighbour_graph)
    missing = [c for c in QUALITY_COLUMNS if c not in features]
    if missing:
        raise ValueError(f"features lack the quality column(s) {missing}")
    weights = reasons = reach = None
    if probe is not None:
        # Half coverage, half the probe's doubt: on GTSRB the pure uncertainty weight lost
        # accuracy when the labels sat in few classes (README "Two ranking strategies").
        ids = features["image_id"].astype(str).to_numpy()
        weights = pd.Series((1.0 + probe.uncertainty) / 2.0, index=ids)
        reasons = pd.Series(
            [
                f"class probe: {first} or {second}? (uncertainty {doubt:.2f})"
                for first, second, doubt in zip(
                    probe.predicted.tolist(),
                    probe.runner_up.tolist(),
                    probe.uncertainty.tolist(),
                    strict=True,
                )
            ],
            index=ids,
        )
    if focus is not None:  # 1 for an image the focus misses
        reach = focus.drop_duplicates("image_id").set_index("image_id")["focus_weight"]
        reach.index = reach.index.astype(str)
        weights = reach if weights is None else weights * reach.reindex(weights.index).fillna(1.0)
    ranked = rank_by_coverage(
        graph,
        labelled_ids,
        image_ids=features["image_id"].tolist(),
        quality=features[QUALITY_COLUMNS],
        clusters=image_scores[["image_id", "cluster"]],
        objective=objective,
        weights=weights,
        weight_reasons=reasons,
        reach=reach,
    )
    # Every study component rides along for reference; the strategy's own score leads.
    components = image_scores.drop(columns=["cluster", "labelled"]).rename(
        columns={"score": "study_score"}
    )
    info = features[["image_id", *[c for c in scores.IMAGE_INFO_COLUMNS if c in features]]]
    groups = cluster_metrics.set_index("cluster")["priority_group"]
    ranking = ranked.merge(components, on="image_id", how="left", validate="one_to_one").merge(
        info, on="image_id", how="left", validate="one_to_one"
    )
    ranking["priority_group"] = (
        ranking["cluster"].map(groups).fillna(scores.NO_GROUP).to_numpy(dtype=np.int64)
    )
    ranking = ranking.sort_values("rank", ignore_index=True).reindex(columns=RANKING_COLUMNS)
    ranking.attrs = dict(ranked.attrs)
    return ranking


def _with_focus(ranking: pd.DataFrame, focus: pd.DataFrame) -> pd.DataFrame:
    """The focus columns after the ranking's; an image near its example says so in its
    reason."""
    missing = [c for c in ["image_id", *FOCUS_COLUMNS] if c not in focus]
    if missing:
        raise ValueError(f"focus lacks column(s) {missing}")
    columns = focus.drop_duplicates("image_id")[["image_id", *FOCUS_COLUMNS]]
    ranking = ranking.merge(columns, on="image_id", how="left", validate="one_to_one")
    near = ranking["focus_near"].fillna(False).astype(bool).to_numpy()
    notes = [
        f"; near focus example {example} (similarity {similarity:.2f})"
        for example, similarity in zip(
            ranking.loc[near, "focus_example"], ranking.loc[near, "focus_similarity"], strict=True
        )
    ]
    ranking.loc[near, "reason"] = ranking.loc[near, "reason"] + notes
    ranking["focus_near"] = near
    return ranking
