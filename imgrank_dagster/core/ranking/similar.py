"""Find more like this: the images of a collection most similar to one or more examples.

A query is an image of the collection (its id, or its path relative to the collection's image
folder) or an image file from anywhere, embedded with the same fastdup model as the collection
(`embed_files`: the ingestion's own code path, in a temporary folder). Several queries combine:

- "mean": one search for the mean of the queries' unit embeddings (what they share);
- "best": one search per query, each image scored by its best similarity to any of them (the
  union of their neighbourhoods).

The search is exact: the inner products of the unit query vectors with every unit embedding
of the collection (`core.ranking.index.search_vectors`, FAISS's BLAS kernel over blocks of
rows). At 100,000 images that is a 100,000 x 576 product per query, a few tens of
milliseconds; loading the embeddings costs more than searching them (README, `benchmarks/
bench_similar.py`), so no index is kept for it. Similarities are cosine similarities (-1..1).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from imgrank_dagster.core.ranking.index import UnitRows, search_vectors

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
    by_id = pd.Index([str(image_id) for image_id in image_ids])
    by_path = pd.Index([str(path) for path in paths])
    root = Path(image_root).resolve() if image_root is not None else None
    rows: list[int | None] = []
    outside: list[Path] = []
    for query in queries:
        name = str(query).strip()
        row = _row_of(name, by_id, by_path, root, base_dir)
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
        image_ids=[by_id[row] if row is not None else None for row in rows],
    )


def _row_of(
    name: str, by_id: pd.Index, by_path: pd.Index, root: Path | None, base_dir: Path | None
) -> int | Path:
    """The collection row a query names, or the outside file it names."""
    for index in (by_id, by_path):
        position = index.get_indexer([name])[0]
        if position >= 0:
            return int(position)
    file = Path(name).expanduser()
    if not file.is_absolute():
        file = (base_dir or Path.cwd()) / file
    if file.is_file():
        file = file.resolve()
        if root is not None and file.is_relative_to(root):
            position = by_path.get_indexer([file.relative_to(root).as_posix()])[0]
            if position >= 0:
                return int(position)
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
    queries = unit_vectors(query_vectors)
    if queries.shape[1] != unit.dimension:
        raise ValueError(
            f"queries have {queries.shape[1]} dimensions, the collection's embeddings "
            f"{unit.dimension}"
        )
    k = min(int(k), len(unit))
    # A few more when queries are rows: a tie among copies must not leave the query out.
    wanted = min(k + len(query_rows), len(unit))
    if combine == "mean" or len(queries) == 1:
        combined = unit_vectors(queries.mean(axis=0, keepdims=True), ["(the mean)"])
        found, similarities = search_vectors(unit, combined, wanted)
        rows, similarities = found[0], similarities[0]
    else:
        found, similarities = search_vectors(unit, queries, wanted)
        rows, similarities = _best_of(found, similarities, wanted)
    is_query = np.isin(rows, np.asarray(query_rows, dtype=np.int64))
    order = np.lexsort((rows, ~is_query, -np.round(similarities.astype(np.float64), 6)))[:k]
    rows, similarities = rows[order].astype(np.int64), similarities[order]
    nearest = np.argmax(unit[rows] @ queries.T, axis=1) if len(rows) else np.zeros(0, int)
    # float32 products of unit vectors can pass 1 by a rounding step (the query itself).
    return rows, np.clip(similarities, -1.0, 1.0).astype(np.float32), nearest


def _best_of(found: np.ndarray, similarities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best similarity over the queries' lists; the k best rows."""
    frame = pd.DataFrame({"row": found.ravel(), "similarity": similarities.ravel()})
    frame = frame[frame["row"] >= 0]
    best = frame.groupby("row")["similarity"].max()
    best = best.sort_values(ascending=False, kind="stable").head(k)
    return best.index.to_numpy(), best.to_numpy(dtype=np.float32)


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
    image_ids = features["image_id"].astype(str).to_numpy()
    paths = features["path"].astype(str).to_numpy()
    resolved = resolve_queries(
        queries, image_ids, paths, embeddings, image_root=image_root, base_dir=base_dir
    )
    query_ids = [image_id for image_id in resolved.image_ids if image_id is not None]
    rows, similarities, nearest = most_similar(
        embeddings,
        resolved.vectors,
        k=k,
        combine=combine,
        query_rows=pd.Index(image_ids).get_indexer(query_ids),
    )
    found = pd.DataFrame(
        {
            "similar_rank": np.arange(1, len(rows) + 1, dtype=np.int64),
            "image_id": image_ids[rows],
            "similarity": similarities.astype(np.float64),
            "path": paths[rows],
        }
    )
    ranks = pd.Series(dtype="Int64")
    if ranking is not None:
        ranks = ranking.drop_duplicates("image_id").set_index("image_id")["rank"].astype("Int64")
    found["rank"] = found["image_id"].map(ranks).astype("Int64")
    found["labelled"] = found["image_id"].isin(set(map(str, labelled_ids)))
    found["nearest_query"] = np.asarray(resolved.names, dtype=object)[nearest]
    return found[SIMILAR_COLUMNS]
