"""Atomic local writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temp_path) in path's folder, then rename over path; clean up on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_csv_atomically(frame: pd.DataFrame, path: Path) -> None:
    # pyarrow's writer is several times faster than pandas' on wide frames.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_atomically(path, lambda temporary: pa_csv.write_csv(table, temporary))
