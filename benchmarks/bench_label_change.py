"""Full ranking vs a label-change re-rank at the study's size, through Dagster.

    python benchmarks/bench_label_change.py [--images 11000]

An 11,000-image collection "with features already materialized": per-sequence
raw_image_sequences and image_features partitions are written as the IO manager writes them
(synthetic fastdup-like embeddings, see bench_ranking.py) and reported to a temporary Dagster
instance. Then:
1. the full collection run (`rank_collection`: feature matrix to ranking);
2. new labels are written, `labels_sensor` is evaluated, and its run request is executed.
For each: the steps' time (Dagster's step stats), of which Dagster's own storage work inside
the steps (writing events, querying partitions and input versions), the compute (the rest:
our code, reading and writing Parquet, and Dagster's in-process bookkeeping), and the run's
wall time including everything else Dagster does (planning, run and engine events).
Target: label-change compute at most 5 s and at most 5 % of the full pipeline.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import yaml
from bench_ranking import synthetic_features  # benchmarks/ is on sys.path when run as a script

from imgrank_dagster.core.features.embeddings import FEATURE_COLUMNS
from imgrank_dagster.core.sources.base import RAW_COLUMNS
from imgrank_dagster.definitions import build_definitions
from imgrank_dagster.defs.labels.sensors import labels_sensor
from imgrank_dagster.lib.partitions import collection_partitions, sequence_partitions
from imgrank_dagster.lib.resources import build_resources

COLLECTION = "bench"


def seed_sequences(warehouse: Path, instance: dg.DagsterInstance, n_images: int) -> list[str]:
    features, embeddings = synthetic_features(n_images, clusters=12, seed=0)
    rng = np.random.default_rng(1)
    keys = []
    for sequence_id, rows in features.groupby("sequence_id"):
        key = f"{COLLECTION}.{sequence_id.replace('seq-', 's')}"
        keys.append(key)
        n = len(rows)
        raw = pd.DataFrame(
            {
                "image_id": rows["image_id"],
                "sequence_id": sequence_id,
                "sequence_index": range(n),
                "path": rows["path"],
                "sha256": "0" * 64,
                "bytes": 40_000,
                "width": pd.array([384] * n, dtype="Int64"),
                "height": pd.array([288] * n, dtype="Int64"),
                "captured_at": pd.Timestamp("2024-06-03") + pd.to_timedelta(range(n), unit="s"),
                "lat": pd.array(52.5 + rng.normal(0, 0.01, n), dtype="Float64"),
                "lng": pd.array(13.4 + rng.normal(0, 0.01, n), dtype="Float64"),
                "status": "ok",
                "reason": "",
            }
        )[RAW_COLUMNS]
        feats = pd.DataFrame(
            {
                "image_id": rows["image_id"],
                "status": "ok",
                "error": "",
                "embedding": list(embeddings[rows.index]),
                "blur": rows["blur"],
                "brightness": rows["brightness"],
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
            frame.to_parquet(folder / f"{key}.parquet", index=False)
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=asset, partition=key)
            )
    return keys


STEP_ENDS = frozenset({dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE})


class StepStorageClock:
    """Seconds Dagster spends in its instance storage (SQLite here) inside steps.

    Writing events (~15 ms each here) and querying (dynamic partitions, data versions of
    inputs) is Dagster's per-step overhead, not our compute. A step runs from its STEP_START
    event to its STEP_SUCCESS or STEP_FAILURE event (the in-process executor runs one step at
    a time); only the outermost storage call counts, so nested calls are not counted twice.
    """

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.writes = 0.0
        self.queries = 0.0
        self._in_step = False
        self._depth = 0
        for storage in (instance.event_log_storage, instance.run_storage):
            for name in dir(type(storage)):
                if name.startswith("_") or not callable(getattr(type(storage), name, None)):
                    continue
                setattr(storage, name, self._timed(getattr(storage, name), name == "store_event"))

    def _timed(self, method, is_write: bool):
        def timed(*args, **kwargs):
            if is_write and args:
                event_type = getattr(getattr(args[0], "dagster_event", None), "event_type", None)
                if event_type == dg.DagsterEventType.STEP_START:
                    self._in_step = True
                elif event_type in STEP_ENDS:
                    self._in_step = False
            counted = self._in_step and self._depth == 0
            self._depth += 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if counted:
                    elapsed = time.perf_counter() - started
                    if is_write:
                        self.writes += elapsed
                    else:
                        self.queries += elapsed

        return timed

    def lap(self) -> tuple[float, float]:
        """(event writes, queries) since the last lap."""
        laps = (self.writes, self.queries)
        self.writes = self.queries = 0.0
        return laps


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    return {
        stat.step_key: (stat.end_time or 0) - (stat.start_time or 0)
        for stat in instance.get_run_step_stats(run_id)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=11_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgrank-bench-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        (data_dir / "images").mkdir(parents=True)
        labels_path = data_dir / "labels.csv"
        collections = {
            COLLECTION: {"source": {"type": "folder", "path": "images"}, "labels": "labels.csv"}
        }
        (data_dir / "collections.yaml").write_text(yaml.safe_dump({"collections": collections}))
        (root / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
            resources = build_resources(data_dir=data_dir, warehouse=str(data_dir / "warehouse"))
            defs = build_definitions(resources)
            keys = seed_sequences(data_dir / "warehouse", instance, args.images)
            instance.add_dynamic_partitions(collection_partitions.name, [COLLECTION])
            instance.add_dynamic_partitions(sequence_partitions.name, keys)
            ids = pd.concat(
                pd.read_parquet(p, columns=["image_id"])
                for p in (data_dir / "warehouse" / "raw_image_sequences").glob("*.parquet")
            )["image_id"].sort_values()
            labelled = ids.sample(frac=0.05, random_state=0)
            pd.DataFrame({"image_id": labelled}).to_csv(labels_path, index=False)

            storage = StepStorageClock(instance)
            started = time.perf_counter()
            full = defs.resolve_job_def("rank_collection").execute_in_process(
                instance=instance, partition_key=COLLECTION
            )
            full_wall = time.perf_counter() - started
            full_steps = step_seconds(instance, full.run_id)
            full_storage = storage.lap()

            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                labels_sensor(context)  # first look: remembers the current label files
                cursor = context.cursor
            more = ids[~ids.isin(labelled)].sample(n=100, random_state=1)
            pd.DataFrame({"image_id": pd.concat([labelled, more])}).to_csv(labels_path, index=False)
            started = time.perf_counter()
            with dg.build_sensor_context(
                instance=instance, resources=resources, cursor=cursor
            ) as context:
                result = labels_sensor(context)
            sensor_wall = time.perf_counter() - started
            request = result.run_requests[0]
            storage.lap()
            started = time.perf_counter()
            # The sensor's job, as the daemon runs it.
            change = defs.resolve_job_def(labels_sensor.job_name).execute_in_process(
                instance=instance, partition_key=request.partition_key, tags=request.tags
            )
            change_wall = time.perf_counter() - started
            change_steps = step_seconds(instance, change.run_id)
            change_storage = storage.lap()
    print(f"label change vs full pipeline, {args.images:,} images with features materialized")
    for title, steps in [("full pipeline", full_steps), ("label change", change_steps)]:
        print(f"  {title} steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
    rows = []
    for title, steps, (writes, queries), wall in [
        ("full pipeline (rank_collection)", full_steps, full_storage, full_wall),
        ("label-change run", change_steps, change_storage, change_wall),
    ]:
        steps_s = sum(steps.values())
        # Our compute: the steps' time less Dagster's storage work inside them.
        rows.append((title, steps_s, writes, queries, steps_s - writes - queries, wall))
    print(
        f"  {'':34} {'steps':>7} {'event writes':>13} {'queries':>8} {'compute':>8} {'run wall':>9}"
    )
    for title, steps_s, writes, queries, compute_s, wall_s in rows:
        print(
            f"  {title:34} {steps_s:6.2f}s {writes:12.2f}s {queries:7.2f}s {compute_s:7.2f}s "
            f"{wall_s:8.2f}s"
        )
    print(f"  labels_sensor evaluation: {sensor_wall:.2f} s")
    (_, full_steps_s, *_, full_compute, _), (_, change_steps_s, *_, change_compute, _) = rows
    print(
        f"  label-change / full: compute {100 * change_compute / full_compute:.1f} %, "
        f"steps {100 * change_steps_s / full_steps_s:.1f} %   (targets: compute <= 5 s and <= 5 %)"
    )


if __name__ == "__main__":
    main()
