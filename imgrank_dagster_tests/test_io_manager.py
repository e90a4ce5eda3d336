"""The Parquet IO manager: exact paths, atomic writes, lineage, and the fan-in shape."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
from upath import UPath

from imgrank_dagster.lib.io_manager import ParquetIOManager, own_sequences
from imgrank_dagster.lib.names import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from imgrank_dagster.lib.parquet import LINEAGE_METADATA_KEY, read_lineage
from imgrank_dagster.lib.partitions import collection_partitions, sequence_partitions


@dg.asset(partitions_def=sequence_partitions, code_version="7")
def upstream_frames(context: dg.AssetExecutionContext) -> pd.DataFrame:
    return pd.DataFrame({"sequence": [context.partition_key] * 2, "value": [1.0, 2.0]})


@dg.asset(partitions_def=collection_partitions, ins={"upstream_frames": own_sequences()})
def collected(upstream_frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    assert isinstance(upstream_frames, dict)
    return pd.DataFrame(
        {
            "sequence": sorted(upstream_frames),
            "rows": [len(upstream_frames[k]) for k in sorted(upstream_frames)],
        }
    )


@dg.asset(partitions_def=sequence_partitions)
def failing_frame() -> pd.DataFrame:
    raise RuntimeError("boom")


def _instance_with(sequences: list[str], collections: list[str]) -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(sequence_partitions.name, sequences)
    instance.add_dynamic_partitions(collection_partitions.name, collections)
    return instance


def _materialize(assets, instance, base, key, selection=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        instance=instance,
        partition_key=key,
        selection=selection,
        resources={"io_manager": ParquetIOManager(base_path=str(base))},
    )


def test_exact_path_and_lineage_read_back(tmp_path: Path) -> None:
    instance = _instance_with(["city.s1"], ["city"])
    result = _materialize([upstream_frames], instance, tmp_path, "city.s1")
    path = tmp_path / "upstream_frames" / "city.s1.parquet"
    assert path.is_file()
    assert pd.read_parquet(path)["value"].tolist() == [1.0, 2.0]
    lineage = read_lineage(path)
    assert lineage["asset_key"] == "upstream_frames"
    assert lineage["partition"] == "city.s1"
    assert lineage["run_id"] == result.run_id
    assert lineage["code_version"] == "7"
    assert lineage["upstream"] == []
    assert lineage["created_at"].startswith("20")
    materialization = result.asset_materializations_for_node("upstream_frames")[0]
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value == 2
    assert [c.name for c in metadata["dagster/column_schema"].schema.columns] == [
        "sequence",
        "value",
    ]
    assert metadata["data_version"].value == lineage["data_version"]
    assert "city.s1" in metadata["preview"].value
    # Dagster's own data version is the content hash written into the file.
    record = instance.get_latest_data_version_record(
        dg.AssetKey("upstream_frames"), partition_key="city.s1"
    )
    assert record is not None


@pytest.mark.parametrize("sequences", [["city.s1"], ["city.s1", "city.s2", "city.s3"]])
def test_fan_in_is_always_a_dict_of_own_sequences(tmp_path: Path, sequences: list[str]) -> None:
    # Another collection's sequence must not leak into "city".
    instance = _instance_with([*sequences, "other.s1"], ["city", "other"])
    for key in [*sequences, "other.s1"]:
        _materialize([upstream_frames], instance, tmp_path, key)
    result = _materialize(
        [upstream_frames, collected], instance, tmp_path, "city", selection=[collected]
    )
    assert result.success
    frame = pd.read_parquet(tmp_path / "collected" / "city.parquet")
    assert frame["sequence"].tolist() == sequences
    upstream = read_lineage(tmp_path / "collected" / "city.parquet")["upstream"]
    assert sorted(item["partition"] for item in upstream) == sequences
    versions = {item["partition"]: item["data_version"] for item in upstream}
    for key in sequences:
        assert (
            versions[key]
            == read_lineage(tmp_path / "upstream_frames" / f"{key}.parquet")["data_version"]
        )


def test_missing_upstream_partition_is_left_out_not_fatal(tmp_path: Path) -> None:
    instance = _instance_with(["city.s1", "city.s2"], ["city"])
    _materialize([upstream_frames], instance, tmp_path, "city.s1")  # s2 never materialized
    result = _materialize(
        [upstream_frames, collected], instance, tmp_path, "city", selection=[collected]
    )
    assert pd.read_parquet(tmp_path / "collected" / "city.parquet")["sequence"].tolist() == [
        "city.s1"
    ]
    assert result.success


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    instance = _instance_with(["city.s1"], ["city"])
    _materialize([upstream_frames], instance, tmp_path, "city.s1")
    path = tmp_path / "upstream_frames" / "city.s1.parquet"
    before = path.read_bytes()

    def broken_write(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        _materialize([upstream_frames], instance, tmp_path, "city.s1")
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["city.s1.parquet"]


def test_same_code_path_for_fsspec_urls() -> None:
    """memory:// goes through the same fsspec code as s3://."""
    instance = _instance_with(["city.s1"], ["city"])
    base = "memory://imgrank-test/warehouse"
    _materialize([upstream_frames], instance, base, "city.s1")
    path = UPath(base) / "upstream_frames" / "city.s1.parquet"
    with path.open("rb") as handle:
        table = pq.read_table(handle)
    assert table.num_rows == 2
    assert LINEAGE_METADATA_KEY in table.schema.metadata
    assert read_lineage(path)["partition"] == "city.s1"


@dg.asset(
    partitions_def=sequence_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=10),
)
def several_frames(context: dg.AssetExecutionContext) -> dg.Output:
    frames = {key: pd.DataFrame({"sequence": [key]}) for key in context.partition_keys}
    return dg.Output(frames if len(frames) > 1 else frames[context.partition_key])


@dg.asset(
    partitions_def=sequence_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=10),
)
def several_counts(context: dg.AssetExecutionContext, several_frames) -> dg.Output:
    frames = (
        several_frames
        if isinstance(several_frames, dict)
        else {context.partition_key: several_frames}
    )
    assert sorted(frames) == sorted(context.partition_keys)
    return dg.Output({key: frame.assign(rows=len(frame)) for key, frame in frames.items()})


def test_a_run_over_several_partitions_writes_one_file_each(tmp_path: Path) -> None:
    keys = ["city.s1", "city.s2", "city.s3"]
    instance = _instance_with(keys, ["city"])
    result = dg.materialize(
        [several_frames, several_counts],
        instance=instance,
        tags={PARTITION_RANGE_START_TAG: "city.s1", PARTITION_RANGE_END_TAG: "city.s3"},
        resources={"io_manager": ParquetIOManager(base_path=str(tmp_path))},
    )
    assert result.success
    for key in keys:
        path = tmp_path / "several_counts" / f"{key}.parquet"
        assert pd.read_parquet(path)["sequence"].tolist() == [key]
        lineage = read_lineage(path)
        assert lineage["partition"] == key
        # Each partition's lineage names its own upstream partition only.
        assert [item["partition"] for item in lineage["upstream"]] == [key]
    assert instance.get_materialized_partitions(dg.AssetKey("several_counts")) == set(keys)


@dg.asset(
    partitions_def=collection_partitions,
    ins={"upstream_frames": own_sequences(["sequence", "weight"])},
)
def reads_a_column_it_never_had(upstream_frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(upstream_frames.values())


def test_a_file_without_a_column_an_input_reads_names_both(tmp_path: Path) -> None:
    """A file written by an earlier version of its asset gets an error that says what to do."""
    instance = _instance_with(["city.s1"], ["city"])
    _materialize([upstream_frames], instance, tmp_path, "city.s1")
    with pytest.raises(ValueError, match=r"has no column\(s\) \['weight'\].*materialize"):
        _materialize(
            [upstream_frames, reads_a_column_it_never_had],
            instance,
            tmp_path,
            "city",
            selection=[reads_a_column_it_never_had],
        )
    manager = ParquetIOManager(base_path=str(tmp_path)).create_io_manager(
        dg.build_init_resource_context()
    )
    with pytest.raises(ValueError, match=r"upstream_frames: .*city\.s1\.parquet has no column"):
        manager.read_partitions("upstream_frames", ["city.s1"], columns=["weight"])
