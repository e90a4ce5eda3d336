"""Cost of the integrity checks on every Parquet read (lib.parquet_integrity).

Writes and reads two tables as the IO manager does: an image catalog (one row per image: ids,
paths, statuses, reasons; 1,000,000 rows) and a feature matrix (576-d float32 embeddings;
100,000 rows, 230 MB). For each: write without and with page checksums, read without checks and
with the checks imgrank runs (page checksums + the footer's integrity record), and the
alternative the issue mentioned, hashing the whole frame on read (frame_data_version). Best of
3 writes and 5 reads (files in the page cache); prints the machine's load; asserts nothing.

Usage: python benchmarks/bench_integrity.py [--catalog-rows 1000000] [--matrix-rows 100000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from imgrank_dagster.lib.parquet import frame_data_version, read_table, write_frame

LINEAGE = {"asset_key": "bench", "partition": "bench", "data_version": "x", "upstream": []}


def catalog(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sequence = np.arange(rows) // 30
    return pd.DataFrame(
        {
            "image_id": [
                f"seq-{s:06d}/frame_{i:04d}"
                for s, i in zip(sequence, np.arange(rows) % 30, strict=True)
            ],
            "path": [
                f"seq-{s:06d}/frame_{i:04d}.jpg"
                for s, i in zip(sequence, np.arange(rows) % 30, strict=True)
            ],
            "sequence_index": np.arange(rows) % 30,
            "bytes": rng.integers(50_000, 900_000, rows),
            "lat": rng.normal(52.5, 0.1, rows),
            "status": rng.choice(["ok", "rejected", "not embedded"], rows, p=[0.95, 0.03, 0.02]),
            "reason": rng.choice(["", "cannot decode image: truncated", "too small"], rows),
        }
    )


def matrix(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    embeddings = rng.random((rows, 576), dtype=np.float32)
    return pd.DataFrame(
        {"image_id": [f"s/{i}" for i in range(rows)], "embedding": list(embeddings)}
    )


def best(action: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(name: str, frame: pd.DataFrame, folder: Path) -> None:
    checked = UPath(folder / f"{name}.parquet")
    plain = folder / f"{name}-plain.parquet"
    write_plain = best(
        lambda: pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), plain)
    )
    write_checked = best(lambda: write_frame(frame, checked, LINEAGE))
    pq.read_table(plain), read_table(checked, None, name)  # both files in the page cache
    read_plain = best(lambda: pq.read_table(plain), 5)
    read_checked = best(lambda: read_table(checked, None, name), 5)
    loaded = read_table(checked, None, name).to_pandas()
    hashing = best(lambda: frame_data_version(loaded), 1)
    size = os.path.getsize(checked) / 1e6
    print(
        f"{name:>16} {len(frame):>9,} rows {size:7.0f} MB | write {write_plain:6.2f} s, with "
        f"checksums {write_checked:6.2f} s | read {read_plain:6.2f} s, checked "
        f"{read_checked:6.2f} s (+{read_checked - read_plain:5.2f} s) | hashing the frame "
        f"instead: +{hashing:6.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog-rows", type=int, default=1_000_000)
    parser.add_argument("--matrix-rows", type=int, default=100_000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="imgrank-bench-integrity-") as folder:
        measure("image catalog", catalog(args.catalog_rows), Path(folder))
        measure("feature matrix", matrix(args.matrix_rows), Path(folder))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
