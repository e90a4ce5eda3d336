"""Label files: finding them under a labels path and reading the image names they list.

A collection's labels are one file or a directory of files (read recursively, merged in the
order of their relative names). Supported formats, chosen by extension and content:

- ``.csv`` / ``.txt``: one image id or relative path per line. Blank lines and lines starting
  with ``#`` are ignored. A CSV may start with a header naming the column to use (image_id,
  path, file_name, filename, file or id, in that preference); without one the first column is
  used. A header may also name a class column (``label``, else ``class``). A TXT line is taken
  whole.
- ``.json``: a COCO export (an object with ``images[].file_name``; classes from
  ``annotations[].category_id`` -> ``categories[].name``) or a Label Studio JSON export (a list
  of tasks whose image reference is ``data.image``, else the first string in ``data``).
  Label Studio references are reduced to the file they name: ``/data/local-files/?d=<path>``
  gives ``<path>``, ``/data/upload/<project>/<8 hex>-<name>`` gives ``<name>``, URLs give their
  URL-decoded path. A task exported with an ``annotations`` list that holds no submitted
  (non-cancelled) annotation is not labelled and is left out. Its classes are the choices and
  labels (``choices``, ``labels``, ``rectanglelabels``, ``polygonlabels``, ...) of one
  submitted annotation: the ground truth if one is marked, else the last updated.
- ``.xml``: a CVAT for images 1.1 export (``<annotations><image name="..."/>``); classes from
  the ``label`` of each shape or tag inside an ``<image>``.


Every image listed counts as labelled (COCO and CVAT list images annotated as empty too). An
entry's classes are in order of appearance, repeats kept (three boxes of "car" are three).
"""

from __future__ import annotations

import bisect
import csv
import json
import json.decoder
import json.scanner
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.parsers import expat

LABEL_SUFFIXES = frozenset({".csv", ".txt", ".json", ".xml"})
# Header names that mark the name column of a CSV, most specific first: a CSV holding both
# "path" and "id" columns most likely has a numeric row id in "id".
NAME_COLUMNS = ("image_id", "path", "file_name", "filename", "file", "id")
# Header names of a CSV's class column, in that preference.
CLASS_COLUMNS = ("label", "class")

# Label Studio stores uploads as "<first 8 hex of a uuid4>-<original name>".
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


class LabelFileError(ValueError):
    """A label file cannot be read; the message names the file and, where known, the line."""


@dataclass(frozen=True)
class LabelEntry:
    """One image named by a label file. line is 1-based (0 when not known)."""

    name: str
    source_file: str  # relative to the labels path (the file name when labels is one file)
    line: int
    classes: tuple[str, ...] = ()  # the classes the file gives the image, in order


@dataclass(frozen=True)
class LabelFiles:
    """The label files under a labels path."""

    files: list[tuple[str, Path]]  # (name relative to the labels path, file), sorted by name
    skipped_files: list[str]  # relative names not read (unsupported, hidden); folders end in "/"
    missing: bool  # no labels path configured, or it does not exist: nothing labelled yet


# --------------------------------------------------------------------------- finding files


def list_label_files(path: Path | None) -> LabelFiles:
    """The supported label files under path (a file or a directory, searched recursively)."""
    if path is None:
        return LabelFiles(files=[], skipped_files=[], missing=True)
    path = Path(path)
    if not path.exists():
        return LabelFiles(files=[], skipped_files=[], missing=True)
    if path.is_file():
        if path.suffix.lower() not in LABEL_SUFFIXES:
            raise LabelFileError(
                f"{path}: unsupported label file type {path.suffix or '(none)'!r}; "
                f"expected one of {', '.join(sorted(LABEL_SUFFIXES))}"
            )
        return LabelFiles(files=[(path.name, path)], skipped_files=[], missing=False)
    if not path.is_dir():
        raise LabelFileError(f"{path}: labels path is neither a file nor a directory")

    def _unreadable(error: OSError) -> None:
        raise LabelFileError(f"{error.filename}: cannot list: {error.strerror or error}")

    files: list[tuple[str, Path]] = []
    skipped: list[str] = []
    for folder, dirnames, filenames in os.walk(path, onerror=_unreadable):
        here = Path(folder)
        kept = []
        for dirname in dirnames:
            # Hidden folders (.git, editor state) and symlinked folders (possible loops) are
            # not label folders.
            if dirname.startswith(".") or (here / dirname).is_symlink():
                skipped.append((here / dirname).relative_to(path).as_posix() + "/")
            else:
                kept.append(dirname)
        dirnames[:] = kept
        for filename in filenames:
            file = here / filename
            name = file.relative_to(path).as_posix()
            # Hidden files include macOS "._labels.csv" resource forks, which are binary.
            supported = file.suffix.lower() in LABEL_SUFFIXES and file.is_file()
            if filename.startswith(".") or not supported:
                skipped.append(name)
            else:
                files.append((name, file))
    return LabelFiles(files=sorted(files), skipped_files=sorted(skipped), missing=False)


# --------------------------------------------------------------------------- reading


def read_label_entries(path: Path | None) -> list[LabelEntry]:
    """Every image name in the label file or directory, files in name order, lines in order.

    A missing path or an empty file gives no entries. Skipped files and a missing path are
    reported by `list_label_files` / `load_labels`.
    """
    return read_files(list_label_files(path))


def read_files(label_files: LabelFiles) -> list[LabelEntry]:
    entries: list[LabelEntry] = []
    for name, file in label_files.files:
        entries.extend(_read_file(file, name))
    return entries


def _read_file(file: Path, source: str) -> list[LabelEntry]:
    suffix = file.suffix.lower()
    data = _read_bytes(file)
    if suffix == ".xml":
        return _read_cvat(file, source, data)
    text = _decode(file, data)
    if suffix == ".json":
        return _read_json(file, source, text)
    return _read_list(file, source, text, is_csv=suffix == ".csv")


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as error:
        raise LabelFileError(f"{file}: cannot read: {error.strerror or error}") from None


def _decode(file: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # spreadsheet tools write a byte-order mark
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise LabelFileError(f"{file}: line {line}: not UTF-8 text ({error.reason})") from None


def _read_list(file: Path, source: str, text: str, is_csv: bool) -> list[LabelEntry]:
    entries: list[LabelEntry] = []
    column: int | None = None  # index of the name column, decided by the first row
    class_column: int | None = None  # index of the class column, from a header only
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not is_csv:
            entries.append(LabelEntry(stripped, source, number))
            continue
        try:
            cells = [cell.strip() for cell in next(csv.reader([line], strict=True))]
        except csv.Error as error:
            raise LabelFileError(f"{file}: line {number}: not valid CSV: {error}") from None
        if not any(cells):
            continue  # spreadsheets export empty rows as ",,"
        if column is None:
            header = [cell.lower() for cell in cells]
            named = [name for name in NAME_COLUMNS if name in header]
            column = header.index(named[0]) if named else 0
            if named:
                classes = [name for name in CLASS_COLUMNS if name in header]
                class_column = header.index(classes[0]) if classes else None
                continue
        if column >= len(cells) or not cells[column]:
            raise LabelFileError(f"{file}: line {number}: no image name in column {column + 1}")
        has_class = class_column is not None and class_column < len(cells)
        label = cells[class_column] if has_class else ""
        entries.append(LabelEntry(cells[column], source, number, (label,) if label else ()))
    return entries


def _read_json(file: Path, source: str, text: str) -> list[LabelEntry]:
    if not text.strip():
        return []
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise LabelFileError(
            f"{file}: line {error.lineno}, column {error.colno}: not valid JSON: {error.msg}"
        ) from None
    except RecursionError:
        raise LabelFileError(
            f"{file}: line 1: JSON nested too deeply to be a COCO or Label Studio export"
        ) from None
    if isinstance(document, dict) and "images" in document:
        references = _coco_references(file, text, document)
        names = references
        classes = _coco_classes(file, text, document)
    elif isinstance(document, list):
        references, classes = _label_studio_references(file, text, document)
        names = [_label_studio_name(file, text, reference) for reference in references]
    else:
        raise LabelFileError(
            f"{file}: line 1: neither a COCO export (an object with 'images') nor a "
            "Label Studio JSON export (a list of tasks with 'data')"
        )
    lines = _string_lines(text, references)
    return [
        LabelEntry(name, source, line, image_classes)
        for name, line, image_classes in zip(names, lines, classes, strict=True)
    ]


def _coco_references(file: Path, text: str, document: dict[str, Any]) -> list[str]:
    images = document["images"]
    if not isinstance(images, list):
        raise _json_structure_error(file, text, ("images",), "'images' is not a list")
    names = []
    for index, image in enumerate(images):
        name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise _json_structure_error(
                file, text, ("images", index), f"images[{index}] has no 'file_name' string"
            )
        names.append(name)
    return names


def _coco_classes(file: Path, text: str, document: dict[str, Any]) -> list[tuple[str, ...]]:
    """Each image's category names, from annotations[].image_id and .category_id."""
    images = document["images"]
    annotations = document.get("annotations") or []
    if not isinstance(annotations, list):
        raise _json_structure_error(file, text, ("annotations",), "'annotations' is not a list")
    categories: dict[Any, str] = {}
    for index, category in enumerate(document.get("categories") or []):
        name = category.get("name") if isinstance(category, dict) else None
        if not isinstance(name, str) or not name.strip() or "id" not in category:
            raise _json_structure_error(
                file, text, ("categories", index), f"categories[{index}] needs 'id' and 'name'"
            )
        categories[category["id"]] = name.strip()
    by_image: dict[Any, list[str]] = {}
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            raise _json_structure_error(
                file, text, ("annotations", index), f"annotations[{index}] has no 'image_id'"
            )
        category = annotation.get("category_id")
        if category is None:
            continue
        if category not in categories:
            raise _json_structure_error(
                file,
                text,
                ("annotations", index),
                f"annotations[{index}] has category_id {category!r}, which no category has",
            )
        by_image.setdefault(annotation["image_id"], []).append(categories[category])
    return [tuple(by_image.get(image.get("id"), ())) for image in images]


# Keys of a Label Studio result's value that hold class names: <Choices> gives "choices",
# <Labels> "labels", <RectangleLabels> "rectanglelabels", <PolygonLabels> "polygonlabels"...
_RESULT_CLASS_KEYS = re.compile(r"^(choices|[a-z]*labels)$")


def _annotation_classes(annotation: dict[str, Any]) -> tuple[str, ...]:
    classes: list[str] = []
    for result in annotation.get("result") or []:
        value = result.get("value") if isinstance(result, dict) else None
        if not isinstance(value, dict):
            continue
        for key, names in value.items():
            if _RESULT_CLASS_KEYS.match(key) and isinstance(names, list):
                classes.extend(name for name in names if isinstance(name, str) and name)
    return tuple(classes)


def _task_classes(task: dict[str, Any]) -> tuple[str, ...]:
    """The classes of a task's chosen submitted annotation: ground truth, else the newest."""
    submitted = [
        annotation
        for annotation in task.get("annotations") or []
        if isinstance(annotation, dict) and not annotation.get("was_cancelled", False)
    ]
    if not submitted:
        return ()
    truth = [annotation for annotation in submitted if annotation.get("ground_truth")]
    # ISO 8601 times of one server sort as text; a missing time sorts first.
    chosen = max(truth or submitted, key=lambda annotation: str(annotation.get("updated_at", "")))
    return _annotation_classes(chosen)


def _label_studio_references(
    file: Path, text: str, tasks: list[Any]
) -> tuple[list[str], list[tuple[str, ...]]]:
    references = []
    classes = []
    for index, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise _json_structure_error(
                file,
                text,
                (index,),
                f"task {index} has no 'data' object (expected a Label Studio JSON export; "
                "JSON-MIN and CSV exports are not supported)",
            )
        if not _task_is_labelled(task):
            continue
        data = task["data"]
        reference = data.get("image")
        if not isinstance(reference, str):
            reference = next((value for value in data.values() if isinstance(value, str)), None)
        if reference is None or not reference.strip():
            raise _json_structure_error(
                file, text, (index, "data"), f"task {index} has no image reference in 'data'"
            )
        references.append(reference)
        classes.append(_task_classes(task))
    return references, classes


def _task_is_labelled(task: dict[str, Any]) -> bool:
    # An export made with "all tasks" lists unlabelled tasks with an empty annotations list;
    # a skipped task only has cancelled annotations. A plain task list has no annotations key.
    if "annotations" not in task:
        return True
    annotations = task["annotations"]
    return isinstance(annotations, list) and any(
        isinstance(annotation, dict) and not annotation.get("was_cancelled", False)
        for annotation in annotations
    )


def _label_studio_name(file: Path, text: str, reference: str) -> str:
    """The file a Label Studio image reference names, as a relative path or a file name."""
    parts = urlsplit(reference.strip())
    path = unquote(parts.path)
    if path.rstrip("/").endswith("/data/local-files"):
        # Local storage: "/data/local-files/?d=<path under the document root, URL-encoded>".
        # unquote, not parse_qs: a literal "+" in a file name is not a space.
        values = [item[2:] for item in parts.query.split("&") if item.startswith("d=")]
        name = unquote(values[0]) if values else ""
    elif "/data/upload/" in path:
        # Uploads: "/data/upload/<project id>/<8 hex>-<original file name>".
        name = _UPLOAD_PREFIX.sub("", path.rsplit("/", 1)[-1], count=1)
    else:
        name = path  # http(s)://host/<path>, s3://bucket/<path>, or a plain path
    if not name.strip("/ "):
        raise LabelFileError(
            f"{file}: line {_string_lines(text, [reference])[0]}: "
            f"image reference {reference!r} names no file"
        )
    return name


def _string_lines(text: str, values: Sequence[str]) -> list[int]:
    """The line of each value, found as a JSON string in document order (0 if not found)."""
    lines: list[int] = []
    line, counted_to = 1, 0
    pending = iter(values)
    target = next(pending, None)
    for match in _JSON_STRING.finditer(text):
        if target is None:
            break
        token = match.group()
        value = json.loads(token) if "\\" in token else token[1:-1]
        if value == target:
            line += text.count("\n", counted_to, match.start())
            counted_to = match.start()
            lines.append(line)
            target = next(pending, None)
    return lines + [0] * (len(values) - len(lines))


class _Positioned:
    line: int


class _PositionedDict(dict[str, Any], _Positioned):
    pass


class _PositionedList(list[Any], _Positioned):
    pass


def _json_structure_error(
    file: Path, text: str, location: tuple[str | int, ...], problem: str
) -> LabelFileError:
    """An error naming the line of the JSON value at location (or of its nearest container)."""
    newlines = [match.start() for match in re.finditer("\n", text)]

    def line_of(start: int) -> int:
        return bisect.bisect_left(newlines, start) + 1

    # The C scanner keeps no positions; the pure-Python one lets objects and arrays record
    # where they start. Slow, but only used once a file is known to be wrong.
    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
        value, end = json.decoder.JSONObject(s_and_end, *args)
        positioned = _PositionedDict(value)
        positioned.line = line_of(s_and_end[1] - 1)
        return positioned, end

    def parse_array(s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
        value, end = json.decoder.JSONArray(s_and_end, *args)
        positioned = _PositionedList(value)
        positioned.line = line_of(s_and_end[1] - 1)
        return positioned, end

    decoder = json.JSONDecoder()
    decoder.parse_object = parse_object  # type: ignore[assignment]
    decoder.parse_array = parse_array  # type: ignore[assignment]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[assignment]
    try:
        node: Any = decoder.decode(text)
    except RecursionError:  # the pure-Python decoder nests deeper than the C one
        return LabelFileError(f"{file}: {problem}")
    line = 1
    for key in location:
        line = getattr(node, "line", line)
        node = node[key]
    line = getattr(node, "line", line)
    return LabelFileError(f"{file}: line {line}: {problem}")


def _read_cvat(file: Path, source: str, data: bytes) -> list[LabelEntry]:
    if not data.strip():
        return []
    parser = expat.ParserCreate()
    entries: list[LabelEntry] = []
    depth = 0
    image: tuple[str, int] | None = None  # the open <image>: its name and line
    classes: list[str] = []

    def start(tag: str, attributes: dict[str, str]) -> None:
        nonlocal depth, image
        depth += 1
        line = parser.CurrentLineNumber
        if depth == 3 and image is not None and attributes.get("label", "").strip():
            classes.append(attributes["label"].strip())  # <box>, <polygon>, <tag>, ...
        if depth == 1 and tag != "annotations":
            raise LabelFileError(
                f"{file}: line {line}: root element is <{tag}>, expected <annotations> "
                "(a CVAT for images 1.1 export)"
            )
        if depth == 2 and tag == "track":
            raise LabelFileError(
                f"{file}: line {line}: <track> is from a CVAT for video export; "
                "export the task as 'CVAT for images 1.1'"
            )
        if depth == 2 and tag == "image":
            name = attributes.get("name", "").strip()
            if not name:
                raise LabelFileError(f"{file}: line {line}: <image> has no name attribute")
            image = (name, line)
            classes.clear()

    def end(tag: str) -> None:
        nonlocal depth, image
        if depth == 2 and tag == "image" and image is not None:
            entries.append(LabelEntry(image[0], source, image[1], tuple(classes)))
            image = None
        depth -= 1

    def entity_declaration(*_: object) -> None:
        # Entity expansion is how XML bombs work; CVAT never declares entities.
        raise LabelFileError(
            f"{file}: line {parser.CurrentLineNumber}: XML entity declarations are not allowed"
        )

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = entity_declaration
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise LabelFileError(
            f"{file}: line {error.lineno}, column {error.offset + 1}: not valid XML: "
            f"{expat.ErrorString(error.code)}"
        ) from None
    return entries
