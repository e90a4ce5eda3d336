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
    good_threshold: float = 0.8,
    bad_threshold: float = 0.2,
) -> pd.DataFrame:
    """The labeling_priority table for a collection (see RANKING_COLUMNS).

    good_threshold and bad_threshold are the study's score regions (strategy "study" only).
    """
    if strategy == "study":
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
        return _coverage(image_scores, cluster_metrics, features, labelled_ids, neighbour_graph)
    raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")


def _coverage(
    image_scores: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    features: pd.DataFrame,
    labelled_ids: Set[str],
    neighbour_graph: pd.DataFrame,
) -> pd.DataFrame:
    graph = NeighbourGraph.from_frame(neighbour_graph)
    missing = [c for c in QUALITY_COLUMNS if c not in features]
    if missing:
        raise ValueError(f"features lack the quality column(s) {missing}")
    ranked = rank_by_coverage(
        graph,
        labelled_ids,
        image_ids=features["image_id"].tolist(),
        quality=features[QUALITY_COLUMNS],
        clusters=image_scores[["image_id", "cluster"]],
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
