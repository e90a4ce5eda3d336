"""Ingestion + features throughput on demo images, next to fastdup alone on the same files.

    python benchmarks/bench_ingestion.py [--images 2000] [--sequences N]

Our path is what the two per-sequence assets run in a backfill: inspect every file (decode,
sha256, EXIF), then one fastdup run per group of up to SEQUENCES_PER_RUN sequences (a run of
the `ingest_sequences` job). fastdup alone is one run over every file. The difference is the
cost of our wrapping (target: within 10 %).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import pandas as pd

import imgrank_dagster  # noqa: F401  (fastdup's offline environment)
from imgrank_dagster.core.features.embeddings import compute_features
from imgrank_dagster.core.sources.folder import folder_sequences, ingest_folder_sequence
from imgrank_dagster.defs.ingestion.assets import SEQUENCES_PER_RUN
from imgrank_dagster.devtools.demo_collection import generate_demo_collection


def fastdup_alone(files: list[Path]) -> float:
    import fastdup

    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as work_dir,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        dataset = fastdup.create(work_dir=work_dir, input_dir=str(files[0].parents[1]))
        dataset.run(
            annotations=pd.DataFrame({"filename": [str(f) for f in files]}),
            overwrite=True,
            verbose=False,
            print_summary=False,
        )
        dataset.embeddings()
        dataset.img_stats()
    return time.perf_counter() - started


def ours(root: Path) -> tuple[float, float, int]:
    """(seconds for inspection, seconds for features, accepted images).

    As the per-sequence assets run in a backfill: every sequence inspected, then one fastdup
    run per group of up to SEQUENCES_PER_RUN sequences.
    """
    inspect_seconds = feature_seconds = 0.0
    accepted_total = 0
    sequence_ids = list(folder_sequences(root))
    for start in range(0, len(sequence_ids), SEQUENCES_PER_RUN):
        started = time.perf_counter()
        raws = [
            ingest_folder_sequence(root, s) for s in sequence_ids[start : start + SEQUENCES_PER_RUN]
        ]
        inspect_seconds += time.perf_counter() - started
        accepted = pd.concat([raw[raw["status"] == "ok"] for raw in raws], ignore_index=True)
        started = time.perf_counter()
        compute_features(list(accepted["image_id"]), [root / p for p in accepted["path"]])
        feature_seconds += time.perf_counter() - started
        accepted_total += len(accepted)
    return inspect_seconds, feature_seconds, accepted_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument(
        "--sequences", type=int, default=None, help="default: the demo's ~25 images each"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgrank-bench-") as tmp:
        summary = generate_demo_collection(
            Path(tmp) / "demo", n_images=args.images, n_sequences=args.sequences, seed=1
        )
        root = summary.images_dir
        files = sorted(p for p in root.rglob("*") if p.is_file())
        compute_features(["warm-up"], [files[0]])  # load the model once, as both paths do
        alone = fastdup_alone(files)
        inspect_s, features_s, accepted = ours(root)
    total = inspect_s + features_s
    print(
        f"ingestion + features on {len(files)} demo files in {summary.n_sequences} sequences "
        f"(up to {SEQUENCES_PER_RUN} sequences per run)"
    )
    print(f"  fastdup alone (one run):        {alone:7.1f} s  {len(files) / alone:7.1f} img/s")
    print(
        f"  imgrank (inspect + fastdup/run): {total:7.1f} s  {len(files) / total:7.1f} img/s"
        f"  (inspect {inspect_s:.1f} s, features {features_s:.1f} s, {accepted} accepted)"
    )
    print(
        f"  overhead vs fastdup alone:      {100 * (total / alone - 1):+6.1f} %  (target <= +10 %)"
    )


if __name__ == "__main__":
    main()
