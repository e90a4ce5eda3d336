"""The collection run and a label change through Dagster at 11,000, 100,000 and 1,000,000
images: wall time per asset, peak memory, the neighbour graph's recall, where the time goes.

    python benchmarks/bench_scale.py                        # 11,000, 100,000 and 1,000,000
    python benchmarks/bench_scale.py --sizes 11000 100000   # skip the million

Each size runs in two fresh processes, so the run's peak RSS is its own:
1. setup (not timed): synthetic fastdup-like embeddings (benchmarks/bench_ranking.py's
   generator: 12 planted clusters, a 16-d latent variation each, 15 % near-copies of the
   previous frame), written as the ingestion assets write them, one raw_image_sequences and
   one image_features partition per sequence of 100 images, and reported to a temporary
   Dagster instance; 5 % of the images labelled;
2. the run, in process as a run worker executes it (`execute_job`, the in-process executor;
   `execute_in_process` would hold every step's output in memory), on that instance with
   the real IO manager: `rank_collection`
   (collection_images, feature_matrix, the labelled set, clusters, the neighbour graph,
   similar pairs, scores, the ranking; strategy coverage, the default), then
   `labeling_priority` again with strategy study, then a label change: 100 more labels,
   `labels_sensor` evaluated, its `apply_labels` run executed as the daemon would.

Printed per size: each step's wall time (Dagster's step stats, so Dagster's own work inside a
step counts), the full run from feature_matrix to labeling_priority (collection_images, the
catalog of ingestion, is listed but not counted), peak RSS of the run process (ru_maxrss),
the graph's recall@k against exact search on a seeded sample (from its metadata), the graph's
and the clustering's own timings, and the load average before and after. Nothing is asserted.

Targets (issue 12, this 2-core machine): full run <= 8 s at 11,000, <= 60 s at 100,000,
<= 15 min at 1,000,000 with peak RSS <= 8 GiB; label change <= 1 s, 5 s, 60 s; recall@20
>= 0.95 at 1,000,000; growth 100,000 -> 1,000,000 no worse than x12 in time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

COLLECTION = "bench"
SEQUENCE_LENGTH = 100  # the generator's sequences
LABELLED_SHARE = 0.05
NEW_LABELS = 100
FULL_RUN = [
    "feature_matrix",
    "labeled_images",
    "cluster_assignments",
    "neighbour_graph",
    "similar_pairs",
    "image_base_scores",
    "cluster_metrics",
    "image_scores",
    "labeling_priority",
]


def setup(root: Path, n_images: int) -> None:
    """Ingested sequences of a synthetic collection, as the ingestion assets leave them."""
    import dagster as dg
    import pandas as pd
    import yaml
    from bench_ranking import synthetic_blocks  # benchmarks/ is on sys.path as a script

    from imgrank_dagster.core.features.embeddings import FEATURE_COLUMNS, embedding_column
    from imgrank_dagster.core.sources.base import RAW_COLUMNS
    from imgrank_dagster.lib.parquet import write_frame
    from imgrank_dagster.lib.partitions import collection_partitions, sequence_partitions

    data_dir, warehouse = root / "data", root / "data" / "warehouse"
    (data_dir / "images").mkdir(parents=True)
    (root / "home").mkdir()
    collections = {
        COLLECTION: {"source": {"type": "folder", "path": "images"}, "labels": "labels.csv"}
    }
    (data_dir / "collections.yaml").write_text(yaml.safe_dump({"collections": collections}))
    rng = np.random.default_rng(1)
    keys: list[str] = []
    labelled: list[str] = []
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        for features, embeddings in synthetic_blocks(n_images, clusters=12, seed=0):
            labelled += features["image_id"].sample(frac=LABELLED_SHARE, random_state=1).tolist()
            for sequence_id, rows in features.groupby("sequence_id", sort=True).indices.items():
                key = f"{COLLECTION}.{sequence_id.replace('seq-', 's')}"
                keys.append(key)
                part = features.iloc[rows]
                n = len(rows)
                raw = pd.DataFrame(
                    {
                        "image_id": part["image_id"].to_numpy(),
                        "sequence_id": sequence_id,
                        "sequence_index": np.arange(n),
                        "path": part["path"].to_numpy(),
                        "sha256": "0" * 64,
                        "bytes": 40_000,
                        "width": pd.array([384] * n, dtype="Int64"),
                        "height": pd.array([288] * n, dtype="Int64"),
                        "captured_at": pd.Timestamp("2024-06-03")
                        + pd.to_timedelta(np.arange(n) * 2, unit="s"),
                        "lat": pd.array(52.5 + np.cumsum(rng.normal(0, 1e-4, n)), dtype="Float64"),
                        "lng": pd.array(13.4 + np.cumsum(rng.normal(0, 1e-4, n)), dtype="Float64"),
                        "status": "ok",
                        "reason": "",
                    }
                )[RAW_COLUMNS]
                feats = pd.DataFrame(
                    {
                        "image_id": part["image_id"].to_numpy(),
                        "status": "ok",
                        "error": "",
                        "embedding": embedding_column(embeddings[rows]),
                        "blur": part["blur"].to_numpy(),
                        "brightness": part["brightness"].to_numpy(),
                        "contrast": 0.5,
                        "min_value": 0.0,
                        "max_value": 255.0,
                        "std": 50.0,
                        "width": 384.0,
                        "height": 288.0,
                    }
                )[FEATURE_COLUMNS]
                for asset, frame in [("raw_image_sequences", raw), ("image_features", feats)]:
                    folder = warehouse / asset
                    folder.mkdir(parents=True, exist_ok=True)
                    lineage = {"asset_key": asset, "partition": key, "upstream": []}
                    write_frame(frame, folder / f"{key}.parquet", lineage)
                    instance.report_runless_asset_event(
                        dg.AssetMaterialization(asset_key=asset, partition=key)
                    )
        instance.add_dynamic_partitions(collection_partitions.name, [COLLECTION])
        instance.add_dynamic_partitions(sequence_partitions.name, keys)
    pd.DataFrame({"image_id": sorted(labelled)}).to_csv(data_dir / "labels.csv", index=False)


def rank_collection_job():
    """The job as the daemon's run worker loads it (module-level, for dg.reconstructable):
    the definitions with the resources IMGRANK_DATA_DIR and IMGRANK_WAREHOUSE name."""
    from imgrank_dagster.definitions import build_definitions

    return build_definitions().resolve_job_def("rank_collection")


def apply_labels_job():
    from imgrank_dagster.definitions import build_definitions

    return build_definitions().resolve_job_def("apply_labels")


def execute(job_function, instance, partition: str, tags: dict | None = None):
    """One run in this process, as a run worker executes it (the in-process executor):
    `execute_in_process` would keep every step's output in memory until the run ends."""
    import dagster as dg

    result = dg.execute_job(
        dg.reconstructable(job_function),
        instance=instance,
        run_config={"execution": {"config": {"in_process": {}}}}
        if job_function is rank_collection_job
        else None,
        tags={**(tags or {}), "dagster/partition": partition},
        raise_on_error=True,
    )
    return result


def step_seconds(instance, run_id: str) -> dict[str, float]:
    return {
        stat.step_key: (stat.end_time or 0) - (stat.start_time or 0)
        for stat in instance.get_run_step_stats(run_id)
    }


class MemorySampler:
    """The process's resident memory every 0.1 s, so each step's peak can be told apart."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.1):
            with open("/proc/self/statm") as statm:
                resident = int(statm.read().split()[1]) * page / 2**20
            self.samples.append((time.time(), resident))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peaks(self, instance, run_id: str) -> dict[str, float]:
        """MB: each step's highest sample between its start and end."""
        peaks = {}
        for stat in instance.get_run_step_stats(run_id):
            during = [
                mb
                for at, mb in self.samples
                if (stat.start_time or 0) <= at <= (stat.end_time or 0)
            ]
            peaks[stat.step_key] = max(during, default=0.0)
        return peaks


def latest_metadata(instance, asset: str) -> dict:
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[COLLECTION]),
        limit=1,
    ).records
    metadata = records[0].asset_materialization.metadata if records else {}
    values = {name: getattr(value, "value", value) for name, value in metadata.items()}
    simple = (str, int, float, bool, dict, list, type(None))
    return {name: value for name, value in values.items() if isinstance(value, simple)}


def run(root: Path, n_images: int) -> dict:
    """The measured part, in its own process; returns the figures as JSON-ready data."""
    import dagster as dg
    import pandas as pd
    import yaml

    from imgrank_dagster.core.ranking.index import faiss_threads
    from imgrank_dagster.definitions import build_definitions
    from imgrank_dagster.defs.labels.sensors import labels_sensor
    from imgrank_dagster.lib.resources import build_resources

    data_dir = root / "data"
    os.environ["IMGRANK_DATA_DIR"] = str(data_dir)
    os.environ["IMGRANK_WAREHOUSE"] = str(data_dir / "warehouse")
    figures: dict = {"images": n_images, "load_before": os.getloadavg()}
    memory = MemorySampler()
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        resources = build_resources(data_dir=data_dir, warehouse=str(data_dir / "warehouse"))
        defs = build_definitions(resources)
        started = time.perf_counter()
        full = execute(rank_collection_job, instance, COLLECTION)
        figures["full_wall"] = time.perf_counter() - started
        figures["full_steps"] = step_seconds(instance, full.run_id)
        figures["full_memory"] = memory.peaks(instance, full.run_id)
        figures["graph"] = latest_metadata(instance, "neighbour_graph")
        figures["clusters"] = latest_metadata(instance, "cluster_assignments")
        figures["base"] = latest_metadata(instance, "image_base_scores")
        figures["peak_rss_full_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        # The study's ranking of the same collection: only labeling_priority differs.
        config = data_dir / "collections.yaml"
        document = yaml.safe_load(config.read_text())
        document["collections"][COLLECTION]["strategy"] = "study"
        config.write_text(yaml.safe_dump(document))
        started = time.perf_counter()
        study = dg.materialize(
            list(defs.assets),
            selection=["labeling_priority"],
            partition_key=COLLECTION,
            instance=instance,
            resources=defs.resources,
        )
        figures["study_wall"] = time.perf_counter() - started
        figures["study_steps"] = step_seconds(instance, study.run_id)
        document["collections"][COLLECTION]["strategy"] = "coverage"
        config.write_text(yaml.safe_dump(document))

        # A label change, as the labels sensor and the daemon run it.
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            labels_sensor(context)  # first look: remembers the current label files
            cursor = context.cursor
        labels = pd.read_csv(data_dir / "labels.csv")["image_id"]
        ranked = pd.read_csv(data_dir / "exports" / COLLECTION / "all_score_after_rank.csv")
        more = ranked["image_id"].head(NEW_LABELS)
        pd.DataFrame({"image_id": pd.concat([labels, more])}).to_csv(
            data_dir / "labels.csv", index=False
        )
        with dg.build_sensor_context(
            instance=instance, resources=resources, cursor=cursor
        ) as context:
            request = labels_sensor(context).run_requests[0]
        started = time.perf_counter()
        change = execute(apply_labels_job, instance, request.partition_key, dict(request.tags))
        figures["change_wall"] = time.perf_counter() - started
        figures["change_steps"] = step_seconds(instance, change.run_id)
    memory.stop()
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["load_after"] = os.getloadavg()
    figures["faiss_threads"] = faiss_threads()
    return figures


def report(figures: dict, setup_seconds: float) -> None:
    n = figures["images"]
    steps = figures["full_steps"]
    full = sum(steps.get(name, 0.0) for name in FULL_RUN)
    print(f"\n=== {n:,} images (synthetic, 576-d; setup {setup_seconds:.0f} s, not counted) ===")
    print(f"{'step':<24} {'wall s':>8} {'RSS MB':>8}")
    for name, seconds in steps.items():
        counted = "" if name in FULL_RUN else "   (catalog, not counted)"
        resident = figures["full_memory"].get(name, 0.0)
        print(f"{name:<24} {seconds:8.2f} {resident:8.0f}{counted}")
    print(
        f"{'full run (steps)':<24} {full:8.2f}   run wall incl. Dagster {figures['full_wall']:.2f}"
    )
    study = figures["study_steps"].get("labeling_priority", 0.0)
    print(f"{'labeling_priority study':<24} {study:8.2f}   both strategies: {full + study:.2f}")
    change = figures["change_steps"]
    print(
        f"{'label change (steps)':<24} {sum(change.values()):8.2f}   "
        + ", ".join(f"{k} {v:.2f}" for k, v in change.items())
        + f"; run wall {figures['change_wall']:.2f}"
    )
    graph = figures["graph"]
    search = graph.get("search", {})
    print(
        f"neighbour graph: {graph.get('method')}, k = {graph.get('k')}, recall@k "
        f"{graph.get('recall_at_k')} (seeded sample of {search.get('recall_sample', '-')}; "
        f"cells {search.get('cells', '-')}, nprobe {search.get('nprobe', '-')})"
    )
    print(f"  graph phases (s): {json.dumps(search.get('seconds', {}))}")
    clusters = figures["clusters"]
    print(f"clustering: k = {clusters.get('k')}, elbow {clusters.get('elbow_k')}")
    print(f"uniqueness search: {json.dumps(figures['base'].get('uniqueness_search', {}))}")
    print(
        f"peak RSS of the run process: {figures['peak_rss_mb'] / 1024:.2f} GiB "
        f"(after the full run: {figures['peak_rss_full_mb'] / 1024:.2f} GiB); "
        f"FAISS threads {figures['faiss_threads']}"
    )
    before, after = figures["load_before"], figures["load_after"]
    print(f"load average (1/5/15 min) before {before} / after {after}")


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {os.cpu_count()} cores ({model}), {memory:.0f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[11_000, 100_000, 1_000_000])
    parser.add_argument("--stage", choices=["setup", "run"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "setup":
        setup(args.root, args.sizes[0])
        return
    if args.stage == "run":
        print(json.dumps(run(args.root, args.sizes[0]), default=str))
        return
    print(f"bench_scale on {machine()}")
    for size in args.sizes:
        root = Path(tempfile.mkdtemp(prefix=f"imgrank-scale-{size}-"))
        try:
            command = [sys.executable, __file__, "--sizes", str(size), "--root", str(root)]
            started = time.perf_counter()
            subprocess.run([*command, "--stage", "setup"], check=True)
            setup_seconds = time.perf_counter() - started
            output = subprocess.run(
                [*command, "--stage", "run"], capture_output=True, text=True, check=False
            )
            if output.returncode:
                print(output.stderr[-5000:], file=sys.stderr)
                raise SystemExit(f"the {size:,}-image run failed")
            report(json.loads(output.stdout.strip().splitlines()[-1]), setup_seconds)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
