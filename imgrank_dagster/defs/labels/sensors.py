"""New labels re-rank a collection: only the label-dependent assets run again."""

import json
from dataclasses import asdict, dataclass

import dagster as dg
import pandas as pd
from dagster._core.definitions.data_version import extract_data_version_from_entry

from imgrank_dagster.core.collections import Collection, CollectionConfigError
from imgrank_dagster.core.labels import (
    LabelFileError,
    label_source_content_hash,
    label_source_fingerprint,
    labelled_set_hash,
    load_labels,
)
from imgrank_dagster.defs.labels.assets import LABEL_MATCHING_COLUMNS, labeled_images
from imgrank_dagster.defs.labels.jobs import apply_labels_job
from imgrank_dagster.partitions import collection_partitions
from imgrank_dagster.resources import ImgrankConfig
from imgrank_dagster.resources.parquet_io_manager import PartitionedParquetIOManager

COLLECTION_IMAGES = dg.AssetKey("collection_images")
# What must exist before a label change can be applied incrementally.
LABEL_INDEPENDENT_INPUTS = [
    COLLECTION_IMAGES,
    dg.AssetKey("cluster_assignments"),
    dg.AssetKey("image_base_scores"),
]


@dataclass(frozen=True)
class LabelState:
    fingerprint: str  # file stats: cheap, checked every evaluation
    content: str  # file contents: hashed only when the stats changed


def _read_cursor(cursor: str | None) -> dict[str, LabelState]:
    if not cursor:
        return {}
    return {name: LabelState(**state) for name, state in json.loads(cursor).items()}


def _ranked_labelled_set(instance: dg.DagsterInstance, collection: str) -> str | None:
    """The labelled set the current ranking was computed from (labeled_images' data version)."""
    record = instance.get_latest_data_version_record(labeled_images.key, partition_key=collection)
    if record is None:
        return None
    version = extract_data_version_from_entry(record.event_log_entry)
    return version.value if version else None


def _labelled_set(collection: Collection, io_manager: PartitionedParquetIOManager) -> str:
    """The labelled set labeled_images would compute now, from the same image catalog."""
    frames = io_manager.read_partitions(
        COLLECTION_IMAGES.to_user_string(), [collection.name], columns=LABEL_MATCHING_COLUMNS
    )
    images = frames.get(collection.name, pd.DataFrame(columns=LABEL_MATCHING_COLUMNS))
    return labelled_set_hash(load_labels(collection.labels, images).image_ids)


def _is_ranked(instance: dg.DagsterInstance, collection: str) -> bool:
    return all(
        collection in instance.get_materialized_partitions(key) for key in LABEL_INDEPENDENT_INPUTS
    )


@dg.sensor(
    job=apply_labels_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches every collection's label files (stats first, contents only when they "
    "changed) and re-runs the label-dependent assets when the labelled set changes.",
)
def labels_sensor(
    context: dg.SensorEvaluationContext,
    imgrank: ImgrankConfig,
    io_manager: dg.ResourceParam[PartitionedParquetIOManager],
) -> dg.SensorResult | dg.SkipReason:
    try:
        collections = imgrank.collections()
    except CollectionConfigError as error:
        return dg.SkipReason(str(error))
    states = _read_cursor(context.cursor)
    known = set(context.instance.get_dynamic_partitions(collection_partitions.name))
    requests: list[dg.RunRequest] = []
    problems: list[str] = []
    for name, collection in sorted(collections.items()):
        if name not in known or not _is_ranked(context.instance, name):
            continue  # the first full ranking reads the labels itself
        previous = states.get(name)
        try:
            fingerprint = label_source_fingerprint(collection.labels)
            if previous and previous.fingerprint == fingerprint:
                continue
            content = label_source_content_hash(collection.labels)
            if previous and previous.content == content:
                states[name] = LabelState(fingerprint, content)
                continue
            labelled = _labelled_set(collection, io_manager)
        except LabelFileError as error:
            # Nothing runs: the previous ranking stays as it was until the file is fixed.
            problems.append(f"{name}: {error}")
            continue
        states[name] = LabelState(fingerprint, content)
        if labelled == _ranked_labelled_set(context.instance, name):
            continue  # the same labelled set, re-written
        requests.append(
            dg.RunRequest(
                partition_key=name,
                # The stats make the key unique per change: going back to an earlier labelled
                # set is a change too and must not be de-duplicated away.
                run_key=f"{name}:labels:{labelled[:16]}:{fingerprint[:16]}",
                tags={"imgrank/labelled_set": labelled, "imgrank/trigger": "labels_sensor"},
            )
        )
    cursor = json.dumps({name: asdict(state) for name, state in sorted(states.items())})
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    context.update_cursor(cursor)
    if problems:
        return dg.SkipReason("label files could not be read: " + "; ".join(problems))
    return dg.SkipReason("no labelled set changed")
