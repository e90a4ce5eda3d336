"""Similar pairs and outliers derived from the neighbour graph against fastdup's own, on real
photos: fastdup embeds them, reports its similar pairs and outliers, and the graph built from
fastdup's embeddings must report the same.

Tolerance: the same pairs and the same outliers, except a pair whose similarity lies within
1e-4 of the threshold or an outlier whose value lies within 1e-4 of the percentile's cut
(fastdup's HNSW index and its float arithmetic may decide those either way); similarities and
outlier values equal within 1e-5. On the set used here (240 GTSRB frames of 8 sign tracks and
120 Panoramax street views) every pair and outlier matched, values within 1e-6.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shared_data import shared_datasets

from imgrank_dagster.core.ranking.near_duplicates import outlier_values, pairs_from_neighbours
from imgrank_dagster.core.ranking.neighbours import DEFAULT_K, build_neighbour_graph

pytestmark = pytest.mark.slow

THRESHOLD = 0.9
PERCENTILE = 0.05
NEAREST_NEIGHBORS_K = 2  # fastdup's default, the study's
BORDER = 1e-4  # how close to the threshold or the cut a disagreement may be
VALUES = 1e-5  # how close fastdup's and the graph's similarities must be


@pytest.fixture(scope="module")
def fastdup_run() -> dict[str, object]:
    """fastdup on real photos: its embeddings, similar pairs and outliers, by file path."""
    root = shared_datasets()
    if root is None or not (root / "gtsrb").is_dir() or not (root / "panoramax_capferret").is_dir():
        pytest.skip("../shared/datasets (gtsrb, panoramax_capferret) is not here")
    labels = pd.read_csv(root / "gtsrb" / "labels.csv")
    tracks = labels["track_id"].drop_duplicates().sample(8, random_state=0)
    signs = labels.loc[labels["track_id"].isin(tracks), "path"]
    streets = sorted((root / "panoramax_capferret" / "images").glob("*.jpg"))[:120]
    files = [str(root / "gtsrb" / path) for path in signs] + [str(path) for path in streets]
    import fastdup

    with (
        tempfile.TemporaryDirectory() as work_dir,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        run = fastdup.create(work_dir=work_dir, input_dir=str(root))
        run.run(
            annotations=pd.DataFrame({"filename": files}),
            overwrite=True,
            threshold=THRESHOLD,
            lower_threshold=PERCENTILE,
            nearest_neighbors_k=NEAREST_NEIGHBORS_K,
            verbose=False,
        )
        names, embeddings = run.embeddings()
        similarity, outliers = run.similarity(), run.outliers()

    def path(name: str) -> str:
        return str(Path(name).resolve())

    pairs = {
        tuple(sorted((path(a), path(b)))): float(value)
        for a, b, value in zip(
            similarity["filename_from"],
            similarity["filename_to"],
            similarity["distance"],
            strict=True,
        )
    }
    flagged = {
        path(name): float(value)
        for name, value in zip(outliers["filename_outlier"], outliers["distance"], strict=True)
    }
    return {
        "ids": [path(name) for name in names],
        "embeddings": np.asarray(embeddings, dtype=np.float32),
        "pairs": pairs,
        "outliers": flagged,
    }


def test_graph_pairs_are_fastdups_similar_pairs(fastdup_run: dict) -> None:
    ids, embeddings, expected = fastdup_run["ids"], fastdup_run["embeddings"], fastdup_run["pairs"]
    graph = build_neighbour_graph(embeddings, k=DEFAULT_K, image_ids=ids)
    pairs = pairs_from_neighbours(ids, graph.nearest, THRESHOLD, NEAREST_NEIGHBORS_K)
    found = {
        (a, b): value
        for a, b, value in zip(pairs["from_id"], pairs["to_id"], pairs["similarity"], strict=True)
    }
    assert len(expected) > 100  # the sign tracks are full of near-duplicates
    for pair in set(expected) ^ set(found):
        value = expected.get(pair, found.get(pair))
        assert abs(value - THRESHOLD) <= BORDER, f"{pair} ({value}) is only on one side"
    for pair in set(expected) & set(found):
        assert found[pair] == pytest.approx(expected[pair], abs=VALUES)


def test_graph_outliers_are_fastdups_outliers(fastdup_run: dict) -> None:
    ids, embeddings, expected = (
        fastdup_run["ids"],
        fastdup_run["embeddings"],
        fastdup_run["outliers"],
    )
    graph = build_neighbour_graph(embeddings, k=DEFAULT_K, image_ids=ids)
    values = outlier_values(graph.nearest.similarities[:, :NEAREST_NEIGHBORS_K], PERCENTILE)
    found = {ids[row]: float(value) for row, value in enumerate(values) if not np.isnan(value)}
    assert len(expected) >= 10
    cut = max(expected.values())
    for image in set(expected) ^ set(found):
        value = expected.get(image, found.get(image))
        assert abs(value - cut) <= BORDER, f"{image} ({value}) is only on one side"
    for image in set(expected) & set(found):
        assert found[image] == pytest.approx(expected[image], abs=VALUES)
