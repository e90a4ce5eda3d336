"""Label files -> the set of labelled images of a collection.

`load_labels(path, images)` reads a labels file or folder (CSV/TXT, COCO, Label Studio JSON,
CVAT XML: `formats`) and matches its names to the collection's images (`matching`); `changes`
tells cheaply whether the labels changed.
"""

from imgrank_dagster.core.labels.changes import (
    EMPTY_SET_HASH,
    MISSING_FINGERPRINT,
    label_source_content_hash,
    label_source_fingerprint,
    labelled_set_hash,
)
from imgrank_dagster.core.labels.formats import (
    LABEL_SUFFIXES,
    LabelEntry,
    LabelFileError,
    LabelFiles,
    list_label_files,
    read_label_entries,
)
from imgrank_dagster.core.labels.matching import LabelMatch, load_labels, match_labels

__all__ = [
    "EMPTY_SET_HASH",
    "LABEL_SUFFIXES",
    "MISSING_FINGERPRINT",
    "LabelEntry",
    "LabelFileError",
    "LabelFiles",
    "LabelMatch",
    "label_source_content_hash",
    "label_source_fingerprint",
    "labelled_set_hash",
    "list_label_files",
    "load_labels",
    "match_labels",
    "read_label_entries",
]
