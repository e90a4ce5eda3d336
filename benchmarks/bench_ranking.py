"""Time the study's ranking (clustering to final order) on synthetic embeddings.

    .venv/bin/python benchmarks/bench_ranking.py                 # 11,000 and 100,000 images
    .venv/bin/python benchmarks/bench_ranking.py --sizes 11000   # one size

Each size runs in a fresh subprocess so that its peak memory (ru_maxrss) is its own. Prints
wall and CPU time per stage (core functions only; benchmarks/bench_scale.py runs the Dagster
assets): CPU time counts every thread of the process, so on a machine shared with other jobs,
wall time well above CPU time / cores means waiting for a core and the wall figures are
pessimistic. Targets: 11,000 images under 30 s, 100,000 under 5 min.

The embeddings imitate fastdup's (576-d, float32, not normalised, non-negative like
post-ReLU CNN features) with a low intrinsic dimension: a seeded mixture of `--clusters`
centres, a 16-d latent variation per cluster, small isotropic noise, and a share of images
that are near-copies of the previous one (consecutive frames of a sequence). Isotropic
576-d noise alone would be the worst case for a nearest-neighbour index and unlike real
features.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from imgrank_dagster.core.config import ScoringSettings
from imgrank_dagster.core.ranking import scores as scoring
from imgrank_dagster.core.ranking import study
from imgrank_dagster.core.ranking.index import cosine_neighbours
from imgrank_dagster.core.ranking.neighbours import DEFAULT_K

DIM = 576
LATENT = 16
LATENT_SCALE = 0.4  # within-cluster spread: nearest-neighbour cosine similarity mostly < 0.9
NEAR_COPY_SHARE = 0.15
LABELLED_SHARE = 0.02


def synthetic_features(n_images: int, clusters: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The whole synthetic collection at once (see synthetic_blocks)."""
    blocks = list(synthetic_blocks(n_images, clusters, seed, block=n_images))
    features = pd.concat([features for features, _ in blocks], ignore_index=True)
    embeddings = np.concatenate([embeddings for _, embeddings in blocks])
    return features, np.ascontiguousarray(embeddings, dtype=np.float32)


def synthetic_blocks(
    n_images: int, clusters: int, seed: int, block: int = 100_000
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """The synthetic collection block by block (features, embeddings): one model (centres,
    latent bases), so a million images never sit in memory with their temporaries at once."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(2.0, 0.5, size=(clusters, DIM)).astype(np.float32)
    bases = (rng.normal(size=(clusters, LATENT, DIM)) * LATENT_SCALE).astype(np.float32)
    for first in range(0, n_images, block):
        n = min(block, n_images - first)
        labels = rng.integers(0, clusters, n)
        latent = rng.normal(size=(n, LATENT)).astype(np.float32)
        embeddings = centres[labels]
        for cluster in range(clusters):
            members = labels == cluster
            embeddings[members] += latent[members] @ bases[cluster]
        embeddings += rng.normal(scale=0.05, size=(n, DIM)).astype(np.float32)
        near_copies = np.flatnonzero(rng.random(n) < NEAR_COPY_SHARE)
        near_copies = near_copies[near_copies > 0]
        embeddings[near_copies] = embeddings[near_copies - 1] + rng.normal(
            scale=0.01, size=(near_copies.size, DIM)
        ).astype(np.float32)
        np.maximum(embeddings, 0, out=embeddings)
        rows = range(first, first + n)
        sequence_ids = [f"seq-{i // 100:05d}" for i in rows]
        image_ids = [
            f"{sequence}/frame_{i:07d}" for i, sequence in zip(rows, sequence_ids, strict=True)
        ]
        features = pd.DataFrame(
            {
                "image_id": image_ids,
                "sequence_id": sequence_ids,
                "path": [f"{image_id}.jpg" for image_id in image_ids],
                "blur": rng.gamma(2.0, 150.0, n),
                "brightness": rng.uniform(10, 245, n),
            }
        )
        yield features, np.ascontiguousarray(embeddings, dtype=np.float32)


class Stopwatch:
    """Wall and process CPU time per named stage, in the order measured."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def time(self, name: str, call: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        self.rows.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        return result

    def wrap(self, module: object, attribute: str, name: str) -> None:
        """Time every call of module.attribute (a stage inside a composed function)."""
        original = getattr(module, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            return self.time(name, lambda: original(*args, **kwargs))

        setattr(module, attribute, timed)


def run_one(n_images: int, clusters: int, seed: int) -> None:
    load_before = os.getloadavg()[0]
    features, embeddings = synthetic_features(n_images, clusters, seed)
    rng = np.random.default_rng(seed + 1)
    labelled = set(
        rng.choice(features["image_id"], size=int(LABELLED_SHARE * n_images), replace=False)
    )
    settings = ScoringSettings(seed=seed)
    watch = Stopwatch()
    # Sub-stages of base_scores, timed where base_scores calls them.
    watch.wrap(study, "uniqueness_by_cluster", "  base: uniqueness (per cluster)")
    watch.wrap(scoring, "duplicate_punishment", "  base: duplicate punishment")
    watch.wrap(scoring, "outlier_distance", "  base: outliers (from the neighbours)")

    assignments, clustering = watch.time(
        "clustering (k choice + final fit + silhouette)",
        lambda: study.cluster(features, embeddings, **settings.clustering_params),
    )
    neighbours = watch.time(
        "neighbour search (FAISS, whole collection)",
        lambda: cosine_neighbours(embeddings, DEFAULT_K, seed=seed),
    )
    pairs = watch.time(
        "similar pairs (from the neighbours)",
        lambda: study.collection_similar_pairs(
            features["image_id"].tolist(), neighbours, **settings.similar_pairs_params
        ),
    )
    base = watch.time(
        "base scores (total)",
        lambda: study.base_scores(
            features,
            embeddings,
            assignments,
            pairs,
            neighbours=neighbours,
            seed=seed,
            **settings.base_scores_params,
        ),
    )
    metrics = watch.time(
        "cluster metrics",
        lambda: scoring.cluster_metrics(assignments, labelled, **settings.priority_params),
    )
    scores = watch.time(
        "label scores",
        lambda: study.label_scores(base, pairs, labelled, **settings.label_scores_params),
    )
    ranking = watch.time(
        "ranking",
        lambda: scoring.rank_images(scores, metrics, **settings.region_params, image_info=features),
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Stages that are not sub-stages add up to the total.
    total_wall = sum(wall for name, wall, _ in watch.rows if not name.startswith(" "))
    total_cpu = sum(cpu for name, _, cpu in watch.rows if not name.startswith(" "))
    print(f"\n=== {n_images:,} images x {DIM} (synthetic, {clusters} planted clusters) ===")
    print(
        f"k = {clustering.k} (elbow {clustering.elbow_k}), silhouette "
        f"{clustering.silhouette_method}; neighbours {neighbours.method} (recall "
        f"{neighbours.recall if neighbours.recall is not None else 1:.3f}); "
        f"{len(pairs):,} similar pairs; "
        f"{int((base['duplicate_group'] >= 0).sum()):,} images in duplicate groups; "
        f"{int((base['outlier_distance'] > 0).sum()):,} outliers; {len(ranking):,} ranked"
    )
    print(f"{'stage':<50} {'wall s':>8} {'cpu s':>8}")
    for name, wall, cpu in watch.rows:
        print(f"{name:<50} {wall:8.1f} {cpu:8.1f}")
    print(f"{'total':<50} {total_wall:8.1f} {total_cpu:8.1f}")
    print(f"peak memory (ru_maxrss): {peak_mb:,.0f} MB")
    print(f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
    print(f"clustering notes: {'; '.join(clustering.notes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[11_000, 100_000])
    parser.add_argument("--clusters", type=int, default=12, help="planted mixture components")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        for size in args.sizes:
            run_one(size, args.clusters, args.seed)
        return
    for size in args.sizes:
        command = [sys.executable, __file__, "--in-process", "--sizes", str(size)]
        command += ["--clusters", str(args.clusters), "--seed", str(args.seed)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
