"""Query latency of `imgrank similar` (query by example) at 11,000 and 100,000 images.

What a query costs once the collection is ranked, as the command runs it: reading the feature
matrix's ids, paths and embeddings (576-d float32) plus the ranking and labelled set from the
warehouse's Parquet files (checksums verified), then an exact search (inner products of the
unit query with every unit embedding, core.ranking.index.search_vectors). Printed separately:
the search alone on embeddings already in memory (a notebook asking many queries), several
queries combined, and embedding one outside file with fastdup (independent of the collection's
size). Target: well under a second at 100,000 images. The synthetic collection is
bench_coverage's (sequences of drifting frames around scene centres).

Usage: python benchmarks/bench_similar.py [--sizes 11000 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from upath import UPath

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coverage import synthetic_collection

from imgrank_dagster.core.features.embeddings import embedding_column
from imgrank_dagster.core.ranking.index import UnitRows
from imgrank_dagster.core.ranking.similar import embed_files, most_similar
from imgrank_dagster.lib.parquet import write_frame
from imgrank_dagster.lib.similar import load_searchable, similar_in_collection

NAME = "bench"


def write_collection(root: Path, n: int) -> tuple[Path, str]:
    """A collection's feature matrix, ranking and labelled set as the pipeline stores them."""
    embeddings, meta = synthetic_collection(n)
    data = root / "data"
    (data / "images").mkdir(parents=True)
    warehouse = data / "warehouse"
    for asset in ("feature_matrix", "labeling_priority", "labeled_images"):
        (warehouse / asset).mkdir(parents=True)
    frame = meta[["image_id", "sequence_id"]].copy()
    frame["path"] = frame["image_id"] + ".jpg"
    frame["embedding"] = embedding_column(embeddings)
    lineage = {"asset_key": "feature_matrix", "partition": NAME}
    write_frame(frame, UPath(warehouse / "feature_matrix" / f"{NAME}.parquet"), lineage)
    labelled = meta["image_id"].iloc[:: max(1, n // 500)]
    ranked = meta.loc[~meta["image_id"].isin(labelled), ["image_id"]]
    ranked["rank"] = np.arange(1, len(ranked) + 1)
    write_frame(
        ranked, UPath(warehouse / "labeling_priority" / f"{NAME}.parquet"), {"partition": NAME}
    )
    write_frame(
        pd.DataFrame({"image_id": labelled}),
        UPath(warehouse / "labeled_images" / f"{NAME}.parquet"),
        {"partition": NAME},
    )
    collections = {"collections": {NAME: {"source": {"type": "folder", "path": "images"}}}}
    (data / "collections.yaml").write_text(yaml.safe_dump(collections))
    return data, str(warehouse)


def median_seconds(work, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench(n: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="imgrank-bench-similar-") as folder:
        data, warehouse = write_collection(Path(folder), n)
        size_mb = sum(p.stat().st_size for p in Path(warehouse).rglob("*.parquet")) / 1e6
        load_s, searchable = median_seconds(lambda: load_searchable(NAME, data, warehouse), repeat)
        query = searchable.features["image_id"].iloc[n // 2]
        search_s, found = median_seconds(
            lambda: similar_in_collection(searchable, [query], k=20), repeat
        )
        assert found["image_id"].iloc[0] == query
        queries = searchable.features["image_id"].iloc[[n // 5, n // 2, 4 * n // 5]].tolist()
        several_s, _ = median_seconds(
            lambda: similar_in_collection(searchable, queries, k=20, combine="best"), repeat
        )
        command_s, _ = median_seconds(
            lambda: similar_in_collection(load_searchable(NAME, data, warehouse), [query], k=20),
            repeat,
        )
        from imgrank_dagster.core.features.embeddings import embedding_matrix

        matrix = embedding_matrix(searchable.features)
        unit = UnitRows(matrix)
        vector = matrix[[n // 2]] / np.linalg.norm(matrix[n // 2])
        memory_s, _ = median_seconds(lambda: most_similar(unit, vector, k=20), repeat)
    print(
        f"{n:>7} images ({size_mb:.0f} MB of Parquet): load {load_s:.3f} s, query by an id "
        f"{search_s:.3f} s, 3 queries (best of) {several_s:.3f} s; load + query (what "
        f"`imgrank similar` does) {command_s:.3f} s; search alone, embeddings and row lengths in "
        f"memory {memory_s * 1000:.1f} ms"
    )


def bench_outside_file() -> None:
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="imgrank-bench-query-") as folder:
        path = Path(folder) / "query.jpg"
        pixels = np.random.default_rng(0).integers(0, 255, (288, 384, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        started = time.perf_counter()
        embed_files([path])
        print(
            f"embedding one outside query file with fastdup: {time.perf_counter() - started:.2f} s"
            " (any collection size)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[11_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    for n in args.sizes:
        bench(n, args.repeat)
    bench_outside_file()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
