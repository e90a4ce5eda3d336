"""The labelled set of a collection, read from its label files, and the checks that show
label problems in the UI: files that cannot be read, files skipped, names that match no image
or several."""

import dagster as dg

from imgrank_dagster.lib.assets import collection_asset
from imgrank_dagster.lib.frames import Frame
from imgrank_dagster.lib.io_manager import columns_of
from imgrank_dagster.lib.metadata import counts_table, frame_output, frame_table
from imgrank_dagster.lib.names import LABELED_IMAGES, LABELS_GROUP, STEP_PRIORITY_TAG
from imgrank_dagster.lib.partitions import collection_partitions
from imgrank_dagster.lib.resources import ImgrankConfig

# Every image, rejected ones too: a label on a rejected image is known, not "unknown".
LABEL_MATCHING_COLUMNS = ["image_id", "path"]
LABEL_NAMES_MATCH = "label_names_match"
LABEL_FILES_READABLE = "label_files_readable"
MAX_PROBLEM_ROWS = 50  # problems listed in the UI (the counts are complete)
MAX_NAME_CHARS = 120  # a label "name" can be anything a file holds: keep metadata small


def _short(text: str) -> str:
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"


@collection_asset(
    LABELS_GROUP,
    "Labelled image ids and their classes from the collection's label files (CSV/TXT, COCO, "
    "Label Studio, CVAT). Its data version is a hash of the labelled set and its classes. "
    "Check label_names_match warns about names that match no image or several.",
    code_version="2",  # 2: the class columns
    ins={"collection_images": columns_of("collection_images", LABEL_MATCHING_COLUMNS)},
    check_specs=[
        dg.AssetCheckSpec(
            LABEL_NAMES_MATCH,
            asset=LABELED_IMAGES,
            description="Every name in the label files matches exactly one image of the "
            "collection, and no label file was skipped.",
        )
    ],
)
def labeled_images(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    collection_images: Frame,
):
    import pandas as pd

    from imgrank_dagster.core.labels import labelled_set_hash, load_labels
    from imgrank_dagster.core.labels.matching import short_name

    collection = imgrank.collection(context.partition_key)
    match = load_labels(collection.labels, collection_images)
    summary = match.summary()
    problems = match.problems()
    if match.unknown:
        examples = [short_name(name) for name in match.unknown[:5]]
        context.log.warning(f"{len(match.unknown)} label names match no image: {examples}")
    if match.ambiguous:
        context.log.warning(f"{len(match.ambiguous)} label names match several images")
    if match.class_conflicts:
        context.log.warning(
            f"{len(match.class_conflicts)} images get different classes from different label "
            f"entries (the first file's are kept): {list(match.class_conflicts)[:5]}"
        )
    yield frame_output(
        match.labelled,
        data_version=labelled_set_hash(match.image_ids, match.image_classes),
        labels_path=dg.MetadataValue.path(str(collection.labels)),
        labelled=len(match.labelled),
        with_class=summary["with_class"],
        unknown_names=len(match.unknown),
        ambiguous_names=len(match.ambiguous),
        skipped_files=len(match.skipped_files),
        classes=counts_table(summary["classes"], "class", "images"),
        label_summary=dg.MetadataValue.json(summary),
    )
    rows = [{**row, "name": _short(row["name"])} for row in problems[:MAX_PROBLEM_ROWS]]
    metadata: dict[str, object] = {
        "unknown_names": len(match.unknown),
        "ambiguous_names": len(match.ambiguous),
        "skipped_files": dg.MetadataValue.json([_short(f) for f in match.skipped_files[:50]]),
    }
    if rows:
        metadata["problems"] = frame_table(pd.DataFrame(rows), limit=MAX_PROBLEM_ROWS)
    yield dg.AssetCheckResult(
        check_name=LABEL_NAMES_MATCH,
        passed=not problems and not match.skipped_files,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=(
            f"{len(match.unknown)} name(s) match no image, {len(match.ambiguous)} match several, "
            f"{len(match.skipped_files)} file(s) skipped"
        ),
    )


@dg.asset_check(
    asset=LABELED_IMAGES,
    name=LABEL_FILES_READABLE,
    partitions_def=collection_partitions,
    # In a label-change run its step waits until the ranking is exported: steps that are ready
    # together run in priority order, and the new ranking is what the user is waiting for.
    op_tags={STEP_PRIORITY_TAG: -1},
    description="Every label file of the collection can be read (the format, the encoding, "
    "each line). labels_sensor runs this check alone when a file breaks, so the problem shows "
    "here, with the file and line, while the previous ranking stays as it was.",
)
def label_files_readable(
    context: dg.AssetCheckExecutionContext, imgrank: ImgrankConfig
) -> dg.AssetCheckResult:
    from imgrank_dagster.core.labels import LabelFileError, list_label_files, read_label_entries

    collection = imgrank.collection(context.partition_key)
    try:
        files = list_label_files(collection.labels)
        entries = read_label_entries(collection.labels)
    except LabelFileError as error:
        problem = str(error)
        return dg.AssetCheckResult(
            passed=False,
            metadata={
                "problem": dg.MetadataValue.text(problem[:2000]),
                "labels_path": dg.MetadataValue.path(str(collection.labels)),
            },
            description=problem[:500],
        )
    return dg.AssetCheckResult(
        passed=True,
        metadata={"files": len(files.files), "names": len(entries)},
    )
