"""Label files (CSV/TXT, COCO, Label Studio, CVAT) -> the labelled set of a collection."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from imgrank_dagster.core.labels import (
    EMPTY_SET_HASH,
    MISSING_FINGERPRINT,
    LabelEntry,
    LabelFileError,
    label_source_content_hash,
    label_source_fingerprint,
    labelled_set_hash,
    list_label_files,
    load_labels,
    match_labels,
    read_label_entries,
)

# Two sequences share frame_0001.jpg: that file name alone is ambiguous.
IMAGE_PATHS = [
    "seq-001/frame_0001.jpg",
    "seq-001/frame_0002.jpg",
    "seq-001/frame_0003.jpg",
    "seq-002/frame_0001.jpg",
    "seq-002/frame_0004.jpg",
    "seq-002/frame_0005.jpg",
]


@pytest.fixture
def images() -> pd.DataFrame:
    return pd.DataFrame(
        {"image_id": [path.removesuffix(".jpg") for path in IMAGE_PATHS], "path": IMAGE_PATHS}
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def line_containing(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def labelled_ids(match) -> list[str]:
    return match.labelled["image_id"].tolist()


# --------------------------------------------------------------------------- realistic exports


def coco_export(file_names: list[str]) -> dict:
    """Shaped like CVAT's / Label Studio's "COCO 1.0" export."""
    return {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {
            "contributor": "",
            "date_created": "",
            "description": "",
            "url": "",
            "version": "",
            "year": "",
        },
        "categories": [
            {"id": 1, "name": "car", "supercategory": ""},
            {"id": 2, "name": "traffic_sign", "supercategory": ""},
        ],
        "images": [
            {
                "id": index + 1,
                "width": 64,
                "height": 48,
                "file_name": name,
                "license": 0,
                "flickr_url": "",
                "coco_url": "",
                "date_captured": 0,
            }
            for index, name in enumerate(file_names)
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": [],
                "area": 750.0,
                "bbox": [10.0, 12.0, 30.0, 25.0],
                "iscrowd": 0,
                "attributes": {"occluded": False, "rotation": 0.0},
            },
        ],
    }


def label_studio_task(
    task_id: int, image: str, annotated: bool = True, cancelled: bool = False
) -> dict:
    """One task of a Label Studio "JSON" export (fields as Label Studio 1.x writes them)."""
    annotations = []
    if annotated:
        annotations.append(
            {
                "id": 100 + task_id,
                "completed_by": 1,
                "result": []
                if cancelled
                else [
                    {
                        "original_width": 64,
                        "original_height": 48,
                        "image_rotation": 0,
                        "value": {
                            "x": 15.6,
                            "y": 25.0,
                            "width": 46.8,
                            "height": 52.1,
                            "rotation": 0,
                            "rectanglelabels": ["car"],
                        },
                        "id": "Qx7ab3LmZk",
                        "from_name": "label",
                        "to_name": "image",
                        "type": "rectanglelabels",
                        "origin": "manual",
                    }
                ],
                "was_cancelled": cancelled,
                "ground_truth": False,
                "created_at": "2024-05-02T09:12:41.046000Z",
                "updated_at": "2024-05-02T09:12:41.046000Z",
                "draft_created_at": None,
                "lead_time": 8.4,
                "prediction": {},
                "result_count": 0,
                "unique_id": "6f1b3c2e-8d4a-4e0f-9b7c-2a5d8e1f0c3b",
                "import_id": None,
                "last_action": None,
                "task": task_id,
                "project": 1,
                "updated_by": 1,
                "parent_prediction": None,
                "parent_annotation": None,
                "last_created_by": None,
            }
        )
    return {
        "id": task_id,
        "annotations": annotations,
        # Only uploaded files have one; storage-backed tasks have null.
        "file_upload": image.rsplit("/", 1)[-1] if "/data/upload/" in image else None,
        "drafts": [],
        "predictions": [],
        "data": {"image": image},
        "meta": {},
        "created_at": "2024-05-01T10:00:00.000000Z",
        "updated_at": "2024-05-02T09:12:41.070000Z",
        "inner_id": task_id,
        "total_annotations": len(annotations),
        "cancelled_annotations": int(cancelled),
        "total_predictions": 0,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": 1,
        "updated_by": 1,
        "comment_authors": [],
    }


def cvat_export(names: list[str]) -> str:
    """A "CVAT for images 1.1" export."""
    images = "\n".join(
        f'  <image id="{index}" name="{name}" width="64" height="48">\n'
        f'    <box label="car" source="manual" occluded="0" xtl="10.00" ytl="12.00" '
        f'xbr="40.00" ybr="37.00" z_order="0">\n'
        f"    </box>\n"
        f"  </image>"
        for index, name in enumerate(names)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>street frames</name>
      <size>{len(names)}</size>
      <mode>annotation</mode>
      <overlap>0</overlap>
      <bugtracker></bugtracker>
      <created>2024-05-01 10:00:00.000000+00:00</created>
      <updated>2024-05-02 09:00:00.000000+00:00</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>{len(names) - 1}</stop_frame>
      <frame_filter></frame_filter>
      <segments>
        <segment>
          <id>9</id>
          <start>0</start>
          <stop>{len(names) - 1}</stop>
          <url>http://localhost:8080/api/jobs/9</url>
        </segment>
      </segments>
      <owner>
        <username>admin</username>
        <email></email>
      </owner>
      <assignee></assignee>
      <labels>
        <label>
          <name>car</name>
          <color>#fa3253</color>
          <type>rectangle</type>
          <attributes>
          </attributes>
        </label>
      </labels>
    </task>
    <dumped>2024-05-02 09:00:00.000000+00:00</dumped>
  </meta>
{images}
</annotations>
"""


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
def test_coco_export_lists_its_images(tmp_path: Path, images: pd.DataFrame, indent) -> None:
    text = json.dumps(coco_export(["seq-001/frame_0002.jpg", "frame_0003.jpg"]), indent=indent)
    file = write(tmp_path / "instances_default.json", text)

    entries = read_label_entries(file)

    assert [(e.name, e.source_file) for e in entries] == [
        ("seq-001/frame_0002.jpg", "instances_default.json"),
        ("frame_0003.jpg", "instances_default.json"),
    ]
    assert [e.line for e in entries] == [
        line_containing(text, '"seq-001/frame_0002.jpg"'),
        line_containing(text, '"frame_0003.jpg"'),
    ]
    labelled = match_labels(entries, images).labelled
    assert labelled.astype(object).where(labelled.notna(), None).to_dict("records") == [
        {
            "image_id": "seq-001/frame_0002",
            "source_file": "instances_default.json",
            "line": entries[0].line,
            "matched_by": "path",
            "class": "car",  # its annotation's category
            "classes": ["car"],
        },
        {
            "image_id": "seq-001/frame_0003",
            "source_file": "instances_default.json",
            "line": entries[1].line,
            "matched_by": "file_name",
            "class": None,  # annotated as empty
            "classes": [],
        },
    ]


def test_label_studio_export_reduces_references_and_skips_unlabelled_tasks(
    tmp_path: Path, images: pd.DataFrame
) -> None:
    tasks = [
        label_studio_task(1, "/data/upload/1/5f2a9c1e-frame_0003.jpg"),
        label_studio_task(2, "/data/local-files/?d=seq-002%2Fframe_0004.jpg"),
        label_studio_task(3, "/data/upload/1/0c4d7e2a-frame_0005.jpg", annotated=False),
        label_studio_task(4, "/data/local-files/?d=seq-001%2Fframe_0002.jpg", cancelled=True),
        label_studio_task(5, "s3://street-bucket/export/seq-002/frame_0005.jpg"),
    ]
    text = json.dumps(tasks, indent=2)  # Label Studio indents its JSON export
    file = write(tmp_path / "project-1-at-2024-05-02-09-13-2b8e0f1a.json", text)

    entries = read_label_entries(file)

    assert [e.name for e in entries] == [
        "frame_0003.jpg",
        "seq-002/frame_0004.jpg",
        "/export/seq-002/frame_0005.jpg",
    ]
    assert [e.line for e in entries] == [
        line_containing(text, '"image": "/data/upload/1/5f2a9c1e-frame_0003.jpg"'),
        line_containing(text, '"image": "/data/local-files/?d=seq-002%2Fframe_0004.jpg"'),
        line_containing(text, '"image": "s3://street-bucket'),
    ]
    match = match_labels(entries, images)
    assert match.labelled[["image_id", "matched_by"]].values.tolist() == [
        ["seq-001/frame_0003", "file_name"],
        ["seq-002/frame_0004", "path"],
        ["seq-002/frame_0005", "path"],
    ]
    assert match.unknown == [] and match.ambiguous == {}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"image": "/data/upload/1/5f2a9c1e-frame_0003.jpg"}, "frame_0003.jpg"),
        ({"image": "/data/upload/12/0a1b2c3d-street%20view.jpg"}, "street view.jpg"),
        # Not an 8-hex-digit upload prefix: part of the real name.
        ({"image": "/data/upload/3/abc123-frame_0001.jpg"}, "abc123-frame_0001.jpg"),
        ({"image": "/data/local-files/?d=seq-002%2Fframe_0004.jpg"}, "seq-002/frame_0004.jpg"),
        (
            {"image": "/data/local-files?d=images/seq-002/frame%2B1.jpg"},
            "images/seq-002/frame+1.jpg",
        ),
        (
            {"image": "http://localhost:8080/data/upload/3/deadbeef-frame_0005.jpg"},
            "frame_0005.jpg",
        ),
        (
            {"image": "https://cdn.example.org/street/seq-002/frame_0004.jpg?sig=x"},
            "/street/seq-002/frame_0004.jpg",
        ),
        ({"image": "seq-001/frame_0002.jpg"}, "seq-001/frame_0002.jpg"),
        # No "image" key: the first string value of data is the reference.
        (
            {
                "capture_index": 4,
                "photo": "/data/local-files/?d=seq-001%2Fframe_0002.jpg",
                "note": "x",
            },
            "seq-001/frame_0002.jpg",
        ),
    ],
)
def test_label_studio_reference_shapes(tmp_path: Path, data: dict, expected: str) -> None:
    task = {**label_studio_task(1, "unused"), "data": data}
    file = write(tmp_path / "export.json", json.dumps([task], indent=2))

    assert [entry.name for entry in read_label_entries(file)] == [expected]


def test_cvat_for_images_export(tmp_path: Path, images: pd.DataFrame) -> None:
    text = cvat_export(["seq-001/frame_0001.jpg", "seq-002/frame_0004.jpg"])
    file = write(tmp_path / "annotations.xml", text)

    entries = read_label_entries(file)

    assert entries == [
        LabelEntry(
            "seq-001/frame_0001.jpg",
            "annotations.xml",
            line_containing(text, 'name="seq-001/frame_0001.jpg"'),
            ("car",),
        ),
        LabelEntry(
            "seq-002/frame_0004.jpg",
            "annotations.xml",
            line_containing(text, 'name="seq-002/frame_0004.jpg"'),
            ("car",),
        ),
    ]
    assert labelled_ids(match_labels(entries, images)) == [
        "seq-001/frame_0001",
        "seq-002/frame_0004",
    ]


@pytest.mark.parametrize("column", ["image_id", "id", "path", "file", "filename", "File_Name"])
def test_csv_header_names_the_column(tmp_path: Path, column: str) -> None:
    file = write(
        tmp_path / "labels.csv",
        f"annotator,{column},done\n"
        "# exported 2024-05-02\n"
        "ana,seq-001/frame_0002,yes\n"
        "\n"
        'ben,"seq-002/frame_0004.jpg",yes\n'
        ",,\n",
    )

    entries = read_label_entries(file)

    assert entries == [
        LabelEntry("seq-001/frame_0002", "labels.csv", 3),
        LabelEntry("seq-002/frame_0004.jpg", "labels.csv", 5),
    ]


def test_csv_header_prefers_image_id_over_a_row_id(tmp_path: Path) -> None:
    file = write(tmp_path / "labels.csv", "id,image_id\n1,seq-001/frame_0002\n")

    assert [e.name for e in read_label_entries(file)] == ["seq-001/frame_0002"]


def test_csv_without_header_uses_first_column_and_txt_takes_whole_lines(tmp_path: Path) -> None:
    # A spreadsheet's byte-order mark; Windows line ends.
    csv_file = write(tmp_path / "a.csv", "\ufeffseq-001/frame_0002.jpg,car\nseq-001/frame_0003,x\n")
    txt_file = write(
        tmp_path / "b.txt", "# done\r\n./seq-002/frame_0004.jpg\r\n\r\n  frame 7 copy.jpg  \r\n"
    )

    assert read_label_entries(csv_file) == [
        LabelEntry("seq-001/frame_0002.jpg", "a.csv", 1),
        LabelEntry("seq-001/frame_0003", "a.csv", 2),
    ]
    assert read_label_entries(txt_file) == [
        LabelEntry("./seq-002/frame_0004.jpg", "b.txt", 2),
        LabelEntry("frame 7 copy.jpg", "b.txt", 4),
    ]


def test_directory_merges_files_in_name_order_and_reports_skipped(
    tmp_path: Path, images: pd.DataFrame
) -> None:
    root = tmp_path / "labels"
    write(root / "a-coco.json", json.dumps(coco_export(["seq-001/frame_0002.jpg"])))
    write(root / "batch-2" / "cvat.xml", cvat_export(["seq-002/frame_0004.jpg"]))
    write(
        root / "batch-2" / "label-studio.json",
        json.dumps([label_studio_task(1, "/data/upload/1/5f2a9c1e-frame_0003.jpg")], indent=2),
    )
    # Names seq-001/frame_0002 again: the first file keeps the provenance.
    write(root / "z-list.TXT", "seq-001/frame_0002\nseq-002/frame_0005.jpg\n")
    write(root / "README.md", "how we label\n")
    write(root / "batch-2" / "notes.xlsx", "not a label file")
    write(root / "._a-coco.json", "\x00\x05\x16\x07 AppleDouble")
    write(root / ".git" / "config", "[core]\n")

    entries = read_label_entries(root)
    match = load_labels(root, images)

    assert [(e.source_file, e.name) for e in entries] == [
        ("a-coco.json", "seq-001/frame_0002.jpg"),
        ("batch-2/cvat.xml", "seq-002/frame_0004.jpg"),
        ("batch-2/label-studio.json", "frame_0003.jpg"),
        ("z-list.TXT", "seq-001/frame_0002"),
        ("z-list.TXT", "seq-002/frame_0005.jpg"),
    ]
    assert match.labelled[["image_id", "source_file", "matched_by"]].values.tolist() == [
        ["seq-001/frame_0002", "a-coco.json", "path"],
        ["seq-001/frame_0003", "batch-2/label-studio.json", "file_name"],
        ["seq-002/frame_0004", "batch-2/cvat.xml", "path"],
        ["seq-002/frame_0005", "z-list.TXT", "path"],
    ]
    assert match.skipped_files == ["._a-coco.json", ".git/", "README.md", "batch-2/notes.xlsx"]
    assert match.labels_missing is False
    assert match.summary()["matched_by"] == {"id": 0, "path": 3, "file_name": 1}


# --------------------------------------------------------------------------- matching


def test_names_match_by_id_path_or_unique_suffix(images: pd.DataFrame) -> None:
    names = {
        "seq-001/frame_0001": "seq-001/frame_0001",  # exact id
        "./seq-001/frame_0002.jpg": "seq-001/frame_0002",  # leading ./
        "/srv/street/images/seq-002/frame_0004.jpg": "seq-002/frame_0004",  # root prefix
        "images\\seq-002\\frame_0001.jpg": "seq-002/frame_0001",  # Windows separators
        "frame_0005.jpg": "seq-002/frame_0005",  # unique file name
    }
    entries = [LabelEntry(name, "labels.txt", n) for n, name in enumerate(names, start=1)]

    match = match_labels(entries, images)

    assert dict(zip(match.labelled["image_id"], match.labelled["line"], strict=True)) == {
        image_id: n for n, image_id in enumerate(names.values(), start=1)
    }
    assert match.labelled.set_index("image_id")["matched_by"].to_dict() == {
        "seq-001/frame_0001": "id",
        "seq-001/frame_0002": "path",
        "seq-002/frame_0001": "path",
        "seq-002/frame_0004": "path",
        "seq-002/frame_0005": "file_name",
    }
    assert match.unknown == [] and match.ambiguous == {}


def test_unknown_and_ambiguous_names_are_reported_not_guessed(images: pd.DataFrame) -> None:
    names = [
        "frame_0001.jpg",  # in seq-001 and seq-002
        "seq-009/frame_0001.jpg",  # no such sequence; its file name is ambiguous
        "frame_9999.jpg",
        "seq-001/frame_0001.png",  # another extension is another file
        "frame_0001.jpg",  # repeated: reported once
        "seq-001/frame_0003",
    ]
    entries = [LabelEntry(name, "labels.txt", n) for n, name in enumerate(names, start=1)]

    match = match_labels(entries, images)

    assert labelled_ids(match) == ["seq-001/frame_0003"]
    assert match.unknown == ["frame_9999.jpg", "seq-001/frame_0001.png"]
    both = ["seq-001/frame_0001", "seq-002/frame_0001"]
    assert match.ambiguous == {"frame_0001.jpg": both, "seq-009/frame_0001.jpg": both}
    summary = match.summary(max_examples=1)
    assert (summary["unknown"], summary["unknown_examples"]) == (2, ["frame_9999.jpg"])
    assert (summary["ambiguous"], summary["ambiguous_examples"]) == (2, {"frame_0001.jpg": both})


def test_suffix_match_when_image_paths_are_deeper_than_label_names() -> None:
    images = pd.DataFrame(
        {
            "image_id": ["a/frame_0001", "b/frame_0001", "c/frame_0001", "west-b/frame_0001"],
            "path": [
                "north/a/frame_0001.jpg",
                "south/b/frame_0001.jpg",
                "south/c/frame_0001.jpg",
                "west/b/frame_0001.jpg",
            ],
        }
    )
    entries = [
        LabelEntry("a/frame_0001.jpg", "x.txt", 1),  # unique suffix
        # Both sides have a prefix; the longest common suffix decides ("b/frame_0001.jpg"
        # alone would fit two images).
        LabelEntry("export/south/b/frame_0001.jpg", "x.txt", 2),
        LabelEntry("c/frame_0001.jpg", "x.txt", 3),
        LabelEntry("b/frame_0001.jpg", "x.txt", 4),
    ]

    match = match_labels(entries, images)

    assert labelled_ids(match) == ["a/frame_0001", "b/frame_0001", "c/frame_0001"]
    assert match.ambiguous == {"b/frame_0001.jpg": ["b/frame_0001", "west-b/frame_0001"]}


def test_no_entries_give_an_empty_typed_frame(images: pd.DataFrame) -> None:
    labelled = match_labels([], images).labelled

    assert list(labelled.columns) == [
        "image_id",
        "source_file",
        "line",
        "matched_by",
        "class",
        "classes",
    ]
    assert len(labelled) == 0 and labelled["line"].dtype == "int64"


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (pd.DataFrame({"image_id": ["a"]}), "missing: ['path']"),
        (pd.DataFrame({"image_id": ["a", "a"], "path": ["a.jpg", "b.jpg"]}), "duplicates"),
        (pd.DataFrame({"image_id": ["a", "b"], "path": ["a.jpg", "./a.jpg"]}), "duplicates"),
        (pd.DataFrame({"image_id": ["a", 2], "path": ["a.jpg", "b.jpg"]}), "images.image_id"),
    ],
)
def test_bad_images_frame_is_rejected(frame: pd.DataFrame, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        match_labels([], frame)


def test_an_image_without_a_file_is_matched_by_its_id_only() -> None:
    """A rejected image without a file (failed download, a name that is not UTF-8) has no path."""
    images = pd.DataFrame({"image_id": ["s/a", "s/b"], "path": ["s/a.jpg", None]})
    entries = [LabelEntry(name, "labels.csv", i) for i, name in enumerate(["s/b", "s/a.jpg"], 1)]

    match = match_labels(entries, images)

    assert match.image_ids == ["s/a", "s/b"] and not match.unknown


# --------------------------------------------------------------------------- bad and empty input


@pytest.mark.parametrize(
    ("file_name", "content", "line", "problem"),
    [
        (
            "broken.json",
            '{\n  "images": [\n    {"file_name": "a.jpg"},\n    {"file_name": "b.jpg"\n  ]\n}\n',
            5,
            "not valid JSON",
        ),
        (
            "coco.json",
            json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2}]}, indent=2),
            7,
            "images[1] has no 'file_name'",
        ),
        (
            "tasks.json",
            '[\n  {"id": 1, "data": {"image": "a.jpg"}},\n  {"id": 2, "image": "b.jpg"}\n]',
            3,
            "task 1 has no 'data'",
        ),
        (
            "tasks.json",
            '[\n  {"id": 1,\n   "data": {"capture_index": 3}}\n]',
            3,
            "no image reference",
        ),
        ("other.json", '{"annotations": []}', 1, "neither a COCO export"),
        (
            "broken.xml",
            '<?xml version="1.0"?>\n<annotations>\n  <version>1.1</version>\n'
            '  <image id="0" name="a.jpg">\n</annotations>\n',
            5,
            "not valid XML: mismatched tag",
        ),
        (
            "video.xml",
            '<annotations>\n  <version>1.1</version>\n  <track id="0" label="car">'
            "</track>\n</annotations>",
            3,
            "CVAT for video",
        ),
        (
            "voc.xml",
            '<?xml version="1.0"?>\n<annotation><filename>a.jpg</filename></annotation>',
            2,
            "expected <annotations>",
        ),
        (
            "bomb.xml",
            '<?xml version="1.0"?>\n<!DOCTYPE a [\n<!ENTITY x "xxxxxxxx">\n]>\n'
            "<annotations>&x;</annotations>",
            3,
            "entity declarations",
        ),
        (
            "bad.csv",
            'image_id,label\nseq-001/frame_0001,car\n"seq-001/frame_0002,car\n',
            3,
            "not valid CSV",
        ),
        ("short.csv", "label,image_id\ncar,seq-001/frame_0001\nsign\n", 3, "no image name"),
        ("latin1.txt", "seq-001/frame_0001.jpg\nseq-001/fr\xe9me.jpg\n", 2, "not UTF-8"),
    ],
)
def test_malformed_file_names_file_and_line(
    tmp_path: Path, file_name: str, content: str, line: int, problem: str
) -> None:
    file = tmp_path / file_name
    encoding = "latin-1" if file_name == "latin1.txt" else "utf-8"
    file.write_bytes(content.encode(encoding))

    with pytest.raises(LabelFileError) as raised:
        read_label_entries(tmp_path)

    message = str(raised.value)
    assert message.startswith(f"{file}: line {line}")
    assert problem in message


@pytest.mark.parametrize(
    ("file_name", "content"),
    [
        ("labels.csv", ""),
        ("labels.txt", "\n\n# nothing labelled yet\n"),
        ("labels.csv", "image_id\n"),
        ("labels.json", ""),
        ("labels.json", "  \n"),
        ("labels.json", "[]"),
        ("labels.json", json.dumps(coco_export([]))),
        ("labels.xml", ""),
        ("labels.xml", "<annotations><version>1.1</version></annotations>"),
    ],
)
def test_empty_label_file_is_valid(tmp_path: Path, file_name: str, content: str) -> None:
    file = write(tmp_path / file_name, content)

    assert read_label_entries(file) == []


@pytest.mark.parametrize("configured", [True, False], ids=["path-missing", "no-path"])
def test_missing_labels_path_means_nothing_labelled_and_is_reported(
    tmp_path: Path, images: pd.DataFrame, configured: bool
) -> None:
    path = tmp_path / "labels" if configured else None

    match = load_labels(path, images)

    assert read_label_entries(path) == []
    assert labelled_ids(match) == [] and match.labels_missing is True
    assert match.summary()["labels_missing"] is True
    assert label_source_fingerprint(path) == MISSING_FINGERPRINT
    assert label_source_content_hash(path) == label_source_content_hash(tmp_path)  # empty dir


def test_single_file_of_unsupported_type_is_an_error(tmp_path: Path) -> None:
    file = write(tmp_path / "labels.xlsx", "binary")

    with pytest.raises(LabelFileError, match=r"labels\.xlsx: unsupported label file type"):
        read_label_entries(file)


# --------------------------------------------------------------------------- change detection


def test_fingerprint_follows_file_stats_and_content_hash_follows_contents(tmp_path: Path) -> None:
    root = tmp_path / "labels"
    first = write(root / "a.txt", "seq-001/frame_0001\n")
    write(root / "batch" / "b.csv", "image_id\nseq-001/frame_0002\n")
    stat = first.stat()
    fingerprint = label_source_fingerprint(root)
    content_hash = label_source_content_hash(root)

    # Reading and asking again change nothing; neither do files that are not label files.
    read_label_entries(root)
    write(root / "README.md", "notes")
    assert label_source_fingerprint(root) == fingerprint
    assert label_source_content_hash(root) == content_hash

    # Same size, new content, explicitly different mtime.
    first.write_text("seq-001/frame_0003\n")
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = label_source_fingerprint(root)
    assert changed != fingerprint
    assert label_source_content_hash(root) != content_hash

    # Touched without a content change: the stats differ, the contents do not.
    first.write_text("seq-001/frame_0001\n")
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert label_source_fingerprint(root) not in (fingerprint, changed)
    assert label_source_content_hash(root) == content_hash

    # A new label file changes both.
    write(root / "c.json", "[]")
    assert label_source_fingerprint(root) != fingerprint
    assert label_source_content_hash(root) != content_hash


def test_fingerprint_and_content_hash_use_relative_names(tmp_path: Path) -> None:
    original = tmp_path / "labels"
    write(original / "batch" / "b.csv", "image_id\nseq-001/frame_0002\n")
    copy = tmp_path / "elsewhere" / "labels"
    shutil.copytree(original, copy)  # copy2 keeps mtimes

    assert label_source_fingerprint(copy) == label_source_fingerprint(original)
    assert label_source_content_hash(copy) == label_source_content_hash(original)
    (copy / "batch" / "b.csv").rename(copy / "batch" / "renamed.csv")
    assert label_source_content_hash(copy) != label_source_content_hash(original)
    assert list_label_files(copy).files == [("batch/renamed.csv", copy / "batch" / "renamed.csv")]


def test_labelled_set_hash_ignores_order_and_duplicates() -> None:
    ids = ["seq-002/frame_0004", "seq-001/frame_0001", "seq-001/frame_0002"]

    digest = labelled_set_hash(ids)

    assert digest == labelled_set_hash(reversed(ids))
    assert digest == labelled_set_hash(pd.Series([*ids, ids[0]]))
    assert digest == hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    assert digest != labelled_set_hash(ids[:2])
    assert labelled_set_hash([]) == EMPTY_SET_HASH == hashlib.sha256(b"").hexdigest()
    with pytest.raises(ValueError, match="non-empty strings"):
        labelled_set_hash(["seq-001/frame_0001", None])
