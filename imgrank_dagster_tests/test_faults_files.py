"""Faults in stored files: bit flips, truncation, killed writes, leftovers, file modes.

Real Parquet files written by the IO manager's file format; a real Dagster instance where runs
matter. Nothing here needs fastdup or a daemon.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fault_timings import record_timing
from upath import UPath

from imgrank_dagster.core.files import new_file_mode, write_csv_atomically
from imgrank_dagster.lib.io_manager import ParquetIOManager
from imgrank_dagster.lib.leftovers import clean_after_killed_writes, remove_orphan_temp_files
from imgrank_dagster.lib.parquet import (
    preview_markdown,
    read_frame,
    read_lineage,
    write_frame,
)
from imgrank_dagster.lib.parquet_integrity import INTEGRITY_METADATA_KEY, CorruptFileError
from imgrank_dagster.lib.partitions import collection_partitions

LINEAGE = {"asset_key": "scores", "partition": "city", "data_version": "abc", "upstream": []}


def _frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "image_id": [f"seq-{i // 40:03d}/frame_{i:04d}" for i in range(rows)],
            "score": rng.random(rows),
            "cluster": rng.integers(0, 12, rows),
            "embedding": [rng.random(8).astype(np.float32) for _ in range(rows)],
            "reason": rng.choice(["good region", "medium", "held back: near-copy"], rows),
        }
    )
    frame.attrs["clustering"] = {"k": 12, "notes": ["elbow at 12"]}
    return frame


def _same(read: pd.DataFrame, frame: pd.DataFrame) -> bool:
    if list(read.columns) != list(frame.columns) or len(read) != len(frame):
        return False
    plain = [c for c in frame.columns if c != "embedding"]
    return read[plain].astype(str).equals(frame[plain].astype(str)) and all(
        np.array_equal(a, b) for a, b in zip(read["embedding"], frame["embedding"], strict=True)
    )


def test_every_file_carries_page_checksums_and_an_integrity_record(tmp_path: Path) -> None:
    path = UPath(tmp_path / "scores.parquet")
    write_frame(_frame(), path, LINEAGE)
    metadata = pq.ParquetFile(path).metadata
    assert INTEGRITY_METADATA_KEY in metadata.metadata
    assert read_lineage(path)["data_version"] == "abc"
    read = read_frame(path, with_attrs=True)
    assert _same(read, _frame()) and read.attrs["clustering"]["k"] == 12


def test_random_bit_flips_never_read_back_as_wrong_data(tmp_path: Path) -> None:
    """Without checksums 158 of 200 flips read back silently (the issue); now none does."""
    frame = _frame()
    clean = tmp_path / "clean.parquet"
    write_frame(frame, UPath(clean), LINEAGE)
    data = clean.read_bytes()
    flipped = tmp_path / "flipped.parquet"
    rng = random.Random(15)
    outcomes = {"refused": 0, "intact": 0, "wrong": 0}
    for _ in range(300):
        damaged = bytearray(data)
        position = rng.randrange(len(damaged))
        damaged[position] ^= 1 << rng.randrange(8)
        flipped.write_bytes(bytes(damaged))
        try:
            read = read_frame(UPath(flipped), asset="scores", with_attrs=True)
        except CorruptFileError as error:
            assert str(flipped) in str(error) and "materialize scores again" in str(error)
            outcomes["refused"] += 1
            continue
        intact = _same(read, frame) and read.attrs == frame.attrs
        outcomes["intact" if intact else "wrong"] += 1
    # A flip in bytes no reader uses (column statistics) changes nothing read: "intact".
    assert outcomes["wrong"] == 0, outcomes
    record_timing("bit flips: refused", outcomes["refused"], "of 300 (the rest read intact)")


@pytest.mark.slow
def test_flips_in_the_footer_are_caught_by_the_integrity_record(tmp_path: Path) -> None:
    """Page checksums cover the data pages only; the footer (schema, row counts, lineage) is
    checked against the integrity record."""
    frame = _frame(rows=60)
    clean = tmp_path / "clean.parquet"
    write_frame(frame, UPath(clean), LINEAGE)
    data = clean.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little")
    flipped = tmp_path / "flipped.parquet"
    wrong = []
    rng = random.Random(12)
    # A sample of the footer's bytes and bits (all of them: 8,000 reads, 50 s).
    for position in rng.sample(range(len(data) - 8 - footer, len(data) - 8), 500):
        for bit in (rng.randrange(8),):
            damaged = bytearray(data)
            damaged[position] ^= 1 << bit
            flipped.write_bytes(bytes(damaged))
            try:
                read = read_frame(UPath(flipped), asset="scores", with_attrs=True)
            except CorruptFileError:
                continue
            lineage_ok = read_lineage(UPath(flipped)) == LINEAGE
            if not (_same(read, frame) and read.attrs == frame.attrs and lineage_ok):
                wrong.append((position, bit))
    assert wrong == []


def test_a_truncated_file_names_itself_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "city.parquet"
    write_frame(_frame(), UPath(path), LINEAGE)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError) as error:
        read_frame(UPath(path), asset="cluster_assignments")
    message = str(error.value)
    assert str(path) in message and "materialize cluster_assignments again" in message


def test_a_file_written_before_integrity_records_still_reads(tmp_path: Path) -> None:
    """An older imgrank file: a lineage, no integrity record, no page checksums."""
    path = tmp_path / "old.parquet"
    table = pq.read_table(_write(tmp_path))
    old_metadata = {k: v for k, v in table.schema.metadata.items() if b"integrity" not in k}
    pq.write_table(table.replace_schema_metadata(old_metadata), path)
    assert len(read_frame(UPath(path))) == 400
    # Without a lineage either, it is no file of the warehouse (or its footer is damaged).
    pq.write_table(table.replace_schema_metadata({}), path)
    with pytest.raises(CorruptFileError, match="neither an integrity record nor a lineage"):
        read_frame(UPath(path))


def _write(folder: Path) -> Path:
    path = folder / "source.parquet"
    write_frame(_frame(), UPath(path), LINEAGE)
    return path


def test_a_missing_column_still_names_the_asset_to_rematerialize(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with pytest.raises(ValueError, match=r"no column\(s\) \['absent'\]"):
        read_frame(UPath(path), columns=["image_id", "absent"], asset="scores")


def test_preview_shows_missing_arrays_and_cuts_long_text() -> None:
    """fastdup's failures leave None embeddings after embedded rows: the preview once raised
    `object of type 'NoneType' has no len()` after the file was written."""
    frame = pd.DataFrame(
        {
            "image_id": ["a", "b", "x" * 50_000],
            "embedding": [np.zeros(4), None, np.ones(4)],
        }
    )
    preview = preview_markdown(frame)
    assert preview.count("[4 values]") == 2
    assert len(preview) < 2_000 and "(50000 characters)" in preview


# --- killed writes and their leftovers ----------------------------------------------------------

WRITER = """
import sys, numpy as np, pandas as pd
from upath import UPath
from imgrank_dagster.lib.parquet import write_frame
frame = pd.DataFrame({"value": np.random.default_rng(0).random(40_000_000)})
print("writing", flush=True)
write_frame(frame, UPath(sys.argv[1]), {"asset_key": "big", "partition": "city"})
"""


@pytest.mark.slow  # writes 300 MB to be killed in the middle
def test_kill_9_during_a_write_keeps_the_old_file_and_the_next_run_removes_the_leftover(
    tmp_path: Path,
) -> None:
    """A writer killed mid-write: the target keeps its previous content (never torn), the
    temporary file is left; the next run that writes into the folder removes it."""
    warehouse = tmp_path / "warehouse"
    target = warehouse / "labeled" / "city.parquet"
    target.parent.mkdir(parents=True)
    write_frame(_frame(rows=10), UPath(target), LINEAGE)
    before = target.read_bytes()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 60
        while not [p for p in target.parent.glob(".*.tmp") if p.stat().st_size > 0]:
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.005)
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    assert target.read_bytes() == before and _same(read_frame(UPath(target)), _frame(rows=10))
    leftovers = list(target.parent.glob(".*.tmp"))
    assert len(leftovers) == 1

    # The next run writing into that folder removes what no live run can own.
    @dg.asset(partitions_def=collection_partitions, name="labeled")
    def labeled() -> pd.DataFrame:
        return _frame(rows=5)

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(collection_partitions.name, ["city"])
    started = time.monotonic()
    result = dg.materialize(
        [labeled],
        instance=instance,
        partition_key="city",
        resources={"io_manager": ParquetIOManager(base_path=str(warehouse))},
    )
    assert result.success
    assert not list(target.parent.glob(".*.tmp"))
    assert len(read_frame(UPath(target))) == 5
    record_timing(
        "kill -9 during a write: leftover removed by the next run", time.monotonic() - started
    )


def test_temporary_files_of_live_runs_are_kept(tmp_path: Path) -> None:
    fresh = tmp_path / ".city.parquet.0123.tmp"
    fresh.write_bytes(b"being written")
    old = tmp_path / ".town.parquet.4567.tmp"
    old.write_bytes(b"orphan")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    removed = remove_orphan_temp_files(tmp_path, older_than=time.time() - 60)
    assert removed == [old.name] and fresh.exists()
    with dg.instance_for_test() as instance:
        # No run in progress: anything older than now is an orphan.
        assert clean_after_killed_writes(instance, tmp_path) == [fresh.name]


def test_exports_are_readable_by_the_group_like_every_other_output(tmp_path: Path) -> None:
    previous = os.umask(0o002)
    try:
        export = tmp_path / "exports" / "all_score_after_rank.csv"
        write_csv_atomically(pd.DataFrame({"rank": [1, 2]}), export)
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        assert export.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o664
        assert new_file_mode() == 0o664
    finally:
        os.umask(previous)


def test_fastdup_leaves_nothing_in_the_temporary_folder(tmp_path: Path) -> None:
    """fastdup wrote its image list (every absolute path) to /tmp and never removed it."""
    import tempfile

    from imgrank_dagster.core.features.embeddings import temporary_files_in

    work = tmp_path / "work"
    work.mkdir()
    with temporary_files_in(str(work)), tempfile.NamedTemporaryFile(delete=False) as handle:
        name = handle.name
    assert Path(name).parent == work
    assert tempfile.gettempdir() != str(work)


def test_every_column_type_imgrank_stores_passes_its_own_integrity_check(tmp_path: Path) -> None:
    """Parquet gives some types back changed (seconds as milliseconds, a categorical's
    dictionary as plain strings): the integrity record expects exactly that, no more."""
    import datetime as dt

    frame = pd.DataFrame(
        {
            "captured_at": pd.to_datetime([dt.datetime(2024, 1, 1)] * 3).astype("datetime64[s]"),
            "discovered_at": pd.Series(pd.to_datetime(["2024-01-01"] * 3, utc=True)),
            "region": pd.Categorical(["good", "bad", "good"]),
            "reason": pd.Series(["a", "b", None], dtype="str"),
            "width": pd.array([1, None, 3], dtype="Int64"),
            "lat": pd.array([52.5, None, 13.4], dtype="Float64"),
            "neighbour_rows": [[1, 2], [3], []],
            "embedding": [np.zeros(4, dtype=np.float32)] * 3,
            "summary": [{"a": 1}, {"a": 2}, {"a": 3}],
        }
    )
    path = UPath(tmp_path / "types.parquet")
    write_frame(frame, path, LINEAGE)
    read = read_frame(path)
    assert list(read.columns) == list(frame.columns) and len(read) == 3
