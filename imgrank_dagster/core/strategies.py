"""One entry point for the final ranking, whichever strategy a collection selects.

Both strategies return the same columns (the study's ranking columns, then the coverage
strategy's own), so everything downstream (exports, report, FiftyOne) reads one table.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Literal

import numpy as np
import pandas as pd

from imgrank_dagster.core import scoring
from imgrank_dagster.core.collections import ScoringSettings
from imgrank_dagster.core.coverage import rank_by_coverage
from imgrank_dagster.core.neighbours import NeighbourGraph

Strategy = Literal["study", "coverage"]
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
RANKING_COLUMNS = [*scoring.RANKING_COLUMNS, *COVERAGE_EXTRA_COLUMNS]


def rank(
    strategy: Strategy,
    scores: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    features: pd.DataFrame,
    labelled_ids: Set[str],
    settings: ScoringSettings,
    neighbour_graph: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The labeling_priority table for a collection (see RANKING_COLUMNS)."""
    if strategy == "study":
        ranking = scoring.rank_images(scores, cluster_metrics, settings, image_info=features)
        ranking["study_score"] = ranking["score"]
        return ranking.reindex(columns=RANKING_COLUMNS)
    if strategy == "coverage":
        if neighbour_graph is None:
            raise ValueError("the coverage strategy needs the collection's neighbour graph")
        return _coverage(scores, cluster_metrics, features, labelled_ids, neighbour_graph)
    raise ValueError(f"unknown strategy {strategy!r}: expected 'study' or 'coverage'")


def _coverage(
    scores: pd.DataFrame,
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
        clusters=scores[["image_id", "cluster"]],
    )
    # Every study component rides along for reference; the strategy's own score leads.
    components = scores.drop(columns=["cluster", "labelled"]).rename(
        columns={"score": "study_score"}
    )
    info = features[["image_id", *scoring.IMAGE_INFO_COLUMNS]]
    groups = cluster_metrics.set_index("cluster")["priority_group"]
    ranking = ranked.merge(components, on="image_id", how="left", validate="one_to_one").merge(
        info, on="image_id", how="left", validate="one_to_one"
    )
    ranking["priority_group"] = (
        ranking["cluster"].map(groups).fillna(scoring.NO_GROUP).to_numpy(dtype=np.int64)
    )
    return ranking.sort_values("rank", ignore_index=True).reindex(columns=RANKING_COLUMNS)
