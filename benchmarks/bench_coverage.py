"""Speed of the coverage strategy: neighbour graph (once per collection) and selection (per
labelled set), on synthetic 576-d collections of 11,000 and 100,000 images.

The synthetic collection imitates street-level capture: scenes (cluster centres), each filmed
in sequences of 30 frames that drift slowly (near-duplicates), with capture time and GPS, so
the graph's place mixing runs too. Targets: 11,000 images under 5 s and 100,000 under 60 s
for graph + selection. Prints graph time, recall of the graph against exact neighbours
(sampled), and the selection (what the labels loop re-runs) with each objective: the earlier
hard-radius one, soft coverage (the default), and soft coverage turned by the class probe
(5 % labelled, classes = the synthetic scenes, at most 20 of them), with the machine's load.

Usage: python benchmarks/bench_coverage.py [--sizes 11000 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

from imgrank_dagster.core.ranking.coverage import rank_by_coverage
from imgrank_dagster.core.ranking.neighbours import build_neighbour_graph, neighbour_recall
from imgrank_dagster.core.ranking.probe import class_uncertainty

DIMENSIONS = 576
FRAMES_PER_SEQUENCE = 30


def synthetic_collection(n: int, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sequences = -(-n // FRAMES_PER_SEQUENCE)
    scenes = max(10, sequences // 4)
    centres = rng.standard_normal((scenes, DIMENSIONS)).astype(np.float32)
    scene_of_sequence = rng.integers(0, scenes, sequences)
    scene = np.repeat(scene_of_sequence, FRAMES_PER_SEQUENCE)[:n]
    start = centres[scene_of_sequence] + 0.6 * rng.standard_normal((sequences, DIMENSIONS))
    drift = 0.08 * rng.standard_normal((sequences, FRAMES_PER_SEQUENCE, DIMENSIONS))
    frames = start[:, None, :] + np.cumsum(drift, axis=1)
    embeddings = frames.reshape(-1, DIMENSIONS)[:n].astype(np.float32)
    sequence = np.repeat(np.arange(sequences), FRAMES_PER_SEQUENCE)[:n]
    index = np.tile(np.arange(FRAMES_PER_SEQUENCE), sequences)[:n]
    origin = pd.Timestamp("2024-05-01", tz="UTC")
    meta = pd.DataFrame(
        {
            "image_id": [
                f"seq-{s:05d}/frame_{i:04d}" for s, i in zip(sequence, index, strict=True)
            ],
            "sequence_id": [f"seq-{s:05d}" for s in sequence],
            "sequence_index": index,
            "captured_at": origin + pd.to_timedelta(sequence * 3600 + index * 2, unit="s"),
            "lat": 52.5 + 0.01 * (sequence % 100) + 0.0001 * index,
            "lng": 13.4 + 0.01 * (sequence // 100),
            "blur": rng.lognormal(7, 1, n),
            "brightness": rng.normal(110, 30, n).clip(0, 255),
            "min_value": rng.integers(0, 30, n),
            "max_value": rng.integers(200, 256, n),
            "scene": scene,
        }
    )
    return embeddings, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="speed of the coverage strategy")
    parser.add_argument("--sizes", type=int, nargs="+", default=[11_000, 100_000])
    args = parser.parse_args(argv)
    print(
        "| images | graph (content) | method | recall@20 | graph (content + place) "
        "| selection radius | selection soft | class probe | selection soft + classes "
        "| graph + soft selection |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        embeddings, meta = synthetic_collection(n)
        ids = meta["image_id"].tolist()
        started = time.perf_counter()
        content_graph = build_neighbour_graph(embeddings, image_ids=ids)
        content_seconds = time.perf_counter() - started
        recall = neighbour_recall(embeddings, content_graph, sample=500)
        del content_graph
        started = time.perf_counter()
        graph = build_neighbour_graph(embeddings, image_ids=ids, places=meta)
        graph_seconds = time.perf_counter() - started
        rng = np.random.default_rng(1)
        rows = rng.choice(n, n // 20, replace=False)
        labelled = meta["image_id"].to_numpy()[rows]
        seconds = {}
        for objective in ("radius", "soft"):
            started = time.perf_counter()
            ranking = rank_by_coverage(graph, labelled, quality=meta, objective=objective)
            seconds[objective] = time.perf_counter() - started
            assert len(ranking) == n - len(labelled)
        started = time.perf_counter()
        classes = meta["scene"].to_numpy()[rows] % 20
        probe = class_uncertainty(embeddings, rows, classes.astype(str))
        seconds["probe"] = time.perf_counter() - started
        weights = pd.Series((1 + probe.uncertainty) / 2, index=ids)
        started = time.perf_counter()
        rank_by_coverage(graph, labelled, quality=meta, weights=weights)
        seconds["classes"] = time.perf_counter() - started
        print(
            f"| {n:,} | {content_seconds:.1f} s | {graph.method} | {recall:.3f} | "
            f"{graph_seconds:.1f} s | {seconds['radius']:.1f} s | {seconds['soft']:.1f} s | "
            f"{seconds['probe']:.1f} s | {seconds['classes']:.1f} s | "
            f"{graph_seconds + seconds['soft']:.1f} s |",
            flush=True,
        )
    print(f"load average: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
