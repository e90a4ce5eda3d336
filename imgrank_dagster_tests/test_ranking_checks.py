"""The invariants asserted on every ranking: each check passes on a sound ranking and names
what is wrong with a broken one."""

import numpy as np
import pandas as pd

from imgrank_dagster.core.ranking.checks import ranking_problems

ACCEPTED = {"a", "b", "c", "d", "e"}
LABELLED = {"e"}


def _ranking(ids: list[str], ranks: list[int], scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"rank": ranks, "image_id": ids, "score": scores})


def test_a_sound_ranking_passes_every_check() -> None:
    ranking = _ranking(["c", "a", "d", "b"], [1, 2, 3, 4], [0.9, 0.5, 0.2, -0.1])
    problems = ranking_problems(ranking, ACCEPTED, LABELLED)
    assert problems == {
        "ranks_run_1_to_n": [],
        "every_unlabelled_image_once": [],
        "no_labelled_or_rejected_image": [],
        "all_scores_finite": [],
    }


def test_a_broken_ranking_names_each_problem() -> None:
    ranking = _ranking(["c", "a", "a", "e", "x"], [1, 2, 4, 5, 6], [0.9, np.nan, 0.3, np.inf, 0.1])
    problems = ranking_problems(ranking, ACCEPTED, LABELLED)
    assert problems["ranks_run_1_to_n"] == [
        "position 3 holds rank 4",
        "position 4 holds rank 5",
        "position 5 holds rank 6",
    ]
    assert problems["every_unlabelled_image_once"] == [
        "a ranked 2 times",
        "b not ranked",
        "d not ranked",
    ]
    assert problems["no_labelled_or_rejected_image"] == [
        "e is labelled",
        "x is not an accepted image",
    ]
    assert problems["all_scores_finite"] == ["a: score nan", "e: score inf"]


def test_examples_are_capped() -> None:
    ids = [f"img-{i:03d}" for i in range(50)]
    ranking = _ranking(ids, list(range(1, 51)), [np.nan] * 50)
    problems = ranking_problems(ranking, set(ids), set())
    assert len(problems["all_scores_finite"]) == 5
