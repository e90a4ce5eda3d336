"""One entry point for the final ranking, whichever strategy a collection selects.

Both strategies return RANKING_COLUMNS (the study's ranking columns, then the coverage
strategy's own), so everything downstream (exports, report, FiftyOne) reads one table.
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import pandas as pd

from imgrank_dagster.core.config.collections import STRATEGIES, Strategy
from imgrank_dagster.core.ranking import scores
from imgrank_dagster.core.ranking.coverage import rank_by_coverage
from imgrank_dagster.core.ranking.focus import FOCUS_COLUMNS
from imgrank_dagster.core.ranking.neighbours import NeighbourGraph

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
) -> pd.DataFrame:
    """The labeling_priority table for a collection (see RANKING_COLUMNS).

    focus: image_id and focus.FOCUS_COLUMNS (core.ranking.focus.focus_frame; strategy
    "coverage" only): covering an image is worth its focus_weight, the reason of an image near
    an example names it, and the focus columns follow RANKING_COLUMNS. None: no focus.
    good_threshold and bad_threshold are the study's score regions (strategy "study" only).
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
        return ranking.reindex(columns=RANKING_COLUMNS)
    if strategy == "coverage":
        if neighbour_graph is None:
            raise ValueError("the coverage strategy needs the collection's neighbour graph")
        ranking = _coverage(
            image_scores, cluster_metrics, features, labelled_ids, neighbour_graph, focus
        )
        return ranking if focus is None else _with_focus(ranking, focus)
    raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")


def _coverage(
    image_scores: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    features: pd.DataFrame,
    labelled_ids: Set[str],
    neighbour_graph: pd.DataFrame,
    focus: pd.DataFrame | None = None,
) -> pd.DataFrame:
    graph = NeighbourGraph.from_frame(neighbour_graph)
    weights = None
    if focus is not None:  # one weight per graph image; 1 for an image the focus misses
        by_id = focus.drop_duplicates("image_id").set_index("image_id")["focus_weight"]
        weights = by_id.reindex(graph.image_ids).fillna(1.0).to_numpy(dtype=np.float64)
    missing = [c for c in QUALITY_COLUMNS if c not in features]
    if missing:
        raise ValueError(f"features lack the quality column(s) {missing}")
    ranked = rank_by_coverage(
        graph,
        labelled_ids,
        image_ids=features["image_id"].tolist(),
        quality=features[QUALITY_COLUMNS],
        clusters=image_scores[["image_id", "cluster"]],
        weights=weights,
    )
    # Every study component rides along for reference; the strategy's own score leads.
    components = image_scores.drop(columns=["cluster", "labelled"]).rename(
        columns={"score": "study_score"}
    )
    info = features[["image_id", *scores.IMAGE_INFO_COLUMNS]]
    groups = cluster_metrics.set_index("cluster")["priority_group"]
    ranking = ranked.merge(components, on="image_id", how="left", validate="one_to_one").merge(
        info, on="image_id", how="left", validate="one_to_one"
    )
    ranking["priority_group"] = (
        ranking["cluster"].map(groups).fillna(scores.NO_GROUP).to_numpy(dtype=np.int64)
    )
    return ranking.sort_values("rank", ignore_index=True).reindex(columns=RANKING_COLUMNS)


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
