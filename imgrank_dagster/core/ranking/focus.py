"""A focused ranking: favour images near example images of what the team needs more of.

The coverage strategy spends each label where it covers the most uncovered images. A focus
makes covering some images worth more: each image gets a weight

    weight_i = 1 + weight * relevance_i,   relevance_i = 0.5 ** ((d_i / bandwidth_e) ** 2)

where d_i is the cosine distance from image i to its nearest example e and bandwidth_e the
distance from e to its `neighbourhood`-th nearest image of the collection (the example itself
included when it is one). So an image at the example counts 1 + weight, an image as far as the
example's `neighbourhood`-th neighbour counts 1 + weight / 2, and images much farther count 1,
as without focus. The bandwidth comes from the data: a dense neighbourhood (a long sequence in
a tunnel) gets a narrow one, a sparse one a wide one. Coverage, the near-duplicate hold-back
and the quality gate stay as they are (the weights only change what a pick gains), in the
way Lightly combines its SIMILARITY and DIVERSITY strategies.

An image counts as *near* its example (its reason names the example) when the focus raised
its worth by at least a tenth of the focus weight (relevance >= 0.1: within about 1.8
bandwidths): every pick the focus favoured noticeably says which example it is near.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imgrank_dagster.core.ranking.index import UnitRows

DEFAULT_WEIGHT = 10.0
DEFAULT_NEIGHBOURHOOD = 10
NEAR_RELEVANCE = 0.1
# The focus columns of a focused ranking (strategies adds them; absent without a focus).
FOCUS_COLUMNS = ["focus_weight", "focus_example", "focus_similarity", "focus_near"]
_BLOCK = 8_192


@dataclass(frozen=True, eq=False)
class Focus:
    """Per image: its weight, its nearest example and the similarity to it."""

    weights: np.ndarray  # (N,) float64, >= 1
    nearest_example: np.ndarray  # (N,) int, index into the examples
    similarity: np.ndarray  # (N,) float32, cosine similarity to that example
    relevance: np.ndarray  # (N,) float64 in [0, 1]
    bandwidths: np.ndarray  # (E,) cosine distance per example

    @property
    def near(self) -> np.ndarray:
        """Whether each image is near its example (its reason names the example)."""
        return self.relevance >= NEAR_RELEVANCE


def focus_weights(
    embeddings: np.ndarray | UnitRows,
    example_embeddings: np.ndarray,
    *,
    weight: float = DEFAULT_WEIGHT,
    neighbourhood: int = DEFAULT_NEIGHBOURHOOD,
) -> Focus:
    """Per-image focus weights from the collection's embeddings (N, D) and the examples'
    (E, D); see the module docstring."""
    if not np.isfinite(weight) or weight <= 0:
        raise ValueError(f"focus weight must be a positive number, got {weight!r}")
    if not isinstance(neighbourhood, int | np.integer) or neighbourhood < 1:
        raise ValueError(f"focus neighbourhood must be a positive integer, got {neighbourhood!r}")
    unit = embeddings if isinstance(embeddings, UnitRows) else UnitRows(embeddings)
    examples = np.atleast_2d(np.asarray(example_embeddings, dtype=np.float32))
    if examples.shape[0] == 0:
        raise ValueError("a focus needs at least one example")
    if examples.shape[1] != unit.dimension:
        raise ValueError(
            f"focus examples have {examples.shape[1]} dimensions, the collection's embeddings "
            f"{unit.dimension}"
        )
    norms = np.linalg.norm(examples, axis=1)
    if not np.isfinite(norms).all() or (norms == 0).any():
        bad = int(np.flatnonzero(~np.isfinite(norms) | (norms == 0))[0])
        raise ValueError(f"focus example {bad}: its embedding is zero or not finite")
    examples = examples / norms[:, None]
    n = len(unit)
    similarities = np.empty((n, len(examples)), dtype=np.float32)
    for start in range(0, n, _BLOCK):
        block = unit[slice(start, start + _BLOCK)]
        similarities[start : start + len(block)] = block @ examples.T
    np.clip(similarities, -1.0, 1.0, out=similarities)
    m = min(int(neighbourhood), n)
    # The m-th largest similarity per example: its neighbourhood's edge.
    edge = -np.partition(-similarities, m - 1, axis=0)[m - 1]
    bandwidths = np.maximum(1.0 - edge.astype(np.float64), 1e-6)
    nearest = np.argmax(similarities, axis=1)
    best = similarities[np.arange(n), nearest]
    distance = np.maximum(1.0 - best.astype(np.float64), 0.0)
    relevance = 0.5 ** ((distance / bandwidths[nearest]) ** 2)
    return Focus(
        weights=1.0 + float(weight) * relevance,
        nearest_example=nearest,
        similarity=best,
        relevance=relevance,
        bandwidths=bandwidths,
    )


def focus_frame(
    image_ids: Sequence[str], focus: Focus, example_names: Sequence[str]
) -> pd.DataFrame:
    """The focus as a table: image_id and FOCUS_COLUMNS (focus_example names the example as
    the collection file gives it)."""
    names = np.asarray(list(example_names), dtype=object)
    if len(names) != len(focus.bandwidths):
        raise ValueError(f"{len(names)} example names for {len(focus.bandwidths)} examples")
    return pd.DataFrame(
        {
            "image_id": np.asarray(image_ids, dtype=object),
            "focus_weight": focus.weights,
            "focus_example": names[focus.nearest_example],
            "focus_similarity": focus.similarity.astype(np.float64),
            "focus_near": focus.near,
        }
    )
