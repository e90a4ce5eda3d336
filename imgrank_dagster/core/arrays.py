"""Matrix columns: an (N, D) array as one pandas column, and back, without copying.

A frame column of per-row vectors (embeddings, a neighbour graph's rows) is held as one Arrow
fixed-size list (`pd.ArrowDtype(pa.list_(pa.float32(), D))`) whose values buffer *is* the
contiguous (N, D) matrix: `matrix_column` wraps a matrix that way and `column_matrix` returns
the matrix as a numpy view of that buffer. Never a Python list or an object column of
per-row arrays: at a million 576-d rows those cost a million Python objects and a copy per use.

Object columns of per-row numpy arrays (what a caller builds by hand, or an older file) are
still accepted by `column_matrix`; they are stacked into a new matrix (one copy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def is_matrix_column(values: pd.Series) -> bool:
    """Whether `values` is a fixed-size list column backed by Arrow."""
    dtype = values.dtype
    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_fixed_size_list(dtype.pyarrow_dtype)


def matrix_column(
    matrix: np.ndarray, valid: np.ndarray | None = None
) -> pd.api.extensions.ExtensionArray:
    """A column whose row i is matrix[i], sharing the matrix's memory (C-contiguous input).

    valid: optional boolean mask; rows where it is False are missing (null).
    """
    array = np.ascontiguousarray(matrix)
    if array.ndim != 2:
        raise ValueError(f"a matrix column needs a 2-d array, got shape {array.shape}")
    n_rows, width = array.shape
    values = pa.Array.from_buffers(
        pa.from_numpy_dtype(array.dtype), n_rows * width, [None, pa.py_buffer(array)]
    )
    mask = None if valid is None else pa.array(~np.asarray(valid, dtype=bool))
    lists = pa.FixedSizeListArray.from_arrays(values, width, mask=mask)
    return pd.arrays.ArrowExtensionArray(pa.chunked_array([lists]))


def column_matrix(
    values: pd.Series, dtype: np.dtype | type | None = None, what: str = ""
) -> np.ndarray:
    """The (N, D) matrix of a column of equal-length vectors.

    An Arrow fixed-size list column in one chunk without nulls gives a read-only view of its
    buffer (no copy); several chunks are joined into one new matrix. An object column of
    arrays is stacked (one copy). `dtype` converts (a copy only when it differs). A missing
    row, or rows of different lengths, raise a ValueError naming `what` and the row.
    """
    name = what or str(values.name)
    if is_matrix_column(values):
        chunks = values.array.__arrow_array__().chunks
        width = values.dtype.pyarrow_dtype.list_size
        for chunk in chunks:
            if chunk.null_count:
                offset = sum(len(c) for c in chunks[: chunks.index(chunk)])
                row = offset + int(np.flatnonzero(~chunk.is_valid().to_numpy(False))[0])
                raise ValueError(f"{name}: row {row} has no vector")
        parts = [
            chunk.flatten().to_numpy(zero_copy_only=True).reshape(-1, width) for chunk in chunks
        ]
        if not parts:
            empty_type = values.dtype.pyarrow_dtype.value_type.to_pandas_dtype()
            matrix = np.zeros((0, width), dtype=empty_type)
        else:
            matrix = parts[0] if len(parts) == 1 else np.concatenate(parts)
    else:
        rows = values.to_numpy()
        missing = [row for row, value in enumerate(rows) if value is None]
        if missing:
            raise ValueError(f"{name}: row {missing[0]} has no vector")
        if len(rows) == 0:
            raise ValueError(f"{name}: no rows, so no vector width")
        lengths = {len(value) for value in rows}
        if len(lengths) > 1:
            raise ValueError(f"{name}: rows have different lengths {sorted(lengths)}")
        matrix = np.stack(rows)
    if dtype is not None:
        matrix = matrix.astype(dtype, copy=False)
    return matrix
