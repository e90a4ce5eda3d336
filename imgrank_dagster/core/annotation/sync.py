"""Labels come back: a Label Studio project mirrored into the collection's labels folder.

`sync_project` fetches the tasks updated since the last sync (Label Studio updates a task
whenever one of its annotations is created, changed or deleted), in Label Studio's own JSON
export format, and merges them into one export file per project,
`<labels folder>/label-studio/<title>-project-<id>.json`, written atomically. The label loop
reads that file like any other Label Studio export:

- a submitted annotation labels its image, with the classes it chose;
- a skipped (cancelled) annotation is kept in the file but labels nothing;
- an updated annotation replaces the earlier one (the task is fetched again whole);
- a task whose annotations were all deleted leaves the file (its image is unlabelled again);
- a task deleted in Label Studio is reported and stays in the file with its annotations:
  labels are never dropped silently (remove it from the file to drop them).

Nothing fetched is lost: the file is replaced only by a complete new version, and the state
(`SyncState`, kept by the caller) advances only after it was written. A file that changed
behind the state's back (edited, deleted) makes the next sync a full one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from imgrank_dagster.core.annotation.client import LabelStudioClient, parse_time
from imgrank_dagster.core.files import write_atomically

EXPORT_DIR = "label-studio"  # under the collection's labels folder
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ExportFileError(ValueError):
    """The export file on disk cannot be read; the message names it."""


@dataclass(frozen=True)
class SyncState:
    """What the last sync saw (JSON-serialisable: a sensor keeps it in its cursor)."""

    project_id: int
    since: str | None = None  # the newest task update fetched (the server's clock)
    since_ids: list[int] = field(default_factory=list)  # tasks fetched at exactly `since`
    task_count: int | None = None  # the project's task count then
    export_sha256: str | None = None  # the export file as written
    deleted: list[int] = field(default_factory=list)  # deleted tasks already reported

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncState:
        return cls(**data)


@dataclass(frozen=True)
class SyncResult:
    state: SyncState
    path: Path
    written: bool
    changed: list[int]  # tasks whose annotations were written (new or changed)
    skipped: list[int]  # of those, tasks answered only by skipping
    removed: list[int]  # tasks whose annotations were all deleted: out of the file
    deleted: list[int]  # tasks newly found deleted in Label Studio (kept in the file)
    full: bool  # a full sync (first one, another project, or the file changed)
    deleted_images: dict[int, str] = field(default_factory=dict)  # deleted task -> its image

    def summary(self) -> str:
        parts = []
        if self.changed:
            parts.append(
                f"{len(self.changed)} task(s) with new or changed annotations"
                + (f" ({len(self.skipped)} skipped)" if self.skipped else "")
            )
        if self.removed:
            parts.append(f"{len(self.removed)} task(s) whose annotations were deleted")
        if self.deleted:
            named = ", ".join(
                f"task {task} ({self.deleted_images.get(task, '?')})" for task in self.deleted[:5]
            )
            parts.append(
                f"{len(self.deleted)} task(s) deleted in Label Studio, their labels kept in "
                f"the file (remove them there to drop them): {named}"
            )
        if not parts:
            return f"no new annotations ({self.path.name})"
        verb = "written to" if self.written else "seen for"
        return "; ".join(parts) + f" {verb} {self.path}"


def export_path(labels_dir: Path, title: str, project_id: int) -> Path:
    name = _UNSAFE.sub("_", title).strip("._") or "project"
    return Path(labels_dir) / EXPORT_DIR / f"{name}-project-{project_id}.json"


def read_export(path: Path) -> tuple[dict[int, dict[str, Any]], str | None]:
    """The export file's tasks by id and the file's sha256 (({}, None) when there is none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}, None
    except OSError as error:
        raise ExportFileError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        tasks = json.loads(data) if data.strip() else []
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportFileError(f"{path}: not a Label Studio JSON export: {error}") from None
    if not isinstance(tasks, list) or not all(
        isinstance(task, dict) and isinstance(task.get("id"), int) for task in tasks
    ):
        raise ExportFileError(f"{path}: not a Label Studio JSON export (a list of tasks with ids)")
    return {task["id"]: task for task in tasks}, hashlib.sha256(data).hexdigest()


def render_export(tasks: dict[int, dict[str, Any]]) -> bytes:
    ordered = [tasks[task_id] for task_id in sorted(tasks)]
    return (json.dumps(ordered, indent=1, ensure_ascii=False) + "\n").encode()


def _has_annotations(task: dict[str, Any]) -> bool:
    return bool(task.get("annotations"))


def _only_skipped(task: dict[str, Any]) -> bool:
    annotations = task.get("annotations") or []
    return bool(annotations) and all(a.get("was_cancelled") for a in annotations)


def _comparable(task: dict[str, Any]) -> str:
    return json.dumps(task, sort_keys=True, ensure_ascii=False)


def sync_project(
    client: LabelStudioClient,
    project_id: int,
    labels_dir: Path,
    title: str,
    state: SyncState | None = None,
) -> SyncResult:
    """Fetch what changed in the project since state and write it into the export file."""
    path = export_path(labels_dir, title, project_id)
    existing, file_hash = read_export(path)
    full = state is None or state.project_id != project_id or state.export_sha256 != file_hash
    if full:
        state = SyncState(project_id=project_id)
    assert state is not None
    since = parse_time(state.since)
    fetched_at_since = set(state.since_ids)
    # The count first: tasks created after it only add to the listing below.
    task_count = client.project(project_id).get("task_number")

    to_fetch: list[int] = []
    newest: datetime | None = since
    newest_ids: set[int] = set(fetched_at_since)
    listed_ids: set[int] = set()
    for task in client.tasks(project_id, newest_first=True):
        task_id, updated = task.get("id"), parse_time(task.get("updated_at"))
        if not isinstance(task_id, int) or updated is None:
            continue
        if since is not None and updated < since:
            break  # newest first: every task from here on was fetched before
        if since is not None and updated == since and task_id in fetched_at_since:
            continue
        listed_ids.add(task_id)
        if newest is None or updated > newest:
            newest, newest_ids = updated, {task_id}
        elif updated == newest:
            newest_ids.add(task_id)
        annotated = (task.get("total_annotations") or 0) + (task.get("cancelled_annotations") or 0)
        if annotated or task_id in existing:
            to_fetch.append(task_id)

    tasks = dict(existing)
    changed, skipped, removed = [], [], []
    exported = {task["id"]: task for task in client.export_tasks(project_id, to_fetch)}
    for task_id in to_fetch:
        task = exported.get(task_id)
        if task is None:
            continue  # deleted between the listing and the export: the check below sees it
        if _has_annotations(task):
            if task_id not in tasks or _comparable(tasks[task_id]) != _comparable(task):
                tasks[task_id] = task
                changed.append(task_id)
                if _only_skipped(task):
                    skipped.append(task_id)
        elif task_id in tasks:
            del tasks[task_id]
            removed.append(task_id)

    # Deleted tasks: only when the count moved (or on a full sync) is every id listed.
    deleted: list[int] = []
    if full or task_count != state.task_count:
        present = listed_ids if full else {t["id"] for t in client.tasks(project_id)}
        gone = sorted(task_id for task_id in tasks if task_id not in present)
        deleted = [task_id for task_id in gone if task_id not in state.deleted]
        still_reported = sorted(set(state.deleted) & set(gone)) if not full else []
        reported = sorted({*still_reported, *deleted})
    else:
        reported = [task_id for task_id in state.deleted if task_id in tasks]

    written = False
    new_hash = file_hash
    if changed or removed:
        content = render_export(tasks)
        write_atomically(path, lambda temporary: temporary.write_bytes(content))
        new_hash = hashlib.sha256(content).hexdigest()
        written = True
    new_state = SyncState(
        project_id=project_id,
        since=newest.isoformat() if newest is not None else None,
        since_ids=sorted(newest_ids),
        task_count=task_count if isinstance(task_count, int) else None,
        export_sha256=new_hash,
        deleted=reported,
    )
    return SyncResult(
        state=new_state,
        path=path,
        written=written,
        changed=changed,
        skipped=skipped,
        removed=removed,
        deleted=deleted,
        full=full,
        deleted_images={task_id: _image_of(tasks[task_id]) for task_id in deleted},
    )


def _image_of(task: dict[str, Any]) -> str:
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    return str(data.get("image_id") or data.get("image") or "?")
