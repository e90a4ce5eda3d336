"""New labels re-rank a collection: only the label-dependent assets run again."""

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from imgrank_dagster.core.config import Collection, CollectionConfigError
from imgrank_dagster.defs.labels.assets import LABEL_FILES_READABLE, LABEL_MATCHING_COLUMNS
from imgrank_dagster.defs.labels.jobs import apply_labels_job
from imgrank_dagster.defs.labels.shrink import Shrink, ranked_labelled_count
from imgrank_dagster.lib.io_manager import DATA_VERSION_METADATA, PartitionedParquetIOManager
from imgrank_dagster.lib.metadata import SKIP_MESSAGE_CHARS, bounded
from imgrank_dagster.lib.names import (
    CLUSTER_ASSIGNMENTS,
    COLLECTION_IMAGES,
    IMAGE_BASE_SCORES,
    LABELED_IMAGES,
    LABELLED_SET_TAG,
    PIPELINE_LANE,
    TRIGGER_TAG,
)
from imgrank_dagster.lib.partitions import collection_partitions
from imgrank_dagster.lib.resources import ImgrankConfig
from imgrank_dagster.lib.runs import collections_with_active_runs

if TYPE_CHECKING:
    from imgrank_dagster.core.labels import LabelMatch

# How long one evaluation watches the label files for a change (seconds; 0: look once). The
# daemon's sensor loop passes every 5 s: the watch must end before the next pass, with room
# for a loaded machine, or that pass skips this sensor and the next change waits 5 s more.
LABELS_WATCH_ENV = "IMGRANK_LABELS_WATCH_SECONDS"
DEFAULT_WATCH_SECONDS = 3.5
MAX_WATCH_SECONDS = 30.0  # well under the daemon's 60 s timeout of a sensor evaluation
WATCH_POLL_SECONDS = 0.1

# What must exist before a label change can be applied incrementally.
LABEL_INDEPENDENT_INPUTS = [COLLECTION_IMAGES, CLUSTER_ASSIGNMENTS, IMAGE_BASE_SCORES]


@dataclass(frozen=True)
class LabelState:
    fingerprint: str  # file stats: cheap, checked every evaluation
    content: str  # file contents: hashed only when the stats changed
    held: str = ""  # content of a change held because it shrank the labelled set (shrink.py)
    held_message: str = ""


def _read_cursor(cursor: str | None) -> dict[str, LabelState]:
    if not cursor:
        return {}
    return {name: LabelState(**state) for name, state in json.loads(cursor).items()}


def _ranked_labels_metadata(instance: dg.DagsterInstance, collection: str) -> Mapping[str, Any]:
    """The metadata of the labeled_images the current ranking was computed from (empty when
    there is none): its data version is the labelled set, and it holds the set's size."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(LABELED_IMAGES, asset_partitions=[collection]), limit=1
    ).records
    return records[0].asset_materialization.metadata if records else {}


def _labelled_set(metadata: Mapping[str, Any]) -> str | None:
    version = metadata.get(DATA_VERSION_METADATA)
    return str(version.value) if version is not None else None


def _label_match(collection: Collection, io_manager: PartitionedParquetIOManager) -> "LabelMatch":
    """The labels matched as labeled_images would match them now, from the same catalog
    (with their classes: a class changing alone is a change of labeled_images' data version)."""
    import pandas as pd

    from imgrank_dagster.core.labels import load_labels

    frames = io_manager.read_partitions(
        COLLECTION_IMAGES.to_user_string(), [collection.name], columns=LABEL_MATCHING_COLUMNS
    )
    images = frames.get(collection.name, pd.DataFrame(columns=LABEL_MATCHING_COLUMNS))
    return load_labels(collection.labels, images)


def _is_ranked(instance: dg.DagsterInstance, collection: str) -> bool:
    return all(
        collection in instance.get_materialized_partitions(key) for key in LABEL_INDEPENDENT_INPUTS
    )


def _problem_check_request(collection: str, problem: str) -> dg.RunRequest:
    """A run of label_files_readable alone: the broken file shows on labeled_images."""
    digest = hashlib.sha256(problem.encode()).hexdigest()[:16]
    return dg.RunRequest(
        partition_key=collection,
        asset_selection=[],
        asset_check_keys=[dg.AssetCheckKey(LABELED_IMAGES, LABEL_FILES_READABLE)],
        run_key=f"{collection}:label-problem:{digest}",
        tags={TRIGGER_TAG: "labels_sensor"},
    )


def watch_seconds() -> float:
    """How long one evaluation keeps watching the label files' stats (LABELS_WATCH_ENV)."""
    value = os.environ.get(LABELS_WATCH_ENV, "").strip()
    if not value:
        return DEFAULT_WATCH_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{LABELS_WATCH_ENV}={value!r} is not a number of seconds") from None
    if not 0 <= seconds <= MAX_WATCH_SECONDS:
        raise ValueError(f"{LABELS_WATCH_ENV}={value!r} is not between 0 and {MAX_WATCH_SECONDS}")
    return seconds


def _fingerprint_or_none(labels: Path | None) -> str | None:
    from imgrank_dagster.core.labels import LabelFileError, label_source_fingerprint

    try:
        return label_source_fingerprint(labels)
    except LabelFileError:
        return None


def _changed_while_watching(
    watched: dict[str, tuple[Path | None, str | None]], until: float
) -> bool:
    """Polls the watched label files' stats until one changes (True) or `until` (False)."""
    while time.monotonic() + WATCH_POLL_SECONDS < until:
        time.sleep(WATCH_POLL_SECONDS)
        if any(_fingerprint_or_none(path) != seen for path, seen in watched.values()):
            return True
    return False


@dg.sensor(
    job=apply_labels_job,
    # The daemon evaluates sensors every 5 s at most; an interval below that makes this sensor
    # tick on every pass (5 s here gave ticks 5 and 10 s apart, alternately).
    minimum_interval_seconds=1,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches every collection's label files (stats first, contents only when they "
    "changed) and re-runs the label-dependent assets when the labelled set changes. Each "
    f"evaluation keeps watching the stats for up to {DEFAULT_WATCH_SECONDS:g} s "
    f"({LABELS_WATCH_ENV}), so a change is seen within a fraction of a second.",
)
def labels_sensor(
    context: dg.SensorEvaluationContext,
    imgrank: ImgrankConfig,
    io_manager: dg.ResourceParam[PartitionedParquetIOManager],
) -> dg.SensorResult | dg.SkipReason:
    # The daemon's sensor loop passes every 5 s, a constant of Dagster's with no setting. So
    # that a label change need not wait for the next pass, an evaluation that finds nothing to
    # do watches the label files' stats (a few stat calls every 0.1 s) for most of the gap and
    # evaluates again as soon as one changes. It ends before the next pass: the daemon starts
    # no new tick of a sensor whose previous tick is still running.
    until = time.monotonic() + watch_seconds()
    states = _read_cursor(context.cursor)
    result, watched = _evaluate(context, imgrank, io_manager, states)
    if isinstance(result, dg.SkipReason) and watched and _changed_while_watching(watched, until):
        result, _ = _evaluate(context, imgrank, io_manager, states)
    # The cursor is set once, at the end: the daemon fails a tick whose SensorResult carries a
    # cursor after update_cursor() was called (an earlier look of the same evaluation).
    cursor = json.dumps({name: asdict(state) for name, state in sorted(states.items())})
    if isinstance(result, dg.SkipReason):
        context.update_cursor(cursor)
        return result
    return dg.SensorResult(run_requests=result, cursor=cursor)


def _evaluate(
    context: dg.SensorEvaluationContext,
    imgrank: ImgrankConfig,
    io_manager: PartitionedParquetIOManager,
    states: dict[str, LabelState],
) -> tuple[list[dg.RunRequest] | dg.SkipReason, dict[str, tuple[Path | None, str | None]]]:
    """One look at every collection's labels: (the runs to request, or why none, and the label
    files whose stats were looked at with the fingerprint seen, to watch). `states` is updated
    in place; the caller turns them into the cursor."""
    try:
        collections, config_problems = imgrank.collections_and_problems()
    except CollectionConfigError as error:
        return dg.SkipReason(bounded(str(error))), {}
    from imgrank_dagster.core.labels import (
        LabelFileError,
        label_source_content_hash,
        label_source_fingerprint,
        labelled_set_hash,
    )

    watched: dict[str, tuple[Path | None, str | None]] = {}
    known = set(context.instance.get_dynamic_partitions(collection_partitions.name))
    requests: list[dg.RunRequest] = []
    problems: list[str] = [f"{name}: {problem}" for name, problem in config_problems.items()]
    held: list[str] = []
    ranking_now = collections_with_active_runs(context.instance, lanes={PIPELINE_LANE})
    for name, collection in sorted(collections.items()):
        if name not in known or not _is_ranked(context.instance, name):
            continue  # the first full ranking reads the labels itself
        if name in ranking_now:
            continue  # the ranking under way reads the labels; looked at again after it
        previous = states.get(name)
        watched[name] = (collection.labels, None)
        try:
            fingerprint = label_source_fingerprint(collection.labels)
            watched[name] = (collection.labels, fingerprint)
            if previous and previous.fingerprint == fingerprint:
                if previous.held:
                    held.append(previous.held_message)
                continue
            content = label_source_content_hash(collection.labels)
            confirmed = bool(previous and previous.held and previous.held == content)
            if previous and previous.content == content and not confirmed:
                states[name] = LabelState(fingerprint, content)
                continue
            match = _label_match(collection, io_manager)
            labelled = labelled_set_hash(match.image_ids, match.image_classes)
            ranked = _ranked_labels_metadata(context.instance, name)
            if labelled == _labelled_set(ranked):
                states[name] = LabelState(fingerprint, content)
                if match.unknown or match.ambiguous or match.skipped_files:
                    # Nothing to re-rank, but names that match nothing (a typo) must show: a
                    # run of labeled_images alone evaluates its label_names_match check.
                    requests.append(
                        dg.RunRequest(
                            partition_key=name,
                            asset_selection=[LABELED_IMAGES],
                            run_key=f"{name}:label-names:{content[:16]}",
                            tags={TRIGGER_TAG: "labels_sensor"},
                        )
                    )
                continue  # the same labelled set, re-written
            shrink = Shrink(ranked_labelled_count(ranked) or 0, len(match.image_ids))
            if shrink.is_large and not (confirmed or collection.allow_labels_shrink):
                # Nothing runs: the ranking keeps its labels until the change is confirmed.
                message = shrink.warning(name, collection.labels)
                context.log.warning(message)
                held.append(message)
                states[name] = LabelState(fingerprint, content, content, message)
                continue
        except LabelFileError as error:
            # The ranking stays as it was until the file is fixed; the problem shows as a
            # failed check on labeled_images: a run of that check alone, once per problem.
            problems.append(f"{name}: {error}")
            requests.append(_problem_check_request(name, str(error)))
            continue
        except Exception as error:  # any other fault of this collection's files or data
            problems.append(f"{name}: labels {collection.labels}: {type(error).__name__}: {error}")
            continue
        states[name] = LabelState(fingerprint, content)
        requests.append(
            dg.RunRequest(
                partition_key=name,
                # The stats make the key unique per change: going back to an earlier labelled
                # set is a change too and must not be de-duplicated away.
                run_key=f"{name}:labels:{labelled[:16]}:{fingerprint[:16]}",
                tags={LABELLED_SET_TAG: labelled, TRIGGER_TAG: "labels_sensor"},
            )
        )
    if requests:
        for problem in problems:  # a skip message would carry them; a result does not
            context.log.warning(bounded(f"label files could not be read: {problem}"))
        return requests, watched
    parts = [*held]
    if problems:
        parts.append("label files could not be read: " + "; ".join(bounded(p) for p in problems))
    message = bounded(" | ".join(parts), SKIP_MESSAGE_CHARS) if parts else "no labelled set changed"
    return dg.SkipReason(message), watched
