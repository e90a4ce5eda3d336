"""Ranking quality on real images: random order, the study's formula, the coverage strategy.

Data: the German Traffic Sign Recognition Benchmark (../shared/datasets/gtsrb; skipped with a
message when absent). Every track is ~30 frames of one physical sign filmed from a moving
car, so frames of a track are real near-duplicates, and class_id is a ground truth for "did
the labelled set cover every kind of content".

Protocol, per seed: the frames of a random set of tracks form the pool, other tracks form
the test set. 5 % of the pool is labelled first, in two scenarios: uniformly at random, and
"biased" (drawn from a few random classes only, as when a labelled set comes from one
location). Each method ranks the rest of the pool; for every budget B the top B are added to
the labelled set and we measure
- probe accuracy: a logistic-regression probe on the fastdup features (standardised), trained
  on labelled + top B, accuracy on the test tracks;
- classes covered: share of the pool's classes present in labelled + top B;
- fresh-track rate: share of the top B from a track with no labelled frame and no earlier pick;
- near-duplicate rate: share of the top B with cosine similarity >= 0.95 to a labelled image
  or an earlier pick.
Methods: random order; the study's formula (`core.ranking.study.run_study`); the coverage
strategy through `core.ranking.strategies.rank` as the pipeline calls it, with the earlier
hard-radius objective ("radius"), soft coverage without classes ("soft"), and soft coverage
given the labelled images' classes ("soft+classes": the class probe's weighting). No
constant of any strategy is set here.

fastdup features of a fixed superset of tracks are extracted once with the real fastdup on
the image files and cached outside the repository (IMGRANK_CACHE, default
~/.cache/imgrank), keyed by the file list; the first run extracts 12,000 images (about 2
minutes on 2 idle cores, 11 minutes when shared).

Usage: python benchmarks/ranking_quality.py [--quick] [--seeds N] [--output FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import imgrank_dagster  # noqa: F401  (sets the fastdup environment before fastdup is imported)
from imgrank_dagster.core.config import ScoringSettings
from imgrank_dagster.core.ranking import strategies
from imgrank_dagster.core.ranking.neighbours import build_neighbour_graph
from imgrank_dagster.core.ranking.study import run_study

REPOSITORY = Path(__file__).resolve().parents[1]
GTSRB_ROOT = REPOSITORY.parent / "shared" / "datasets" / "gtsrb"
CACHE_DIR = Path(os.environ.get("IMGRANK_CACHE", Path.home() / ".cache" / "imgrank"))
SUPERSET_TRACKS = 400
SUPERSET_SEED = 2012
LABELLED_SHARE = 0.05
NEAR_DUPLICATE_SIMILARITY = 0.95
METHODS = ("random", "study", "radius", "soft", "soft+classes")
# What the strategy's coverage methods are compared with in the paired differences.
BASELINES = ("random", "radius")
SCENARIOS = ("random", "biased")


@dataclass(frozen=True)
class Plan:
    seeds: int
    pool_tracks: int
    test_tracks: int
    budgets: tuple[int, ...]


FULL = Plan(seeds=5, pool_tracks=200, test_tracks=150, budgets=(25, 50, 100, 200, 400, 800))
QUICK = Plan(seeds=2, pool_tracks=100, test_tracks=80, budgets=(25, 100, 400))


@dataclass
class Timings:
    graph: list[float] = field(default_factory=list)
    study: list[float] = field(default_factory=list)
    radius: list[float] = field(default_factory=list)
    soft: list[float] = field(default_factory=list)
    soft_classes: list[float] = field(default_factory=list)


def superset_labels(root: Path = GTSRB_ROOT) -> pd.DataFrame:
    """labels.csv rows of a fixed random set of tracks (the same on every run)."""
    labels = pd.read_csv(root / "labels.csv")
    tracks = np.sort(labels["track_id"].unique())
    chosen = np.random.default_rng(SUPERSET_SEED).choice(tracks, SUPERSET_TRACKS, replace=False)
    subset = labels[labels["track_id"].isin(set(chosen))].sort_values("path")
    return subset.reset_index(drop=True)


def fastdup_features(root: Path, relative_paths: list[str]) -> pd.DataFrame:
    """path, embedding and image statistics from fastdup, cached outside the repository."""
    key = hashlib.sha256("\n".join(relative_paths).encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"gtsrb-fastdup-{key}.parquet"
    if cache.exists():
        return pd.read_parquet(cache)
    import fastdup

    print(
        f"extracting fastdup features of {len(relative_paths)} images (cached afterwards)...",
        file=sys.stderr,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imgrank-fastdup-") as work_dir:
        absolute = [str(root / path) for path in relative_paths]
        dataset = fastdup.create(work_dir=work_dir, input_dir=str(root))
        dataset.run(annotations=absolute, overwrite=True, print_summary=False, verbose=False)
        files, embeddings = dataset.embeddings()
        stats = dataset.img_stats()
    by_file = {str(Path(name).resolve()): row for row, name in enumerate(files)}
    resolved = [str((root / path).resolve()) for path in relative_paths]
    rows = [by_file.get(name, -1) for name in resolved]
    stats = stats.assign(filename=[str(Path(name).resolve()) for name in stats["filename"]])
    stats = stats.set_index("filename")
    frame = pd.DataFrame({"path": relative_paths})
    frame["embedding"] = [embeddings[row] if row >= 0 else None for row in rows]
    for ours, theirs in [
        ("blur", "blur"),
        ("brightness", "mean"),
        ("contrast", "contrast"),
        ("min_value", "min"),
        ("max_value", "max"),
        ("std", "stdv"),
    ]:
        frame[ours] = [stats[theirs].get(name, np.nan) for name in resolved]
    frame = frame[frame["embedding"].notna()].reset_index(drop=True)
    print(f"fastdup: {len(frame)} images in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_suffix(".tmp")
    frame.to_parquet(temporary)
    temporary.replace(cache)
    return frame


def load_dataset(root: Path = GTSRB_ROOT) -> pd.DataFrame:
    """Feature matrix of the superset: image_id (opaque), track_id, class_id, features."""
    labels = superset_labels(root)
    features = fastdup_features(root, labels["path"].tolist())
    frame = features.merge(labels[["path", "class_id", "track_id"]], on="path", how="inner")
    # Opaque ids: nothing a ranking sees names the class or the track.
    frame["image_id"] = [f"gtsrb/{row:05d}" for row in range(len(frame))]
    frame["sequence_id"] = "gtsrb"
    return frame


def choose_labelled(pool: pd.DataFrame, scenario: str, rng: np.random.Generator) -> np.ndarray:
    """Row positions (into pool) of the images labelled before ranking."""
    count = max(1, round(LABELLED_SHARE * len(pool)))
    if scenario == "random":
        return np.sort(rng.choice(len(pool), count, replace=False))
    # Biased: a few random classes, enough of them to hold twice the labelled count.
    classes = rng.permutation(np.sort(pool["class_id"].unique()))
    chosen, frames = [], 0
    for class_id in classes:
        chosen.append(class_id)
        frames += int((pool["class_id"] == class_id).sum())
        if frames >= 2 * count:
            break
    candidates = np.flatnonzero(pool["class_id"].isin(chosen).to_numpy())
    return np.sort(rng.choice(candidates, min(count, len(candidates)), replace=False))


def probe_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        return float(np.mean(test_y == train_y[0]))
    scaler = StandardScaler().fit(train_x)
    probe = LogisticRegression(max_iter=1000).fit(scaler.transform(train_x), train_y)
    return float(np.mean(probe.predict(scaler.transform(test_x)) == test_y))


def pick_metrics(
    order: np.ndarray, labelled: np.ndarray, vectors: np.ndarray, tracks: np.ndarray, budget: int
) -> tuple[float, float]:
    """(fresh-track rate, near-duplicate rate) of the first `budget` rows of order."""
    top = order[:budget]
    similarities = vectors[top] @ vectors[np.concatenate([labelled, top])].T
    seen = set(tracks[labelled].tolist())
    fresh = duplicates = 0
    for position, image in enumerate(top):
        earlier = similarities[position, : len(labelled) + position]
        duplicates += bool((earlier >= NEAR_DUPLICATE_SIMILARITY).any())
        fresh += tracks[image] not in seen
        seen.add(tracks[image])
    return fresh / len(top), duplicates / len(top)


def run(plan: Plan) -> tuple[pd.DataFrame, Timings, dict]:
    data = load_dataset()
    embeddings = np.stack(data["embedding"].to_numpy()).astype(np.float32)
    vectors = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    tracks_all = data["track_id"].to_numpy(dtype=str)
    classes_all = data["class_id"].to_numpy()
    track_ids = np.sort(np.unique(tracks_all))
    settings = ScoringSettings()
    timings = Timings()
    rows = []
    sizes = {"pool": [], "test": [], "labelled": []}
    for seed in range(plan.seeds):
        rng = np.random.default_rng(seed)
        shuffled = rng.permutation(track_ids)
        pool_tracks = set(shuffled[: plan.pool_tracks])
        test_tracks = set(shuffled[plan.pool_tracks : plan.pool_tracks + plan.test_tracks])
        pool_rows = np.flatnonzero(np.isin(tracks_all, list(pool_tracks)))
        test_rows = np.flatnonzero(np.isin(tracks_all, list(test_tracks)))
        pool = data.iloc[pool_rows].reset_index(drop=True)
        pool_vectors, pool_tracks_arr = vectors[pool_rows], tracks_all[pool_rows]
        test_x, test_y = embeddings[test_rows], classes_all[test_rows]
        started = time.perf_counter()
        pool_embeddings = embeddings[pool_rows]
        graph = build_neighbour_graph(pool_embeddings, image_ids=pool["image_id"].tolist())
        graph_frame = graph.to_frame()
        timings.graph.append(time.perf_counter() - started)
        position = {image_id: row for row, image_id in enumerate(pool["image_id"])}
        for scenario in SCENARIOS:
            labelled = choose_labelled(pool, scenario, rng)
            labelled_ids = set(pool["image_id"].iloc[labelled])
            sizes["pool"].append(len(pool))
            sizes["test"].append(len(test_rows))
            sizes["labelled"].append(len(labelled))
            unlabelled = np.setdiff1d(np.arange(len(pool)), labelled)
            orders = {"random": rng.permutation(unlabelled)}
            started = time.perf_counter()
            study = run_study(pool, labelled_ids, **settings.model_dump())
            timings.study.append(time.perf_counter() - started)
            orders["study"] = np.array([position[i] for i in study.ranking["image_id"]])
            classes = pd.Series(
                pool["class_id"].astype(str).to_numpy()[labelled],
                index=pool["image_id"].to_numpy()[labelled],
            )
            for method, timing, objective, with_classes in (
                ("radius", timings.radius, "radius", False),
                ("soft", timings.soft, "soft", False),
                ("soft+classes", timings.soft_classes, "soft", True),
            ):
                started = time.perf_counter()
                ranking = strategies.rank(
                    "coverage",
                    study.scores,
                    study.cluster_metrics,
                    pool,
                    labelled_ids,
                    neighbour_graph=graph_frame,
                    objective=objective,
                    classes=classes if with_classes else None,
                    embeddings=pool_embeddings if with_classes else None,
                    seed=seed,
                )
                timing.append(time.perf_counter() - started)
                orders[method] = np.array([position[i] for i in ranking["image_id"]])
            pool_x, pool_y = embeddings[pool_rows], classes_all[pool_rows]
            for method, order in orders.items():
                for budget in plan.budgets:
                    train = np.concatenate([labelled, order[:budget]])
                    accuracy = probe_accuracy(pool_x[train], pool_y[train], test_x, test_y)
                    fresh, duplicates = pick_metrics(
                        order, labelled, pool_vectors, pool_tracks_arr, budget
                    )
                    covered = len(np.unique(pool_y[train])) / len(np.unique(pool_y))
                    rows.append(
                        {
                            "seed": seed,
                            "scenario": scenario,
                            "method": method,
                            "budget": budget,
                            "accuracy": accuracy,
                            "classes_covered": covered,
                            "fresh_track": fresh,
                            "near_duplicate": duplicates,
                        }
                    )
            print(f"seed {seed} scenario {scenario}: done", file=sys.stderr)
    return pd.DataFrame(rows), timings, {key: int(np.mean(v)) for key, v in sizes.items()}


def _cell(values: pd.Series, spread: bool = True) -> str:
    if spread and len(values) > 1:
        return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
    return f"{values.mean():.3f}"


def report(results: pd.DataFrame, timings: Timings, sizes: dict, plan: Plan) -> str:
    lines = [
        f"GTSRB ranking quality: pool {plan.pool_tracks} tracks (~{sizes['pool']} frames), "
        f"test {plan.test_tracks} other tracks (~{sizes['test']} frames), "
        f"{sizes['labelled']} labelled first ({LABELLED_SHARE:.0%}), {plan.seeds} seeds; "
        "mean ± std over seeds.",
        "probe = logistic regression on fastdup features, trained on labelled + top B, "
        "accuracy on the test tracks;",
        "fresh = share of the top B from a track with no labelled frame and no earlier pick;",
        f"dup = share of the top B with cosine similarity >= {NEAR_DUPLICATE_SIMILARITY} "
        "to a labelled image or an earlier pick.",
    ]
    for scenario in SCENARIOS:
        title = "uniformly random" if scenario == "random" else "biased to a few classes"
        subset = results[results["scenario"] == scenario]
        lines += ["", f"Scenario: labelled set {title}"]
        for metric, label, spread in (
            ("accuracy", "probe accuracy, mean ± std over seeds", True),
            ("classes_covered", "classes covered (labelled + top B)", False),
            ("near_duplicate", "near-duplicate rate of the top B", False),
            ("fresh_track", "fresh-track rate of the top B", False),
        ):
            lines += ["", f"{label}:", "", "| B | " + " | ".join(METHODS) + " |"]
            lines.append("|" + "---|" * (1 + len(METHODS)))
            for budget in plan.budgets:
                at = subset[subset["budget"] == budget]
                cells = [_cell(at.loc[at["method"] == m, metric], spread) for m in METHODS]
                lines.append(f"| {budget} | " + " | ".join(cells) + " |")
        pairs = [(m, b) for m in ("soft", "soft+classes") for b in BASELINES]
        lines += [
            "",
            "Paired probe-accuracy differences (same seed), mean ± std:",
            "",
            "| B | " + " | ".join(f"{m} - {b}" for m, b in pairs) + " |",
            "|" + "---|" * (1 + len(pairs)),
        ]
        for budget in plan.budgets:
            at = subset[subset["budget"] == budget].pivot(
                index="seed", columns="method", values="accuracy"
            )
            cells = [_cell(at[m] - at[b]) for m, b in pairs]
            lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Time per pool (~{sizes['pool']} images): neighbour graph "
        f"{np.mean(timings.graph):.2f} s; strategies.rank: radius {np.mean(timings.radius):.2f} s, "
        f"soft {np.mean(timings.soft):.2f} s, soft+classes {np.mean(timings.soft_classes):.2f} s"
        f"; study (run_study) {np.mean(timings.study):.1f} s. Load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, smaller pool, 3 budgets")
    parser.add_argument("--seeds", type=int, help="number of seeds (default 5, quick 2)")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    if not (GTSRB_ROOT / "labels.csv").is_file():
        print(
            f"ranking_quality: skipped, {GTSRB_ROOT} not found (real GTSRB data is not "
            "shipped with the repository)"
        )
        return 0
    plan = QUICK if args.quick else FULL
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error("--seeds must be at least 1")
        plan = Plan(args.seeds, plan.pool_tracks, plan.test_tracks, plan.budgets)
    started = time.perf_counter()
    results, timings, sizes = run(plan)
    text = report(results, timings, sizes, plan)
    text += f"\nTotal benchmark time {time.perf_counter() - started:.0f} s."
    print(text)
    if args.output is not None:
        temporary = args.output.with_suffix(args.output.suffix + ".tmp")
        temporary.write_text(text + "\n")
        temporary.replace(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
