"""Find more like this: the images of a collection most similar to one or more examples.

A query is an image of the collection (its id, or its path relative to the collection's image
folder) or an image file from anywhere, embedded with the same fastdup model as the collection
(`embed_files`: the ingestion's own code path, in a temporary folder). Several queries combine:

- "mean": one search for the mean of the queries' unit embeddings (what they share);
- "best": one search per query, each image scored by its best similarity to any of them (the
  union of their neighbourhoods).

The search is exact and needs no index: one BLAS product of the stored embeddings with the
unit query (`numpy` matmul, float32), divided by each row's length (`core.ranking.index.
UnitRows` computes them), then the k largest. At 100,000 images that is one pass over a
100,000 x 576 matrix; reading the embeddings from Parquet costs about as much as the search
(README, `benchmarks/bench_similar.py`). Similarities are cosine similarities (-1..1).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imgrank_dagster.core.ranking.index import UnitRows

COMBINE_METHODS = ("mean", "best")
DEFAULT_K = 20
# find_similar's columns: the answer's own rank, the image, how similar, where it stands.
SIMILAR_COLUMNS = [
    "similar_rank",  # 1 = most similar
    "image_id",
    "similarity",  # cosine similarity to the (combined) query
    "path",  # relative to the collection's image folder
    "rank",  # its rank in the current ranking; <NA> when labelled or not ranked
    "labelled",
    "nearest_query",  # the query it is most similar to (as given)
]


@dataclass(frozen=True)
class Queries:
    """Query images resolved to unit embeddings, in the order given."""

    names: list[str]  # as given
    vectors: np.ndarray  # (Q, D) float32, unit length
    image_ids: list[str | None]  # the collection image each query is; None: an outside file
    rows: list[int | None]  # its row in the collection; None: an outside file


def unit_vectors(vectors: np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    """Rows scaled to unit length (float32); a zero or non-finite row is an error naming it."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if len(bad):
        name = names[bad[0]] if names is not None else f"row {bad[0]}"
        raise ValueError(f"query {name}: its embedding is zero or not finite")
    return vectors / norms[:, None]


def embed_files(files: Sequence[Path]) -> np.ndarray:
    """fastdup embeddings of image files from anywhere: (len(files), D) float32.

    The files are copied into a temporary folder first, so fastdup (the same call as the
    ingestion's, core.features.embeddings.compute_features) never works over their real
    folders; a file fastdup cannot embed is an error naming it and fastdup's reason.
    """
    from imgrank_dagster.core.features.embeddings import compute_features

    sources = [Path(file).expanduser().resolve() for file in files]
    for source in sources:
        if not source.is_file():
            raise ValueError(f"query {source}: no such file")
    with tempfile.TemporaryDirectory(prefix="imgrank-query-") as folder:
        copies = []
        for number, source in enumerate(sources):
            copy = Path(folder) / f"query-{number:04d}{source.suffix.lower() or '.jpg'}"
            shutil.copyfile(source, copy)
            copies.append(copy)
        ids = [str(number) for number in range(len(copies))]
        features = compute_features(ids, copies)
    failed = features[features["status"] != "ok"]
    if len(failed):
        row = int(failed.index[0])
        raise ValueError(
            f"query {sources[row]}: fastdup could not embed it ({failed['error'].iloc[0]})"
        )
    return np.stack(features["embedding"].to_list()).astype(np.float32)


def resolve_queries(
    queries: Sequence[str],
    image_ids: Sequence[str],
    paths: Sequence[str],
    embeddings: np.ndarray,
    *,
    image_root: Path | None = None,
    base_dir: Path | None = None,
) -> Queries:
    """Each query as an image of the collection (an id, a path relative to `image_root`, or a
    file inside it) or an outside image file (relative to `base_dir`, else the current
    folder), embedded with fastdup. Unknown names are an error naming them."""
    if not queries:
        raise ValueError("no query image given")
    ids = _strings(image_ids)
    root = Path(image_root).resolve() if image_root is not None else None
    rows: list[int | None] = []
    outside: list[Path] = []
    for query in queries:
        name = str(query).strip()
        row = _row_of(name, ids, paths, root, base_dir)
        if isinstance(row, Path):
            outside.append(row)
            rows.append(None)
        else:
            rows.append(row)
    embedded = iter(embed_files(outside)) if outside else iter(())
    vectors = [embeddings[row] if row is not None else next(embedded) for row in rows]
    names = [str(query) for query in queries]
    return Queries(
        names=names,
        vectors=unit_vectors(np.stack(vectors), names),
        image_ids=[str(ids[row]) if row is not None else None for row in rows],
        rows=rows,
    )


def _strings(values: Sequence[str]) -> np.ndarray:
    """An object array of str (a pandas string column converts once)."""
    if isinstance(values, pd.Series):
        return values.astype(str).to_numpy(dtype=object)
    return np.asarray(values, dtype=object)


def _position(values: np.ndarray, name: str) -> int:
    """The first row equal to name, -1 when none (one vectorised scan: no hash index)."""
    hits = np.flatnonzero(values == name)
    return int(hits[0]) if len(hits) else -1


def _row_of(
    name: str, ids: np.ndarray, paths: Sequence[str], root: Path | None, base_dir: Path | None
) -> int | Path:
    """The collection row a query names, or the outside file it names."""
    position = _position(ids, name)
    if position >= 0:
        return position
    paths = _strings(paths)  # only when a query is not an id: 100,000 strings cost time
    position = _position(paths, name)
    if position >= 0:
        return position
    file = Path(name).expanduser()
    if not file.is_absolute():
        file = (base_dir or Path.cwd()) / file
    if file.is_file():
        file = file.resolve()
        if root is not None and file.is_relative_to(root):
            position = _position(paths, file.relative_to(root).as_posix())
            if position >= 0:
                return position
        return file
    raise ValueError(
        f"query {name!r} is neither an image id of the collection, nor a path in it, nor an "
        "image file"
    )


def most_similar(
    embeddings: np.ndarray | UnitRows,
    query_vectors: np.ndarray,
    *,
    k: int = DEFAULT_K,
    combine: str = "mean",
    query_rows: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k rows most similar to the queries: (rows, similarities, nearest query), best
    first. `query_vectors` are unit vectors (`unit_vectors`); see the module docstring for
    `combine`. Equal similarities (to 6 decimals: pixel-identical copies of a query) put
    `query_rows` (the queries that are rows of the collection) first, then the lower row."""
    if combine not in COMBINE_METHODS:
        raise ValueError(f"combine must be one of {COMBINE_METHODS}, got {combine!r}")
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    unit = embeddings if isinstance(embeddings, UnitRows) else UnitRows(embeddings)
    if unit.rows is not None or unit.centre is not None:
        raise ValueError("most_similar searches whole, uncentred embeddings")
    queries = unit_vectors(query_vectors)
    if queries.shape[1] != unit.dimension:
        raise ValueError(
            f"queries have {queries.shape[1]} dimensions, the collection's embeddings "
            f"{unit.dimension}"
        )
    k = min(int(k), len(unit))
    if combine == "mean" or len(queries) == 1:
        searched = unit_vectors(queries.mean(axis=0, keepdims=True), ["(the mean)"])
    else:
        searched = queries
    # One pass over the stored rows (a BLAS product), then divided by the rows' lengths:
    # cosine similarities without writing a normalised copy of the matrix.
    scores = np.asarray(unit.matrix, dtype=np.float32) @ searched.T
    scores /= np.where(unit.norms == 0, 1, unit.norms)[:, None]
    best = scores.max(axis=1) if scores.shape[1] > 1 else scores[:, 0]
    # A few more when queries are rows: a tie among copies must not leave the query out.
    wanted = min(k + len(query_rows), len(best))
    candidates = np.argpartition(-best, wanted - 1)[:wanted]
    similarities = best[candidates]
    is_query = np.isin(candidates, np.asarray(query_rows, dtype=np.int64))
    order = np.lexsort((candidates, ~is_query, -np.round(similarities.astype(np.float64), 6)))
    rows = candidates[order[:k]].astype(np.int64)
    similarities = similarities[order[:k]]
    # Which query each answer is most similar to.
    per_query = scores[rows] if searched is queries else unit[rows] @ queries.T
    nearest = np.argmax(per_query, axis=1)
    # float32 products of unit vectors can pass 1 by a rounding step (the query itself).
    return rows, np.clip(similarities, -1.0, 1.0).astype(np.float32), nearest


def find_similar(
    features: pd.DataFrame,
    queries: Sequence[str],
    *,
    k: int = DEFAULT_K,
    combine: str = "mean",
    ranking: pd.DataFrame | None = None,
    labelled_ids: Sequence[str] = (),
    image_root: Path | None = None,
    base_dir: Path | None = None,
) -> pd.DataFrame:
    """The k images of a collection most similar to `queries` (SIMILAR_COLUMNS).

    features: the collection's feature matrix (image_id, path, embedding); queries: image ids,
    paths in the collection or image files (see `resolve_queries`); ranking: image_id, rank
    (the current labeling_priority), to say where each answer stands; labelled_ids: the
    labelled images. A notebook gets the same answer as `imgrank similar`.
    """
    from imgrank_dagster.core.features.embeddings import embedding_matrix

    missing = [column for column in ("image_id", "path", "embedding") if column not in features]
    if missing:
        raise ValueError(f"features lack column(s) {missing}")
    embeddings = embedding_matrix(features)
    if len(embeddings) == 0:
        raise ValueError("the collection has no embedded image")
    image_ids = _strings(features["image_id"])
    resolved = resolve_queries(
        queries,
        image_ids,
        features["path"],
        embeddings,
        image_root=image_root,
        base_dir=base_dir,
    )
    rows, similarities, nearest = most_similar(
        embeddings,
        resolved.vectors,
        k=k,
        combine=combine,
        query_rows=[row for row in resolved.rows if row is not None],
    )
    found = pd.DataFrame(
        {
            "similar_rank": np.arange(1, len(rows) + 1, dtype=np.int64),
            "image_id": image_ids[rows],
            "similarity": similarities.astype(np.float64),
            "path": features["path"].iloc[rows].astype(str).to_numpy(dtype=object),
        }
    )
    ranks = pd.Series(dtype="Int64")
    if ranking is not None:  # only the answers' rows: a whole ranking is 100,000 rows
        answers = ranking[ranking["image_id"].isin(found["image_id"])]
        ranks = answers.drop_duplicates("image_id").set_index("image_id")["rank"].astype("Int64")
    found["rank"] = found["image_id"].map(ranks).astype("Int64")
    found["labelled"] = found["image_id"].isin(set(map(str, labelled_ids)))
    found["nearest_query"] = np.asarray(resolved.names, dtype=object)[nearest]
    return found[SIMILAR_COLUMNS]
