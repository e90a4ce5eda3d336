"""Atomic local writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv


def process_umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # elsewhere: set and restore
    os.umask(current)
    return current


def new_file_mode() -> int:
    """The mode open() gives a new file: readable by the group like every other output."""
    return 0o666 & ~process_umask()


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temp_path) in path's folder, then rename over path; clean up on failure.

    The file gets the mode of any new file (mkstemp's temporary files are private, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, new_file_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_csv_atomically(frame: pd.DataFrame, path: Path) -> None:
    # pyarrow's writer is several times faster than pandas' on wide frames.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    write_atomically(path, lambda temporary: pa_csv.write_csv(table, temporary))
