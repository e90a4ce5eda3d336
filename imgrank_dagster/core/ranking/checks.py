"""Invariants every ranking must hold, whatever strategy produced it."""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import pandas as pd

MAX_EXAMPLES = 5


def ranking_problems(
    ranking: pd.DataFrame, accepted_ids: Set[str], labelled_ids: Set[str]
) -> dict[str, list[str]]:
    """Check name -> problems found (empty list = the check passed)."""
    ranks = np.sort(ranking["rank"].to_numpy())
    ids = ranking["image_id"].astype(str).tolist()
    ranked = set(ids)
    problems: dict[str, list[str]] = {}

    wrong = np.flatnonzero(ranks != np.arange(1, len(ranks) + 1))[:MAX_EXAMPLES]
    problems["ranks_run_1_to_n"] = [f"position {i + 1} holds rank {ranks[i]}" for i in wrong]

    repeated: list[str] = []
    if len(ranked) != len(ids):
        counts = pd.Series(ids).value_counts()
        repeated = [f"{image} ranked {n} times" for image, n in counts[counts > 1].items()]
    unlabelled = set(accepted_ids) - set(labelled_ids)
    missing = [f"{image} not ranked" for image in sorted(unlabelled - ranked)]
    problems["every_unlabelled_image_once"] = (repeated + missing)[:MAX_EXAMPLES]

    labelled = [f"{image} is labelled" for image in sorted(ranked & set(labelled_ids))]
    rejected = [f"{image} is not an accepted image" for image in sorted(ranked - set(accepted_ids))]
    problems["no_labelled_or_rejected_image"] = (labelled + rejected)[:MAX_EXAMPLES]

    score = pd.to_numeric(ranking["score"], errors="coerce").to_numpy(dtype=float)
    not_finite = np.flatnonzero(~np.isfinite(score))[:MAX_EXAMPLES]
    problems["all_scores_finite"] = [f"{ids[i]}: score {score[i]}" for i in not_finite]
    return problems
