"""A persistent FiftyOne dataset per collection, built once and updated in place after re-ranks.

One sample per accepted image, matched by `image_id` (so sample ids, and anything people added
in the App such as their own tags, survive a re-rank). Fields: rank, score and every score
component, region, reason, cluster, priority group, duplicate group, sequence, capture time,
GPS as a `GeoLocation` (the App's map), the embedding; labelled images carry the tag
"labelled". The 2-D map of the embeddings (computed by core.views.embedding_map, no model) is stored
as a visualization brain run, the embeddings are indexed for the App's "sort by similarity"
(a similarity brain run, scikit-learn backend, no model), and two saved views are kept
current: "label next" (unlabelled,
by rank) and "near-duplicates" (one group per near-duplicate group).

FiftyOne reads its configuration (FIFTYONE_DATABASE_DIR, FIFTYONE_DATABASE_URI) when it is
first imported: `use_database_dir` must run before that. Nothing here imports fiftyone at
module import, so loading the Dagster definitions stays fast.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgrank_dagster.core.ranking.scores import COMPONENT_COLUMNS

LABELLED_TAG = "labelled"
MAP_BRAIN_KEY = "embedding_map"
SIMILARITY_BRAIN_KEY = "similarity"  # the App's "sort by similarity", on imgrank's embeddings
SIMILARITY_DIGEST_INFO = "imgrank_similarity_digest"
LABEL_NEXT_VIEW = "label next"
NEAR_DUPLICATES_VIEW = "near-duplicates"
FIELD_DIGESTS_INFO = "imgrank_field_digests"  # dataset.info: a digest per field, last sync
MAP_DIGEST_INFO = "imgrank_map_digest"
# Scalar fields and their FiftyOne types (declared up front: a field can be all None).
SCALAR_FIELDS = {
    "image_id": "StringField",
    "rank": "IntField",
    "score": "FloatField",  # the ranking's score (None for labelled images)
    "study_score": "FloatField",  # the study's weighted score, every image
    "uniqueness": "FloatField",
    "uniqueness_punishment": "FloatField",
    "outlier_distance": "FloatField",
    "similar_distance": "FloatField",
    "blur": "FloatField",
    "brightness": "FloatField",
    "duplicate_group": "IntField",
    "region": "StringField",
    "reason": "StringField",
    "cluster": "IntField",
    "priority_group": "IntField",
    "sequence_id": "StringField",
    "sequence_index": "IntField",
    "captured_at": "DateTimeField",
}
SCORE_FIELDS = [*COMPONENT_COLUMNS, "duplicate_group", "cluster", "labelled"]
FEATURE_FIELDS = ["image_id", "path", "sequence_id", "sequence_index", "captured_at", "lat", "lng"]
SAMPLE_COLUMNS = [
    "image_id",
    "filepath",
    *[name for name in SCALAR_FIELDS if name != "image_id"],
    "labelled",
    "lat",
    "lng",
    "width",
    "height",
    "embedding",
    "x",
    "y",
]
# Ranking columns stored elsewhere or not per sample; any other column (a strategy's own, such
# as coverage's `covers` or `held_back_reason`) becomes a field of its dtype.
_NOT_EXTRA = {*SAMPLE_COLUMNS, "image_id", "path", "study_score"}
_EXTRA_TYPES = {  # pandas' inferred type of the values -> FiftyOne field
    "boolean": "BooleanField",
    "integer": "IntField",
    "floating": "FloatField",
    "mixed-integer-float": "FloatField",
}
_CONVERT = {"BooleanField": bool, "IntField": int, "FloatField": float, "StringField": str}
EXTRA_FIELDS_INFO = "imgrank_strategy_fields"  # dataset.info: the strategy's fields written


# --- the sample table (pandas only) ----------------------------------------------------------


def sample_table(
    features: pd.DataFrame,
    scores: pd.DataFrame,
    ranking: pd.DataFrame,
    cluster_metrics: pd.DataFrame,
    image_root: Path,
    embedding_map: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per scored image (image_scores), with every value the dataset stores.

    features: feature_matrix (image_id, path, sequence_id, sequence_index, captured_at, lat,
    lng; width, height and embedding when present); scores: image_scores (the components and
    the study's score of every image); ranking: labeling_priority (rank, score, region, reason
    of unlabelled images, and any column of the strategy's own, kept as extra columns);
    embedding_map: image_id, x, y (NaN when an image has none).
    """
    _require(features, FEATURE_FIELDS, "features")
    _require(scores, ["image_id", "score", *SCORE_FIELDS], "scores")
    _require(ranking, ["image_id", "rank", "score", "region", "reason"], "ranking")
    _require(cluster_metrics, ["cluster", "priority_group"], "cluster_metrics")
    if scores["image_id"].duplicated().any():
        raise ValueError("scores' image_id values are not unique")
    extra = [column for column in ("width", "height", "embedding") if column in features]
    table = scores[["image_id", "score", *SCORE_FIELDS]].rename(columns={"score": "study_score"})
    table = table.merge(
        features[[*FEATURE_FIELDS, *extra]].drop_duplicates("image_id"), on="image_id", how="left"
    )
    if table["path"].isna().any():
        missing = table.loc[table["path"].isna(), "image_id"].iloc[0]
        raise ValueError(f"features have no row for scored image {missing!r}")
    # A strategy's own columns; all-empty ones (another strategy's) are left out.
    strategy_columns = [
        column for column in ranking if column not in _NOT_EXTRA and ranking[column].notna().any()
    ]
    ranked = ranking[["image_id", "rank", "score", "region", "reason", *strategy_columns]]
    table = table.merge(ranked, on="image_id", how="left")
    for column in strategy_columns:  # labelled images have none: keep ints and bools
        kind = ranking[column].dtype.kind
        if kind in "iub":
            table[column] = table[column].astype("Int64" if kind in "iu" else "boolean")
    groups = cluster_metrics.set_index("cluster")["priority_group"]
    table["priority_group"] = table["cluster"].map(groups)
    root = Path(image_root).resolve()
    table["filepath"] = [str(root / path) for path in table["path"]]
    if embedding_map is not None:
        _require(embedding_map, ["image_id", "x", "y"], "embedding_map")
        table = table.merge(embedding_map[["image_id", "x", "y"]], on="image_id", how="left")
    for column in ("x", "y", "width", "height", "embedding"):
        if column not in table:
            table[column] = None
    table["labelled"] = table["labelled"].astype(bool)
    return table[[*SAMPLE_COLUMNS, *strategy_columns]].reset_index(drop=True)


def _extra_fields(table: pd.DataFrame) -> dict[str, str]:
    """A strategy's own columns of a sample table and their FiftyOne field types."""
    inferred = {
        column: pd.api.types.infer_dtype(table[column], skipna=True)
        for column in table
        if column not in SAMPLE_COLUMNS
    }
    return {column: _EXTRA_TYPES.get(kind, "StringField") for column, kind in inferred.items()}


def _require(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [column for column in columns if column not in frame]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}")


def _python(value: object) -> Any:
    """A value FiftyOne stores: numpy scalars to Python, NaN/NA/NaT to None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).to_pydatetime()
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# --- the database ----------------------------------------------------------------------------


def use_database_dir(database_dir: Path) -> None:
    """Make FiftyOne keep its MongoDB in database_dir unless the environment says otherwise.

    FIFTYONE_DATABASE_DIR or FIFTYONE_DATABASE_URI set by the caller (the Makefile, the tests)
    win. Effective only before FiftyOne's first database use in this process.
    """
    if os.environ.get("FIFTYONE_DATABASE_DIR") or os.environ.get("FIFTYONE_DATABASE_URI"):
        return
    os.environ["FIFTYONE_DATABASE_DIR"] = str(database_dir)
    if "fiftyone" in sys.modules:  # imported already: its config was read before we set it
        import fiftyone as fo

        fo.config.database_dir = str(database_dir)


def _fiftyone() -> Any:
    # imgrank_dagster's __init__ (run before this module) has set the no-tracking variables.
    import fiftyone as fo

    return fo


def dataset_exists(name: str) -> bool:
    return _fiftyone().dataset_exists(name)


def sync_dataset(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """Create or update the persistent dataset `name` so that it holds exactly table's images.

    table: the output of sample_table. Returns image_id, sample_id, filepath per sample.
    """
    if not name:
        raise ValueError("dataset name is empty")
    _require(table, SAMPLE_COLUMNS, "table")
    if table["image_id"].duplicated().any():
        raise ValueError("table's image_id values are not unique")
    fo = _fiftyone()
    from fiftyone import ViewField

    dataset = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name)
    dataset.persistent = True
    extra_fields = sorted(_extra_fields(table))
    for gone in set(dataset.info.get(EXTRA_FIELDS_INFO, [])) - set(extra_fields):
        if dataset.has_sample_field(gone):  # another strategy's field: stale now
            dataset.delete_sample_field(gone)
    _declare_fields(fo, dataset, table)
    image_ids = table["image_id"].tolist()
    existing = set(dataset.distinct("image_id")) if len(dataset) else set()
    removed = sorted(existing - set(image_ids))
    if removed:
        dataset.delete_samples(dataset.select_by("image_id", removed))
    _write_samples(fo, dataset, table, existing)
    labelled = set(table.loc[table["labelled"], "image_id"])
    tagged = set(dataset.match_tags(LABELLED_TAG).values("image_id"))
    if tagged - labelled:
        dataset.select_by("image_id", sorted(tagged - labelled)).untag_samples(LABELLED_TAG)
    if labelled - tagged:
        dataset.select_by("image_id", sorted(labelled - tagged)).tag_samples(LABELLED_TAG)
    ids = dict(zip(dataset.values("image_id"), dataset.values("id"), strict=True))
    _compute_map(dataset, table, ids)
    _compute_similarity(dataset, table, ids)
    _save_views(dataset, ViewField)
    dataset.info = {**dataset.info, "imgrank_samples": len(table), EXTRA_FIELDS_INFO: extra_fields}
    dataset.save()
    return pd.DataFrame(
        {
            "image_id": image_ids,
            "sample_id": [ids[image_id] for image_id in image_ids],
            "filepath": table["filepath"].tolist(),
        }
    )


def _declare_fields(fo: Any, dataset: Any, table: pd.DataFrame) -> None:
    schema = dataset.get_field_schema()
    for field_name, type_name in {**SCALAR_FIELDS, **_extra_fields(table)}.items():
        if field_name not in schema:
            dataset.add_sample_field(field_name, getattr(fo, type_name))
    if "embedding" not in schema:
        dataset.add_sample_field("embedding", fo.VectorField)
    if "location" not in schema:
        dataset.add_sample_field(
            "location", fo.EmbeddedDocumentField, embedded_doc_type=fo.GeoLocation
        )


def _field_values(table: pd.DataFrame) -> dict[str, list[Any]]:
    """Every stored field of every row as plain values (None where a row has none): location
    as [lng, lat], metadata as (width, height); _fiftyone_value makes the documents."""
    values = {"filepath": table["filepath"].tolist()}
    for field_name, type_name in {**SCALAR_FIELDS, **_extra_fields(table)}.items():
        column = [_python(value) for value in table[field_name]]
        convert = _CONVERT.get(type_name)
        if convert is not None:  # e.g. a rank column with gaps arrives as float
            column = [None if value is None else convert(value) for value in column]
        values[field_name] = column
    values["location"] = [
        [float(lng), float(lat)] if _python(lat) is not None and _python(lng) is not None else None
        for lat, lng in zip(table["lat"], table["lng"], strict=True)
    ]
    values["metadata"] = [
        (int(width), int(height))
        if _python(width) is not None and _python(height) is not None
        else None
        for width, height in zip(table["width"], table["height"], strict=True)
    ]
    values["embedding"] = [
        None if _python(vector) is None else np.asarray(vector, dtype=np.float32)
        for vector in table["embedding"]
    ]
    return values


def _fiftyone_value(fo: Any, name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "location":
        return fo.GeoLocation(point=value)
    if name == "metadata":
        return fo.ImageMetadata(width=value[0], height=value[1])
    return value


def _stored_values(dataset: Any, name: str) -> list[Any]:
    """A field's stored values in the plain form of _field_values (no documents built)."""
    if name == "location":
        return dataset.values("location.point")
    if name == "metadata":
        widths, heights = dataset.values("metadata.width"), dataset.values("metadata.height")
        return [
            None if width is None or height is None else (width, height)
            for width, height in zip(widths, heights, strict=True)
        ]
    return dataset.values(name)


def _digest(image_ids: list[str], column: list[Any]) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for image_id, value in zip(image_ids, column, strict=True):
        digest.update(image_id.encode())
        digest.update(value.tobytes() if isinstance(value, np.ndarray) else repr(value).encode())
    return digest.hexdigest()


def _write_samples(fo: Any, dataset: Any, table: pd.DataFrame, existing: set[str]) -> None:
    """New images are added; existing samples are updated in place (matched by image_id, so
    ids and the tags people added survive), only where a value changed.

    FiftyOne writes one database update per sample and field, and reading a field back costs
    about as much: a column whose digest equals the one recorded by the previous sync is
    skipped without reading it (after new labels: everything but the rank and a few scores).
    """
    values = _field_values(table)
    image_ids = table["image_id"].tolist()
    digests = {name: _digest(image_ids, column) for name, column in values.items()}
    previous = dataset.info.get(FIELD_DIGESTS_INFO, {})
    is_new = ~table["image_id"].isin(existing).to_numpy()
    if is_new.any():
        dataset.add_samples(
            [
                fo.Sample(
                    **{
                        name: _fiftyone_value(fo, name, column[i])
                        for name, column in values.items()
                        if column[i] is not None
                    }
                )
                for i in np.flatnonzero(is_new)
            ],
            progress=False,
        )
    old_rows = np.flatnonzero(~is_new)
    stored_ids = dataset.values("image_id") if old_rows.size else []
    for name, column in values.items():
        if not old_rows.size or previous.get(name) == digests[name]:
            continue
        stored = dict(zip(stored_ids, _stored_values(dataset, name), strict=True))
        changed = {
            image_ids[i]: _fiftyone_value(fo, name, column[i])
            for i in old_rows
            if not _same(stored.get(image_ids[i]), column[i])
        }
        if changed:
            dataset.set_values(name, changed, key_field="image_id")
    dataset.info = {**dataset.info, FIELD_DIGESTS_INFO: digests}


def _same(stored: Any, new: Any) -> bool:
    """Whether a stored value (as _stored_values reads it) equals the new plain value."""
    if stored is None or new is None:
        return stored is None and new is None
    if isinstance(new, np.ndarray):
        return isinstance(stored, np.ndarray) and np.array_equal(stored, new)
    if isinstance(new, list | tuple):
        return list(stored) == list(new)
    if isinstance(new, datetime):  # MongoDB keeps milliseconds
        return abs((stored - new).total_seconds()) < 0.001
    return stored == new


def _compute_map(dataset: Any, table: pd.DataFrame, sample_ids: dict[str, str]) -> None:
    """The embedding map as a visualization brain run (kept when no point or sample changed)."""
    import fiftyone.brain as fob

    placed = table.dropna(subset=["x", "y"])
    digest = _digest(
        placed["image_id"].tolist(),
        [
            (sample_ids[image_id], x, y)
            for image_id, x, y in zip(placed["image_id"], placed["x"], placed["y"], strict=True)
        ],
    )
    if not _replace_brain_run(dataset, MAP_BRAIN_KEY, MAP_DIGEST_INFO, digest) or placed.empty:
        return
    view = dataset.select_by("image_id", placed["image_id"].tolist())
    points = {
        sample_ids[image_id]: np.array([x, y])
        for image_id, x, y in zip(placed["image_id"], placed["x"], placed["y"], strict=True)
    }
    # Precomputed points: no model, no download; the App's Embeddings panel shows them.
    fob.compute_visualization(view, points=points, brain_key=MAP_BRAIN_KEY, progress=False)


def _replace_brain_run(dataset: Any, brain_key: str, digest_info: str, digest: str) -> bool:
    """Whether the brain run must be computed again: False when it exists for this digest;
    otherwise the old run is deleted and the new digest recorded (True)."""
    exists = brain_key in dataset.list_brain_runs()
    if exists and dataset.info.get(digest_info) == digest:
        return False
    if exists:
        dataset.delete_brain_run(brain_key)
    dataset.info = {**dataset.info, digest_info: digest}
    return True


def _compute_similarity(dataset: Any, table: pd.DataFrame, sample_ids: dict[str, str]) -> None:
    """A similarity index over the stored embeddings (scikit-learn backend, cosine): the App's
    "sort by similarity" on selected images, offline, no model. Rebuilt when a sample or an
    embedding changed, kept otherwise."""
    import fiftyone.brain as fob

    embedded = table[table["embedding"].notna()]
    digest = _digest(
        embedded["image_id"].tolist(),
        [
            (sample_ids[image_id], np.asarray(vector, dtype=np.float32).tobytes())
            for image_id, vector in zip(embedded["image_id"], embedded["embedding"], strict=True)
        ],
    )
    if not _replace_brain_run(dataset, SIMILARITY_BRAIN_KEY, SIMILARITY_DIGEST_INFO, digest):
        return
    if embedded.empty:
        return
    # Precomputed embeddings from the `embedding` field: no model is loaded or downloaded.
    fob.compute_similarity(
        dataset.select_by("image_id", embedded["image_id"].tolist()),
        embeddings="embedding",
        brain_key=SIMILARITY_BRAIN_KEY,
        backend="sklearn",
        metric="cosine",
        progress=False,
    )


def _save_views(dataset: Any, field: Any) -> None:
    label_next = dataset.match_tags(LABELLED_TAG, bool=False).exists("rank").sort_by("rank")
    dataset.save_view(
        LABEL_NEXT_VIEW,
        label_next,
        description="Unlabelled images in ranking order: label these first.",
        overwrite=True,
    )
    near_duplicates = (
        dataset.match(field("duplicate_group") >= 0)
        .sort_by("image_id")
        .group_by("duplicate_group", order_by="image_id")
    )
    dataset.save_view(
        NEAR_DUPLICATES_VIEW,
        near_duplicates,
        description="One group per near-duplicate group (the first image keeps its score).",
        overwrite=True,
    )


# --- the App ---------------------------------------------------------------------------------


def port_in_use(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((address, port)) == 0


def launch_app(name: str, view_name: str | None, address: str, port: int) -> Any:
    """Serve the App on address:port showing the dataset (or its saved view); no browser."""
    fo = _fiftyone()
    dataset = fo.load_dataset(name)
    view = dataset.load_saved_view(view_name) if view_name else dataset.view()
    return fo.launch_app(view, address=address, port=port, remote=True)


def close_app(session: Any, timeout: float = 15.0, log: Callable[[str], None] = print) -> None:
    """Close the session, stop the App server and the database service this process started,
    and wait until every child process has exited (terminating stragglers)."""
    import psutil
    from fiftyone.core.odm import database as fo_database
    from fiftyone.core.session import session as fo_session

    session.close()
    # Session.close leaves the server running until this process exits; stop it now.
    for service in list(fo_session._server_services.values()):
        if service.child is not None:
            service.child.stdin.close()
    fo_session._server_services.clear()
    fo_database._disconnect()
    if fo_database._db_service is not None:
        fo_database._db_service.stop()  # mongod stops once no other FiftyOne process uses it
        fo_database._db_service = None
    children = psutil.Process().children(recursive=True)
    _, alive = psutil.wait_procs(children, timeout=timeout)
    # A database service still alive serves another FiftyOne process that registered with it;
    # it stops mongod when that one exits. Anything else left is terminated.
    database: set[int] = set()
    for process in alive:
        try:
            if "--51-service db" in " ".join(process.cmdline()):
                database |= {process.pid, *(p.pid for p in process.children(recursive=True))}
                log(f"FiftyOne's database (pid {process.pid}) still serves another process")
        except psutil.Error:
            continue
    terminated = []
    for process in alive:
        if process.pid in database:
            continue
        try:
            log(f"terminating leftover process {process.pid}: {process.name()}")
            process.terminate()
            terminated.append(process)
        except psutil.Error:
            continue
    _, still_alive = psutil.wait_procs(terminated, timeout=5)
    for process in still_alive:
        process.kill()


def wait_until_serving(address: str, port: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_in_use(address, port):
            return True
        time.sleep(0.25)
    return False
