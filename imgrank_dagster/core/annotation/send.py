"""Sending a collection's next batch to its annotation tool, and the record of what was sent.

`send_to_label_studio` creates the collection's project on first use (its labelling config
from the collection's classes), makes sure Label Studio may serve the collection's images
(a local-files storage over the image folder, never synced: images are not copied), lists
the project's tasks, and imports tasks for the picks that are not in the project yet.
`send_to_cvat` writes the picks as a CVAT task file instead (core/annotation/cvat.py).

Both return the record of every image ever sent (one row each, with the batch it went in and
its status now), which the `annotation_batch` asset stores: an image sent once is never sent
again, even when its task was deleted in the tool.
"""

from __future__ import annotations

from collections.abc import Collection as Container
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from imgrank_dagster.core.annotation.batch import (
    RANKING_COLUMNS,
    choose_batch,
    label_config,
    label_studio_task,
    local_files_url,
)
from imgrank_dagster.core.annotation.client import (
    DOCUMENT_ROOT_ENV,
    LabelStudioClient,
    LabelStudioSettings,
)
from imgrank_dagster.core.annotation.cvat import CvatImage, write_cvat_batch
from imgrank_dagster.core.config import Collection
from imgrank_dagster.core.config.collections import AnnotationSettings

RECORD_COLUMNS = [
    "image_id",
    "path",
    "rank",
    "reason",
    "cluster",
    "picked_as",
    "batch",
    "sent_at",
    "tool",
    "task_id",
    "status",
]
# Statuses of a sent image: in labeled_images; in the tool with a submitted annotation, only
# skipped, or no answer yet; its task deleted in the tool; sent as a file (CVAT).
LABELLED, ANNOTATED, SKIPPED, WAITING, DELETED, SENT = (
    "labelled",
    "annotated",
    "skipped",
    "waiting",
    "deleted",
    "sent",
)
STORAGE_TITLE = "imgrank images (served in place, never synced)"
CVAT_DIR = "cvat"


class SendError(RuntimeError):
    """A batch cannot be sent; the message says why and what to change."""


@dataclass(frozen=True)
class SendResult:
    record: pd.DataFrame  # RECORD_COLUMNS: every image ever sent
    sent: pd.DataFrame  # RECORD_COLUMNS: the images sent now
    target: str  # the project's URL, or the CVAT batch folder
    batch: int | None  # this send's batch number (None: nothing new to send)
    project_id: int | None = None
    created_project: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def status_counts(self) -> dict[str, int]:
        counts = self.record["status"].value_counts()
        return {str(status): int(count) for status, count in counts.items()}


def empty_record() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": pd.Series(dtype="str"),
            "path": pd.Series(dtype="str"),
            "rank": pd.Series(dtype="int64"),
            "reason": pd.Series(dtype="str"),
            "cluster": pd.Series(dtype="int64"),
            "picked_as": pd.Series(dtype="str"),
            "batch": pd.Series(dtype="int64"),
            "sent_at": pd.Series(dtype="datetime64[us, UTC]"),
            "tool": pd.Series(dtype="str"),
            "task_id": pd.Series(dtype="Int64"),
            "status": pd.Series(dtype="str"),
        },
        columns=RECORD_COLUMNS,
    )


def _previous(record: pd.DataFrame | None) -> pd.DataFrame:
    if record is None or record.empty:
        return empty_record()
    missing = set(RECORD_COLUMNS) - set(record.columns)
    if missing:
        raise SendError(f"the stored annotation_batch lacks columns {sorted(missing)}")
    return record[RECORD_COLUMNS].reset_index(drop=True)


def _new_rows(
    picks: pd.DataFrame, batch: int, now: datetime, tool: str, task_ids: list[int] | None
) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "image_id": picks["image_id"].astype("str"),
            "path": picks["path"].astype("str"),
            "rank": picks["rank"].astype("int64"),
            "reason": picks["reason"].astype("str"),
            "cluster": picks["cluster"].astype("int64"),
            "picked_as": picks["picked_as"].astype("str"),
            "batch": pd.Series(batch, index=picks.index, dtype="int64"),
            "sent_at": pd.Series(pd.Timestamp(now), index=picks.index).astype(
                "datetime64[us, UTC]"
            ),
            "tool": pd.Series(tool, index=picks.index, dtype="str"),
            "task_id": pd.array(
                task_ids if task_ids is not None else [None] * len(picks), dtype="Int64"
            ),
            "status": pd.Series(
                WAITING if task_ids is not None else SENT, index=picks.index, dtype="str"
            ),
        },
        columns=RECORD_COLUMNS,
    )
    return rows.reset_index(drop=True)


def _combine(previous: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    if new.empty:
        return previous.copy()
    if previous.empty:
        return new.copy()
    return pd.concat([previous, new], ignore_index=True)


def _ranking(ranking: pd.DataFrame) -> pd.DataFrame:
    missing = set(RANKING_COLUMNS) - set(ranking.columns)
    if missing:
        raise SendError(f"the ranking lacks columns {sorted(missing)}")
    return ranking[RANKING_COLUMNS]


# --------------------------------------------------------------------------- Label Studio


def task_image_id(task: dict[str, Any]) -> str | None:
    data = task.get("data")
    value = data.get("image_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def task_status(task: dict[str, Any]) -> str:
    if (task.get("total_annotations") or 0) > 0:
        return ANNOTATED
    if (task.get("cancelled_annotations") or 0) > 0:
        return SKIPPED
    return WAITING


def ensure_project(
    client: LabelStudioClient, title: str, config: str, description: str
) -> tuple[dict[str, Any], bool]:
    """The project titled title, created with config on first use; (project, created).

    An existing project whose labelling config differs gets the collection's config (Label
    Studio refuses a config that existing annotations do not fit, with its reason).
    """
    found = client.projects_titled(title)
    if len(found) > 1:
        ids = ", ".join(str(project.get("id")) for project in found)
        raise SendError(
            f"several Label Studio projects are titled {title!r} (ids {ids}): rename all but "
            "one, or give the collection another title with annotation.project"
        )
    if not found:
        return client.create_project(title, config, description), True
    project = found[0]
    if str(project.get("label_config", "")).strip() != config.strip():
        project = client.update_project(int(project["id"]), label_config=config)
    return project, False


def ensure_local_storage(
    client: LabelStudioClient, project_id: int, image_root: Path, document_root: Path
) -> None:
    """A local-files storage over the collection's images, so Label Studio serves them in
    place (it serves a file only below a storage of a project the user may see)."""
    image_root, document_root = image_root.resolve(), document_root.resolve()
    if image_root == document_root or document_root not in image_root.parents:
        raise SendError(
            f"the collection's images ({image_root}) must be in a folder below Label Studio's "
            f"document root ({document_root}): Label Studio serves local files only from "
            "sub-folders of LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
        )
    for storage in client.local_storages(project_id):
        path = Path(str(storage.get("path", "")))
        if path == image_root or path in image_root.parents:
            return
    client.create_local_storage(project_id, image_root, STORAGE_TITLE)


def send_to_label_studio(
    client: LabelStudioClient,
    settings: LabelStudioSettings,
    collection: Collection,
    ranking: pd.DataFrame,
    labelled: Container[str],
    clusters_without_labels: Iterable[int],
    previous: pd.DataFrame | None,
    now: datetime,
    batch_size: int | None = None,
    per_cluster: int | None = None,
) -> SendResult:
    annotation = _annotation(collection)
    if settings.document_root is None:
        raise SendError(
            f"{DOCUMENT_ROOT_ENV} is not set: set it to the folder Label Studio serves local "
            "files from (its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)"
        )
    record = _previous(previous)
    config = label_config(annotation.classes, annotation.task)
    description = (
        f"Images imgrank ranked for labelling in collection {collection.name!r}. Each task's "
        "data holds imgrank's rank, reason and cluster."
    )
    project, created = ensure_project(client, collection.project_title, config, description)
    project_id = int(project["id"])
    ensure_local_storage(client, project_id, collection.image_root, settings.document_root)
    notes = []
    batch = _next_batch(record)
    if created and len(record):
        # The project the record describes is gone (no project has its title any more): a
        # new project starts a new record, and its images may be sent again.
        notes.append(
            f"a new project was created: the record of {len(record)} image(s) sent to an "
            "earlier project with this title was started afresh (their labels stay in its "
            "export file)"
        )
        record = empty_record()

    tasks = list(client.tasks(project_id))
    in_project: dict[str, dict[str, Any]] = {}
    foreign = 0
    for task in tasks:
        image_id = task_image_id(task)
        if image_id is None:
            foreign += 1
        else:
            in_project.setdefault(image_id, task)
    deleted = set(record["image_id"]) - set(in_project)
    answered = deleted | {i for i, task in in_project.items() if task_status(task) == SKIPPED}
    picks = choose_batch(
        _ranking(ranking),
        in_project=set(in_project) | set(record["image_id"]),
        answered=answered,
        batch_size=annotation.batch_size if batch_size is None else batch_size,
        per_cluster=annotation.per_cluster if per_cluster is None else per_cluster,
        clusters_without_labels=clusters_without_labels,
    )
    new = empty_record()
    if len(picks):
        payloads = [
            label_studio_task(
                row, local_files_url(collection.image_root / row["path"], settings.document_root)
            )
            for row in picks.to_dict("records")
        ]
        task_ids = client.import_tasks(project_id, payloads)
        new = _new_rows(picks, batch, now, annotation.tool, task_ids)
        for image_id, task_id in zip(new["image_id"], task_ids, strict=True):
            in_project[image_id] = {"id": task_id}
    record = _with_status(
        _adopt_unrecorded(_combine(record, new), in_project, ranking, annotation.tool, now),
        in_project,
        labelled,
    )
    if foreign:
        notes.append(f"{foreign} task(s) of the project were not sent by imgrank (no image_id)")
    return SendResult(
        record=record.reset_index(drop=True),
        sent=new,
        target=f"{client.url}/projects/{project_id}/data",
        batch=batch if len(new) else None,
        project_id=project_id,
        created_project=created,
        notes=notes,
    )


def _adopt_unrecorded(
    record: pd.DataFrame,
    in_project: dict[str, dict[str, Any]],
    ranking: pd.DataFrame,
    tool: str,
    now: datetime,
) -> pd.DataFrame:
    """Tasks of the project that imgrank did not record (sent before the record existed, or
    by hand with an image_id) join the record, so that they are never sent again either."""
    unrecorded = sorted(set(in_project) - set(record["image_id"]))
    if not unrecorded:
        return record
    paths = _ranking(ranking).set_index("image_id")["path"]
    rows = []
    for image_id in unrecorded:
        task = in_project[image_id]
        data = task.get("data") or {}
        rows.append(
            {
                "image_id": image_id,
                "path": str(paths.get(image_id, "")),
                "rank": int(data.get("rank") or 0),
                "reason": str(data.get("reason") or ""),
                "cluster": int(data.get("cluster") or 0),
                "picked_as": str(data.get("picked_as") or "in the project already"),
                "batch": 0,
                "sent_at": pd.Timestamp(task.get("created_at") or now),
                "tool": tool,
                "task_id": int(task["id"]),
                "status": WAITING,
            }
        )
    extra = pd.DataFrame(rows, columns=RECORD_COLUMNS).astype(empty_record().dtypes.to_dict())
    return _combine(record, extra)


def _with_status(
    record: pd.DataFrame, in_project: dict[str, dict[str, Any]], labelled: Container[str]
) -> pd.DataFrame:
    """Each sent image's task id and status as the project and the labelled set are now."""
    record = record.copy()
    record["task_id"] = pd.array(
        [
            int(in_project[image_id]["id"]) if image_id in in_project else task_id
            for image_id, task_id in zip(
                record["image_id"], record["task_id"].astype("object"), strict=True
            )
        ],
        dtype="Int64",
    )
    statuses = [
        LABELLED
        if image_id in labelled
        else (task_status(in_project[image_id]) if image_id in in_project else DELETED)
        for image_id in record["image_id"]
    ]
    record["status"] = pd.Series(statuses, index=record.index, dtype="str")
    return record


# --------------------------------------------------------------------------- CVAT


def send_to_cvat(
    exports_dir: Path,
    collection: Collection,
    ranking: pd.DataFrame,
    image_sizes: pd.DataFrame,
    labelled: Container[str],
    clusters_without_labels: Iterable[int],
    previous: pd.DataFrame | None,
    now: datetime,
    batch_size: int | None = None,
    per_cluster: int | None = None,
) -> SendResult:
    """The picks as a CVAT task file in <exports>/cvat/batch-NNN/ (see core/annotation/cvat)."""
    annotation = _annotation(collection)
    record = _previous(previous)
    picks = choose_batch(
        _ranking(ranking),
        in_project=set(record["image_id"]),
        batch_size=annotation.batch_size if batch_size is None else batch_size,
        per_cluster=annotation.per_cluster if per_cluster is None else per_cluster,
        clusters_without_labels=clusters_without_labels,
    )
    batch = _next_batch(record)
    folder = exports_dir / CVAT_DIR / f"batch-{batch:03d}"
    new = empty_record()
    if len(picks):
        sizes = image_sizes.set_index("image_id")
        images = [
            CvatImage(
                name=str(row.path),
                path=(collection.image_root / row.path).resolve(),
                width=int(sizes.at[row.image_id, "width"]),
                height=int(sizes.at[row.image_id, "height"]),
            )
            for row in picks.itertuples(index=False)
        ]
        write_cvat_batch(
            folder,
            f"{collection.project_title} batch {batch}",
            annotation.classes,
            annotation.task,
            images,
        )
        new = _new_rows(picks, batch, now, annotation.tool, None)
    record = _combine(record, new)
    record["status"] = [
        LABELLED if image_id in labelled else SENT for image_id in record["image_id"]
    ]
    record["status"] = record["status"].astype("str")
    return SendResult(
        record=record.reset_index(drop=True),
        sent=new,
        target=str(folder if len(new) else exports_dir / CVAT_DIR),
        batch=batch if len(new) else None,
    )


def _next_batch(record: pd.DataFrame) -> int:
    """The number of the next batch: one above every batch in the record, so numbers never
    repeat."""
    return int(record["batch"].max()) + 1 if len(record) else 1


def _annotation(collection: Collection) -> AnnotationSettings:
    if collection.annotation is None:
        raise SendError(
            f"collection {collection.name!r} declares no annotation: add an `annotation:` "
            "block (tool, classes) to it in collections.yaml"
        )
    return collection.annotation
