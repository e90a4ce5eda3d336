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
    ranks = ranking["rank"].to_numpy()
    ids = ranking["image_id"]
    problems: dict[str, list[str]] = {}

    expected = np.arange(1, len(ranking) + 1)
    sorted_ranks = np.sort(ranks)
    gaps = [
        f"position {i + 1} holds rank {r}" for i, r in enumerate(sorted_ranks) if r != expected[i]
    ]
    problems["ranks_run_1_to_n"] = gaps[:MAX_EXAMPLES]

    unlabelled = set(accepted_ids) - set(labelled_ids)
    counts = ids.value_counts()
    repeated = [f"{image} ranked {n} times" for image, n in counts[counts > 1].items()]
    missing = [f"{image} not ranked" for image in sorted(unlabelled - set(ids))]
    problems["every_unlabelled_image_once"] = (repeated + missing)[:MAX_EXAMPLES]

    labelled = [f"{image} is labelled" for image in sorted(set(ids) & set(labelled_ids))]
    rejected = [
        f"{image} is not an accepted image" for image in sorted(set(ids) - set(accepted_ids))
    ]
    problems["no_labelled_or_rejected_image"] = (labelled + rejected)[:MAX_EXAMPLES]

    score = pd.to_numeric(ranking["score"], errors="coerce").to_numpy(dtype=float)
    not_finite = [
        f"{image}: score {s}" for image, s in zip(ids, score, strict=True) if not np.isfinite(s)
    ]
    problems["all_scores_finite"] = not_finite[:MAX_EXAMPLES]
    return problems
