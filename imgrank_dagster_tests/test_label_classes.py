"""Classes travel: every label format gives its images' classes to labeled_images, and a class
changing alone changes the labelled set's hash (so the labels sensor re-ranks)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from imgrank_dagster.core.labels import (
    EMPTY_SET_HASH,
    LabelFileError,
    labelled_set_hash,
    load_labels,
    read_label_entries,
)

IMAGES = pd.DataFrame(
    {
        "image_id": ["seq-1/a", "seq-1/b", "seq-2/c"],
        "path": ["seq-1/a.jpg", "seq-1/b.jpg", "seq-2/c.jpg"],
    }
)


def test_a_csv_label_column_gives_the_class(tmp_path: Path) -> None:
    file = tmp_path / "labels.csv"
    file.write_text("image_id,annotator,label\nseq-1/a,ana,car\nseq-1/b,ben,\nseq-2/c,ana,bus\n")
    assert [(e.name, e.classes) for e in read_label_entries(file)] == [
        ("seq-1/a", ("car",)),
        ("seq-1/b", ()),
        ("seq-2/c", ("bus",)),
    ]
    # "class" is read when there is no "label" column; a CSV without a header has no classes.
    file.write_text("path,class\nseq-1/a.jpg,truck\n")
    assert read_label_entries(file)[0].classes == ("truck",)
    file.write_text("seq-1/a,car\n")
    assert read_label_entries(file)[0].classes == ()


def test_coco_categories_give_the_classes_of_each_image(tmp_path: Path) -> None:
    document = {
        "images": [{"id": 10, "file_name": "seq-1/a.jpg"}, {"id": 11, "file_name": "c.jpg"}],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 2},
            {"id": 2, "image_id": 10, "category_id": 1},
            {"id": 3, "image_id": 10, "category_id": 1},
        ],
    }
    file = tmp_path / "coco.json"
    file.write_text(json.dumps(document))
    labelled = load_labels(file, IMAGES).labelled.set_index("image_id")
    assert labelled.loc["seq-1/a", "classes"] == ["bus", "car"]
    assert labelled.loc["seq-1/a", "class"] == "car"  # two boxes against one
    assert pd.isna(labelled.loc["seq-2/c", "class"]) and labelled.loc["seq-2/c", "classes"] == []
    document["annotations"].append({"id": 4, "image_id": 11, "category_id": 9})
    file.write_text(json.dumps(document, indent=1))
    with pytest.raises(LabelFileError, match="category_id 9, which no category has") as error:
        read_label_entries(file)
    assert str(file) in str(error.value)


def test_the_first_file_with_a_class_wins_and_conflicts_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("image_id,label\nseq-1/a,car\nseq-1/b,bus\n")
    (tmp_path / "b.csv").write_text("image_id,label\nseq-1/a,truck\nseq-1/b,bus\nseq-2/c,car\n")
    (tmp_path / "0-plain.txt").write_text("seq-2/c\n")  # first, without a class
    match = load_labels(tmp_path, IMAGES)
    labelled = match.labelled.set_index("image_id")
    assert labelled["class"].to_dict() == {"seq-1/a": "car", "seq-1/b": "bus", "seq-2/c": "car"}
    assert labelled.loc["seq-2/c", "source_file"] == "0-plain.txt"  # provenance: first naming
    assert match.class_conflicts == {"seq-1/a": [["truck"]]}
    summary = match.summary()
    assert summary["classes"] == {"car": 2, "bus": 1} and summary["class_conflicts"] == 1


def test_the_labelled_set_hash_covers_classes_and_is_unchanged_without_them() -> None:
    ids = ["seq-1/a", "seq-1/b"]
    plain = labelled_set_hash(ids)
    assert labelled_set_hash(ids, {}) == plain
    assert labelled_set_hash(ids, {"seq-1/a": []}) == plain
    car = labelled_set_hash(ids, {"seq-1/a": ["car"]})
    assert car != plain
    assert labelled_set_hash(reversed(ids), {"seq-1/a": ["car"]}) == car
    assert labelled_set_hash(ids, {"seq-1/a": ["bus"]}) != car
    assert labelled_set_hash([]) == EMPTY_SET_HASH
