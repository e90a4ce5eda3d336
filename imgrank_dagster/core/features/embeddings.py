"""fastdup embeddings and image statistics for a list of image files."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from imgrank_dagster.core.arrays import column_matrix, matrix_column

EMBEDDING_DIM = 576
# fastdup's img_stats column -> ours.
STAT_COLUMNS = {
    "blur": "blur",
    "mean": "brightness",
    "contrast": "contrast",
    "min": "min_value",
    "max": "max_value",
    "stdv": "std",
    "img_w": "width",
    "img_h": "height",
}
FEATURE_COLUMNS = ["image_id", "status", "error", "embedding", *STAT_COLUMNS.values()]


def empty_features() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype="object") for column in FEATURE_COLUMNS})
    for column in STAT_COLUMNS.values():
        frame[column] = frame[column].astype("float64")
    return frame


@contextlib.contextmanager
def quiet_fastdup() -> Iterator[None]:
    """Silence fastdup: its banner goes to Python's stderr, its progress bars straight to file
    descriptor 1 from its C++ core; both are noise in a run log or a terminal."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_TEMPDIR_LOCK = threading.Lock()


@contextlib.contextmanager
def temporary_files_in(folder: str) -> Iterator[None]:
    """Python's temporary files go into folder meanwhile.

    fastdup writes the image list it is given to a NamedTemporaryFile(delete=False) plus a
    ".csv" beside it and never removes them: left in /tmp they would list every image's
    absolute path, two files per run. In fastdup's work folder they go away with it.
    """
    with _TEMPDIR_LOCK:
        previous = tempfile.tempdir
        tempfile.tempdir = folder
        try:
            yield
        finally:
            tempfile.tempdir = previous


def compute_features(image_ids: Sequence[str], files: Sequence[Path]) -> pd.DataFrame:
    """Run fastdup once over the files: one row per image id, `failed` with fastdup's code.

    fastdup works in a temporary directory that is removed afterwards.
    """
    if len(image_ids) != len(files):
        raise ValueError(f"{len(image_ids)} image ids but {len(files)} files")
    if not files:
        return empty_features()
    import fastdup

    paths = [str(Path(file).resolve()) for file in files]
    if len(set(paths)) != len(paths):
        raise ValueError("the same file is listed twice")
    id_by_path = dict(zip(paths, image_ids, strict=True))
    with (
        tempfile.TemporaryDirectory(prefix="imgrank-fastdup-") as work_dir,
        temporary_files_in(work_dir),
        quiet_fastdup(),
    ):
        dataset = fastdup.create(work_dir=work_dir, input_dir=os.path.commonpath(paths))
        dataset.run(
            annotations=pd.DataFrame({"filename": paths}),
            overwrite=True,
            verbose=False,
            print_summary=False,
        )
        embedded_files, embeddings = dataset.embeddings()
        stats = dataset.img_stats()
        invalid = dataset.invalid_instances()
    embedding_by_path = {
        str(Path(name).resolve()): vector
        for name, vector in zip(
            embedded_files, np.asarray(embeddings, dtype=np.float32), strict=True
        )
    }
    stats = stats.assign(filename=stats["filename"].map(lambda n: str(Path(n).resolve())))
    stats_by_path = stats.set_index("filename")[list(STAT_COLUMNS)].rename(columns=STAT_COLUMNS)
    error_by_path: dict[str, str] = {}
    if invalid is not None and len(invalid):
        error_by_path = {
            str(Path(name).resolve()): str(code)
            for name, code in zip(invalid["filename"], invalid["error_code"], strict=True)
        }
    rows = []
    for path in paths:
        vector = embedding_by_path.get(path)
        ok = vector is not None and path in stats_by_path.index and np.isfinite(vector).all()
        row: dict[str, object] = {
            "image_id": id_by_path[path],
            "status": "ok" if ok else "failed",
            "error": "" if ok else error_by_path.get(path, "no embedding returned by fastdup"),
            "embedding": vector if ok else None,
        }
        for column in STAT_COLUMNS.values():
            row[column] = float(stats_by_path.at[path, column]) if ok else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=FEATURE_COLUMNS)


def embedding_matrix(features: pd.DataFrame) -> np.ndarray:
    """The N x D float32 matrix of the `embedding` column: every caller's one way to it.

    The feature matrix as the IO manager reads it holds the column as one Arrow fixed-size
    list; the matrix is then a read-only view of that buffer (no copy, see core.arrays). A
    frame built by hand with an object column of arrays is stacked (one copy).
    """
    if features.empty:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    return column_matrix(features["embedding"], np.float32, "embedding")


def embedding_column(matrix: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """An `embedding` column over an (N, D) float32 matrix, sharing its memory."""
    return matrix_column(np.ascontiguousarray(matrix, dtype=np.float32))
