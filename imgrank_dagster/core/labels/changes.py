"""Detecting a change of the labels: cheap file fingerprints, content hashes, set hashes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from imgrank_dagster.core.labels.formats import LabelFileError, list_label_files
from imgrank_dagster.core.sources.images import file_sha256

MISSING_FINGERPRINT = "missing"
EMPTY_SET_HASH = hashlib.sha256(b"").hexdigest()


def labelled_set_hash(
    image_ids: Iterable[str], classes: Mapping[str, Sequence[str]] | None = None
) -> str:
    """sha256 hex of the sorted unique ids joined by newlines (EMPTY_SET_HASH for none).

    An image with classes contributes "<id>\t<class>\t<class>..." instead of its id, so a
    class changing alone changes the hash, and a labelled set without any class hashes as
    it always did.
    """
    unique: set[str] = set()
    for image_id in image_ids:
        if not isinstance(image_id, str) or not image_id:
            raise ValueError(f"image ids must be non-empty strings, got {image_id!r}")
        unique.add(image_id)
    classes = classes or {}
    lines = sorted("\t".join([image_id, *classes.get(image_id, ())]) for image_id in unique)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def label_source_fingerprint(path: Path | None) -> str:
    """Cheap change detector from file stats only (relative name, size, mtime_ns per file).

    MISSING_FINGERPRINT when there is no labels path. Unsupported files are not part of it.
    """
    label_files = list_label_files(path)
    if label_files.missing:
        return MISSING_FINGERPRINT
    digest = hashlib.sha256()
    for name, file in label_files.files:
        try:
            stat = file.stat()
        except OSError as error:
            raise LabelFileError(f"{file}: cannot stat: {error.strerror or error}") from None
        digest.update(f"{json.dumps(name)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def label_source_content_hash(path: Path | None) -> str:
    """sha256 over the label files' relative names and contents, in name order.

    A missing path hashes like an empty directory: both label nothing.
    """
    digest = hashlib.sha256()
    for name, file in list_label_files(path).files:
        try:
            content_hash = file_sha256(file)
        except OSError as error:
            raise LabelFileError(f"{file}: cannot read: {error.strerror or error}") from None
        digest.update(f"{json.dumps(name)}\t{content_hash}\n".encode())
    return digest.hexdigest()
