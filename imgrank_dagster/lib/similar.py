"""Query by example on a collection's stored assets: `imgrank similar`, and for notebooks.

    from imgrank_dagster.lib.similar import similar_in_collection
    similar_in_collection("demo", ["seq-003/frame_0004", "~/tunnel.jpg"], k=20)

Reads the collection's feature matrix (ids, paths, embeddings), its current ranking and its
labelled set from the warehouse, then asks core.ranking.similar.find_similar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imgrank_dagster.core.config import Collection
from imgrank_dagster.lib.names import FEATURE_MATRIX, LABELED_IMAGES, LABELING_PRIORITY
from imgrank_dagster.lib.resources import ImgrankConfig, build_resources, default_data_dir


@dataclass(frozen=True)
class SearchableCollection:
    """What a query needs of a collection, read once (a notebook may ask many queries)."""

    collection: Collection
    features: pd.DataFrame  # image_id, path, embedding
    ranking: pd.DataFrame | None  # image_id, rank (None before the first ranking)
    labelled_ids: list[str]


def load_searchable(
    name: str, data_dir: Path | None = None, warehouse: str | None = None
) -> SearchableCollection:
    """The collection's embeddings, ranking and labelled set from the warehouse."""
    resources = build_resources(data_dir=data_dir or default_data_dir(), warehouse=warehouse)
    imgrank: ImgrankConfig = resources["imgrank"]
    collection = imgrank.collection(name)
    io_manager = resources["io_manager"].open()
    features = io_manager.read_partitions(
        FEATURE_MATRIX.to_user_string(), [name], ["image_id", "path", "embedding"]
    ).get(name)
    if features is None:
        raise ValueError(
            f"collection {name!r} has no feature matrix yet: run `imgrank rank {name}` first"
        )
    ranking = io_manager.read_partitions(
        LABELING_PRIORITY.to_user_string(), [name], ["image_id", "rank"]
    ).get(name)
    labelled = io_manager.read_partitions(
        LABELED_IMAGES.to_user_string(), [name], ["image_id"]
    ).get(name)
    labelled_ids = [] if labelled is None else labelled["image_id"].astype(str).tolist()
    return SearchableCollection(collection, features, ranking, labelled_ids)


def similar_in_collection(
    collection: str | SearchableCollection,
    queries: Sequence[str],
    *,
    k: int = 20,
    combine: str = "mean",
    data_dir: Path | None = None,
) -> pd.DataFrame:
    """The k images of the collection most similar to the queries (image ids, paths in the
    collection or image files from anywhere); columns core.ranking.similar.SIMILAR_COLUMNS."""
    from imgrank_dagster.core.ranking.similar import find_similar

    searchable = (
        collection
        if isinstance(collection, SearchableCollection)
        else load_searchable(collection, data_dir)
    )
    return find_similar(
        searchable.features,
        queries,
        k=k,
        combine=combine,
        ranking=searchable.ranking,
        labelled_ids=searchable.labelled_ids,
        image_root=searchable.collection.image_root,
    )
