"""A batch for CVAT without a CVAT server: a "CVAT for images 1.1" task file.

No CVAT server can run here, so a batch for CVAT is a folder of files a team takes to its own
CVAT:

- `annotations.xml`: the batch in CVAT's "CVAT for images 1.1" format, its labels in
  `<meta>` and one empty `<image>` per picked image (name relative to the collection's image
  folder, width, height). CVAT imports it as the task's annotations
  (Actions > Upload annotations > CVAT 1.1);
- `images.txt`: the images' absolute paths in the same order, for creating the task
  (`cvat-cli create ... local $(cat images.txt)`, or share storage);
- `labels.json`: the labels in CVAT's task-creation format (`cvat-cli create --labels`).

When the team exports the task again as "CVAT for images 1.1" into the collection's labels
folder, the label parsers read its images and their classes (core/labels/formats.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from imgrank_dagster.core.files import write_atomically

TASK_FILE = "annotations.xml"
IMAGES_FILE = "images.txt"
LABELS_FILE = "labels.json"
# CVAT's label types: a class per image is a tag; boxes are rectangles.
LABEL_TYPES = {"classification": "tag", "boxes": "rectangle"}
_COLOURS = ["#fa3253", "#33ddff", "#34d1b7", "#ff6037", "#b83df5", "#ffcc33", "#24b353"]


@dataclass(frozen=True)
class CvatImage:
    name: str  # path relative to the collection's image folder, "/"-separated
    path: Path  # absolute
    width: int
    height: int


def cvat_labels(classes: Sequence[str], task: str) -> list[dict[str, object]]:
    if task not in LABEL_TYPES:
        raise ValueError(f"unknown annotation task {task!r}: {', '.join(LABEL_TYPES)}")
    return [
        {
            "name": name,
            "color": _COLOURS[index % len(_COLOURS)],
            "type": LABEL_TYPES[task],
            "attributes": [],
        }
        for index, name in enumerate(classes)
    ]


def cvat_task_xml(
    task_name: str,
    classes: Sequence[str],
    task: str,
    images: Sequence[CvatImage],
    created: datetime | None = None,
) -> str:
    """The batch as a CVAT for images 1.1 document (no shapes: nothing is annotated yet)."""
    created = created or datetime.now(UTC)
    stamp = created.strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
    labels = "\n".join(
        "        <label>\n"
        f"          <name>{escape(str(label['name']))}</name>\n"
        f"          <color>{label['color']}</color>\n"
        f"          <type>{label['type']}</type>\n"
        "          <attributes>\n          </attributes>\n"
        "        </label>"
        for label in cvat_labels(classes, task)
    )
    rows = "\n".join(
        f'  <image id="{index}" name={quoteattr(image.name)} width="{int(image.width)}" '
        f'height="{int(image.height)}">\n  </image>'
        for index, image in enumerate(images)
    )
    last = max(len(images) - 1, 0)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <name>{escape(task_name)}</name>
      <size>{len(images)}</size>
      <mode>annotation</mode>
      <overlap>0</overlap>
      <created>{stamp}</created>
      <updated>{stamp}</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>{last}</stop_frame>
      <frame_filter></frame_filter>
      <labels>
{labels}
      </labels>
    </task>
    <dumped>{stamp}</dumped>
  </meta>
{rows}
</annotations>
"""


def write_cvat_batch(
    folder: Path, task_name: str, classes: Sequence[str], task: str, images: Sequence[CvatImage]
) -> Path:
    """Write the batch's three files into folder (each atomically); returns the task file."""
    xml = cvat_task_xml(task_name, classes, task, images)
    paths = "".join(f"{image.path}\n" for image in images)
    labels = json.dumps(cvat_labels(classes, task), indent=2) + "\n"
    write_atomically(folder / IMAGES_FILE, lambda path: path.write_text(paths))
    write_atomically(folder / LABELS_FILE, lambda path: path.write_text(labels))
    # The task file last: a batch folder with its task file is complete.
    write_atomically(folder / TASK_FILE, lambda path: path.write_text(xml, encoding="utf-8"))
    return folder / TASK_FILE
