"""Labels come back by themselves: Label Studio projects mirrored into the labels folders."""

import json

import dagster as dg

from imgrank_dagster.core.config import CollectionConfigError
from imgrank_dagster.lib.resources import ImgrankConfig


@dg.sensor(
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls the Label Studio project of every collection that sends its batches "
    "there for annotations submitted, changed or deleted since its cursor, and writes them "
    "into the collection's labels folder (Label Studio's JSON export format, atomically); "
    "labels_sensor turns that into a re-rank. Label Studio down: it skips and retries.",
)
def label_studio_sensor(
    context: dg.SensorEvaluationContext, imgrank: ImgrankConfig
) -> dg.SkipReason:
    try:
        collections = imgrank.collections()
    except CollectionConfigError as error:
        return dg.SkipReason(str(error))
    wanted = {
        name: collection
        for name, collection in sorted(collections.items())
        if collection.annotation is not None and collection.annotation.tool == "label-studio"
    }
    if not wanted:
        return dg.SkipReason("no collection sends its batches to Label Studio")
    from imgrank_dagster.core.annotation.client import (
        LabelStudioClient,
        LabelStudioConfigError,
        LabelStudioError,
        LabelStudioSettings,
    )
    from imgrank_dagster.core.annotation.sync import ExportFileError, SyncState, sync_project

    try:
        settings = LabelStudioSettings.from_env()
    except LabelStudioConfigError as error:
        return dg.SkipReason(f"{', '.join(wanted)}: {error}")
    states = json.loads(context.cursor) if context.cursor else {}
    messages = []
    # Short timeouts and one retry: a sensor evaluation must finish well within a minute; the
    # next tick is the real retry.
    with LabelStudioClient.from_settings(settings, timeout=(3.0, 30.0), attempts=2) as client:
        for name, collection in wanted.items():
            title = collection.project_title
            state = SyncState.from_json(states[name]) if name in states else None
            try:
                project_id = state.project_id if state else None
                if project_id is not None:
                    try:
                        client.project(project_id)
                    except LabelStudioError as error:
                        if error.status != 404:
                            raise
                        project_id = None  # deleted: another project may have the title now
                if project_id is None:
                    found = client.projects_titled(title)
                    if len(found) != 1:
                        problem = "no" if not found else f"{len(found)}"
                        messages.append(
                            f"{name}: {problem} Label Studio project(s) titled {title!r} "
                            f"(`imgrank send {name}` creates it)"
                        )
                        continue
                    project_id = int(found[0]["id"])
                assert collection.labels is not None  # the collections file checks it
                result = sync_project(client, project_id, collection.labels, title, state)
            except (LabelStudioError, ExportFileError, OSError) as error:
                message = f"{name}: {error}; retrying at the next tick (nothing is lost)"
                context.log.warning(message)
                messages.append(message)
                continue
            states[name] = result.state.to_json()
            summary = f"{name}: {result.summary()}"
            if result.deleted:
                context.log.warning(summary)
            elif result.written:
                context.log.info(summary)
            messages.append(summary)
    context.update_cursor(json.dumps(states, sort_keys=True))
    return dg.SkipReason("; ".join(messages))
