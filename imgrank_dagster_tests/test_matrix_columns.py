"""Embeddings move as one contiguous float32 matrix: written and read by the IO manager as a
fixed-size list column over one buffer, never as an object column of per-row arrays."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from upath import UPath

from imgrank_dagster.core.arrays import column_matrix, matrix_column
from imgrank_dagster.core.features.embeddings import embedding_matrix
from imgrank_dagster.lib.io_manager import ParquetIOManager, columns_of
from imgrank_dagster.lib.parquet import (
    ARRAYS_METADATA_KEY,
    frame_data_version,
    read_frame,
    write_frame,
)
from imgrank_dagster.lib.partitions import collection_partitions

DIM = 576
MATRIX = np.random.default_rng(0).random((50, DIM), dtype=np.float32)
SEEN: dict[str, object] = {}


def embedding_buffer_address(frame: pd.DataFrame) -> int:
    chunks = frame["embedding"].array.__arrow_array__().chunks
    assert len(chunks) == 1
    values = chunks[0].values
    return values.buffers()[1].address + values.offset * 4


@dg.asset(partitions_def=collection_partitions)
def embedded() -> pd.DataFrame:
    # As ingestion builds it: an object column of per-row arrays, None where fastdup failed.
    rows = list(MATRIX)
    rows[7] = None
    return pd.DataFrame({"image_id": [f"i{n:02d}" for n in range(50)], "embedding": rows})


@dg.asset(
    partitions_def=collection_partitions,
    ins={"embedded": columns_of("embedded", ["image_id", "embedding"])},
)
def reader(embedded: pd.DataFrame) -> pd.DataFrame:
    SEEN["dtypes"] = embedded.dtypes.to_dict()
    usable = embedded.drop(index=7)
    SEEN["whole_column"] = embedded
    SEEN["matrix"] = column_matrix(embedded["embedding"].iloc[:7])
    SEEN["rest"] = embedding_matrix(usable)
    return pd.DataFrame({"rows": [len(embedded)]})


def test_the_io_manager_reads_embeddings_without_object_columns(tmp_path: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(collection_partitions.name, ["city"])
    result = dg.materialize(
        [embedded, reader],
        instance=instance,
        partition_key="city",
        resources={"io_manager": ParquetIOManager(base_path=str(tmp_path))},
    )
    assert result.success
    # Read by the asset: an Arrow fixed-size list of float32, no object column.
    assert SEEN["dtypes"]["embedding"] == pd.ArrowDtype(pa.list_(pa.float32(), DIM))
    assert not [name for name, dtype in SEEN["dtypes"].items() if dtype == np.dtype(object)]
    # The first rows (one chunk, no null among them) are a view of the column's own buffer.
    whole = SEEN["whole_column"]
    view = SEEN["matrix"]
    assert view.__array_interface__["data"][0] == embedding_buffer_address(whole)
    assert view.dtype == np.float32 and view.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(view, MATRIX[:7])
    np.testing.assert_array_equal(SEEN["rest"], np.delete(MATRIX, 7, axis=0))
    # The missing row stays missing, and a matrix of it names the row.
    assert whole["embedding"].isna().tolist() == [row == 7 for row in range(50)]
    with pytest.raises(ValueError, match="row 7 has no vector"):
        embedding_matrix(whole)
    # On disk: one fixed-length binary value per row, its dtype and length in the metadata.
    schema = pq.read_schema(tmp_path / "embedded" / "city.parquet")
    assert schema.field("embedding").type == pa.binary(DIM * 4)
    assert ARRAYS_METADATA_KEY in schema.metadata


def test_matrix_columns_round_trip_and_keep_their_data_version(tmp_path: Path) -> None:
    frame = pd.DataFrame({"image_id": list("abc"), "embedding": matrix_column(MATRIX[:3])})
    path = UPath(tmp_path / "frame.parquet")
    write_frame(frame, path, lineage={})
    loaded = read_frame(path)
    np.testing.assert_array_equal(embedding_matrix(loaded), MATRIX[:3])
    assert frame_data_version(loaded) == frame_data_version(frame)
    assert read_frame(path, columns=["embedding"])["embedding"].dtype == frame["embedding"].dtype


def test_the_feature_matrix_is_one_float32_matrix(ranked_pipeline) -> None:
    """The real feature matrix (fastdup embeddings of generated images) as the assets read it."""
    frames = ranked_pipeline.io_manager.read_partitions("feature_matrix", ["city"])
    features = frames["city"]
    assert features["embedding"].dtype == pd.ArrowDtype(pa.list_(pa.float32(), DIM))
    assert not [
        name
        for name in features.columns
        if features[name].dtype == object
        and isinstance(features[name].iloc[0], np.ndarray | list | bytes)
    ]
    matrix = embedding_matrix(features)
    assert matrix.shape == (len(features), DIM)
    assert matrix.__array_interface__["data"][0] == embedding_buffer_address(features)
    assert not matrix.flags["WRITEABLE"]  # a view of the column, shared by every reader
