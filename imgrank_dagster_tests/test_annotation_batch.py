"""The next batch: which images, what a task carries, the labelling config, the CVAT task file,
and the collection's annotation settings. Pure logic; Label Studio itself is in
test_label_studio_loop.py."""

import json
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pandas as pd
import pytest
import yaml

from imgrank_dagster.core.annotation.batch import (
    PICKED_CLUSTER,
    PICKED_TOP,
    choose_batch,
    label_config,
    label_studio_task,
    local_files_url,
)
from imgrank_dagster.core.annotation.cvat import IMAGES_FILE, LABELS_FILE, TASK_FILE
from imgrank_dagster.core.annotation.send import SENT, send_to_cvat
from imgrank_dagster.core.annotation.sync import ExportFileError, export_path, read_export
from imgrank_dagster.core.config import CollectionConfigError, load_collections
from imgrank_dagster.core.labels import load_labels, read_label_entries


def ranking(n: int = 10, clusters: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"seq-{i % 2}/frame_{i:04d}" for i in range(n)],
            "path": [f"seq-{i % 2}/frame_{i:04d}.jpg" for i in range(n)],
            "rank": range(1, n + 1),
            "reason": [f"reason {i}" for i in range(n)],
            "cluster": [i % clusters for i in range(n)],
        }
    )


def ids(frame: pd.DataFrame) -> list[str]:
    return frame["image_id"].tolist()


# --------------------------------------------------------------------------- choosing


def test_the_batch_is_the_top_of_the_ranking_in_rank_order() -> None:
    frame = ranking().sample(frac=1, random_state=0)  # order must come from the rank
    chosen = choose_batch(frame, in_project=set(), batch_size=3)
    assert chosen["rank"].tolist() == [1, 2, 3]
    assert set(chosen["picked_as"]) == {PICKED_TOP}


def test_sending_again_sends_nothing_and_a_rerank_sends_only_new_picks() -> None:
    first = choose_batch(ranking(), in_project=set(), batch_size=4)
    sent = set(ids(first))
    assert choose_batch(ranking(), in_project=sent, batch_size=4).empty
    # A re-rank: two of the batch got labelled (they leave the ranking), the rest moved.
    reranked = ranking()
    reranked = reranked[~reranked["image_id"].isin(ids(first)[:2])].iloc[::-1].copy()
    reranked["rank"] = range(1, len(reranked) + 1)
    again = choose_batch(reranked, in_project=sent, batch_size=4)
    assert not set(ids(again)) & sent
    assert ids(again) == [i for i in ids(reranked.head(4)) if i not in sent]


def test_skipped_and_deleted_images_leave_the_window() -> None:
    frame = ranking()
    sent = set(ids(frame.head(3)))
    answered = set(ids(frame.head(2)))  # skipped by annotators: still in the ranking
    chosen = choose_batch(frame, in_project=sent, answered=answered, batch_size=3)
    assert ids(chosen) == ids(frame.iloc[3:5])


def test_per_cluster_adds_the_best_of_each_cluster_without_labels() -> None:
    frame = ranking(n=12, clusters=3)
    chosen = choose_batch(
        frame, in_project=set(), batch_size=1, per_cluster=2, clusters_without_labels={1, 2}
    )
    # Top 1 (rank 1, cluster 0) + the best two of clusters 1 and 2.
    assert chosen["rank"].tolist() == [1, 2, 3, 5, 6]
    assert chosen["picked_as"].tolist() == [PICKED_TOP] + [PICKED_CLUSTER] * 4
    only_clusters = choose_batch(
        frame,
        in_project=set(ids(chosen)),
        batch_size=0,
        per_cluster=2,
        clusters_without_labels={1, 2},
    )
    assert only_clusters.empty  # each cluster has its two in the project already


def test_a_ranking_without_the_needed_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="missing: \\['cluster'\\]"):
        choose_batch(ranking().drop(columns="cluster"), in_project=set())


# --------------------------------------------------------------------------- tasks


def test_a_task_carries_the_image_rank_reason_and_cluster(tmp_path: Path) -> None:
    root = tmp_path / "data"
    image = root / "city" / "images" / "seq 1" / "frame+1.jpg"
    url = local_files_url(image, root)
    assert url == "/data/local-files/?d=city/images/seq%201/frame%2B1.jpg"
    row = choose_batch(ranking(), in_project=set(), batch_size=1).iloc[0]
    task = label_studio_task(row, url)
    assert task["data"]["image"] == url
    assert task["data"]["rank"] == 1 and task["data"]["cluster"] == 0
    assert task["data"]["reason"] == "reason 0"
    assert "rank 1" in task["data"]["imgrank"] and "reason 0" in task["data"]["imgrank"]
    json.dumps(task)  # plain JSON types only
    with pytest.raises(ValueError, match="outside Label Studio's document root"):
        local_files_url(tmp_path / "elsewhere.jpg", root)


@pytest.mark.parametrize(
    ("task", "control"), [("classification", "Choices"), ("boxes", "RectangleLabels")]
)
def test_label_config_lists_the_classes(task: str, control: str) -> None:
    classes = ["car", 'sign "stop" & <yield>']
    config = ElementTree.fromstring(label_config(classes, task))
    element = config.find(control)
    assert element is not None and element.get("toName") == "image"
    assert [option.get("value") for option in element] == classes
    assert config.find("Image").get("value") == "$image"
    assert config.find("Header").get("value") == "$imgrank"
    with pytest.raises(ValueError):
        label_config([], task)


# --------------------------------------------------------------------------- CVAT


def collections_file(
    tmp_path: Path, annotation: dict | None, labels: str | None = "labels"
) -> Path:
    (tmp_path / "images" / "seq-0").mkdir(parents=True, exist_ok=True)
    (tmp_path / "images" / "seq-1").mkdir(parents=True, exist_ok=True)
    body: dict = {"source": {"type": "folder", "path": "images"}}
    if labels is not None:
        body["labels"] = labels
    if annotation is not None:
        body["annotation"] = annotation
    path = tmp_path / "collections.yaml"
    path.write_text(yaml.safe_dump({"collections": {"city": body}}))
    return path


def test_a_cvat_batch_is_a_task_file_whose_export_the_parsers_read_back(tmp_path: Path) -> None:
    collection = load_collections(
        collections_file(tmp_path, {"tool": "cvat", "task": "boxes", "classes": ["car", "bus"]})
    )["city"]
    frame = ranking()
    sizes = pd.DataFrame({"image_id": frame["image_id"], "width": 640, "height": 480})
    now = datetime(2026, 1, 2, tzinfo=UTC)
    first = send_to_cvat(
        tmp_path / "exports",
        collection,
        frame,
        sizes,
        labelled=set(),
        clusters_without_labels=(),
        previous=None,
        now=now,
        batch_size=3,
    )
    folder = tmp_path / "exports" / "cvat" / "batch-001"
    assert first.batch == 1 and first.target == str(folder)
    assert ids(first.sent) == ids(frame.head(3)) and set(first.record["status"]) == {SENT}
    assert (folder / IMAGES_FILE).read_text().splitlines() == [
        str(collection.image_root / path) for path in frame["path"].head(3)
    ]
    labels = json.loads((folder / LABELS_FILE).read_text())
    assert [(label["name"], label["type"]) for label in labels] == [
        ("car", "rectangle"),
        ("bus", "rectangle"),
    ]
    document = ElementTree.parse(folder / TASK_FILE).getroot()
    assert document.findtext("version") == "1.1"
    assert [label.findtext("name") for label in document.iter("label")] == ["car", "bus"]
    assert [(i.get("name"), i.get("width")) for i in document.iter("image")] == [
        (path, "640") for path in frame["path"].head(3)
    ]
    # Nothing new: no second file. Sent images are never sent again.
    again = send_to_cvat(
        tmp_path / "exports",
        collection,
        frame,
        sizes,
        labelled=set(),
        clusters_without_labels=(),
        previous=first.record,
        now=now,
        batch_size=3,
    )
    assert again.batch is None and again.sent.empty and len(again.record) == 3
    assert not (tmp_path / "exports" / "cvat" / "batch-002").exists()

    # The team annotates in CVAT and exports "CVAT for images 1.1" into the labels folder.
    for image in document.iter("image"):
        ElementTree.SubElement(image, "box", label="bus" if image.get("id") == "1" else "car")
    ElementTree.SubElement(document.find("image"), "tag", label="bus")
    (tmp_path / "labels").mkdir()
    ElementTree.ElementTree(document).write(tmp_path / "labels" / "annotations.xml")
    match = load_labels(tmp_path / "labels", frame[["image_id", "path"]])
    classes = match.labelled.set_index("image_id")
    assert classes.loc[frame["image_id"][0], "classes"] == ["car", "bus"]
    assert classes.loc[frame["image_id"][0], "class"] == "car"
    assert classes.loc[frame["image_id"][1], "class"] == "bus"
    record = send_to_cvat(
        tmp_path / "exports",
        collection,
        frame.iloc[3:],
        sizes,
        labelled=set(match.image_ids),
        clusters_without_labels=(),
        previous=again.record,
        now=now,
        batch_size=3,
    )
    assert record.batch == 2
    assert record.record.set_index("image_id")["status"].value_counts().to_dict() == {
        "labelled": 3,
        "sent": 3,
    }


# --------------------------------------------------------------------------- settings


def test_annotation_settings_have_defaults_and_need_a_labels_folder(tmp_path: Path) -> None:
    collection = load_collections(collections_file(tmp_path, {"classes": ["car", "bus"]}))["city"]
    assert collection.annotation is not None
    assert collection.annotation.tool == "label-studio"
    assert collection.annotation.task == "classification"
    assert collection.annotation.batch_size == 20 and collection.annotation.per_cluster is None
    assert collection.project_title == "city"
    (tmp_path / "labels.csv").write_text("image_id\n")
    with pytest.raises(CollectionConfigError, match=r"labels file .*set labels: to a folder"):
        load_collections(collections_file(tmp_path, {"classes": ["car"]}, labels="labels.csv"))
    with pytest.raises(CollectionConfigError, match="has no labels path"):
        load_collections(collections_file(tmp_path, {"classes": ["car"]}, labels=None))


@pytest.mark.parametrize(
    ("annotation", "problem"),
    [
        ({"classes": []}, "annotation.classes"),
        ({"classes": ["car", "car "]}, "repeated: \\['car'\\]"),
        ({"classes": ["car"], "tool": "labelbox"}, "annotation.tool"),
        ({"classes": ["car"], "task": "polygons"}, "annotation.task"),
        ({"classes": ["car"], "batch_size": 0}, "needs per_cluster"),
        ({"classes": ["car"], "project": "x" * 51}, "annotation.project"),
        ({"classes": ["car"], "token": "secret"}, "annotation.token: unknown key"),
    ],
)
def test_bad_annotation_settings_are_named(tmp_path: Path, annotation: dict, problem: str) -> None:
    with pytest.raises(CollectionConfigError, match=problem):
        load_collections(collections_file(tmp_path, annotation))


# --------------------------------------------------------------------------- export file


def test_the_export_file_is_named_after_the_project_and_read_strictly(tmp_path: Path) -> None:
    path = export_path(tmp_path, "street cams/Berlin", 7)
    assert path == tmp_path / "label-studio" / "street_cams_Berlin-project-7.json"
    assert read_export(path) == ({}, None)
    path.parent.mkdir()
    path.write_text('[{"id": 3, "data": {}, "annotations": []}]')
    tasks, digest = read_export(path)
    assert list(tasks) == [3] and len(digest) == 64
    path.write_text('{"id": 3}')
    with pytest.raises(ExportFileError, match=str(path)):
        read_export(path)


def test_a_label_studio_export_holds_the_classes_of_the_chosen_annotation(tmp_path: Path) -> None:
    def annotation(choice: str | None, updated: str, **extra: object) -> dict:
        result = (
            [
                {
                    "from_name": "class",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": [choice]},
                }
            ]
            if choice
            else []
        )
        return {"result": result, "updated_at": updated, "was_cancelled": choice is None, **extra}

    tasks = [
        {
            "id": 1,
            "data": {"image": "/data/local-files/?d=c/images/seq-0/frame_0000.jpg"},
            "annotations": [
                annotation("car", "2026-01-01T10:00:00Z"),
                annotation("bus", "2026-01-01T11:00:00Z"),
            ],
        },  # the newest wins
        {
            "id": 2,
            "data": {"image": "/data/local-files/?d=c/images/seq-1/frame_0001.jpg"},
            "annotations": [
                annotation("truck", "2026-01-01T09:00:00Z", ground_truth=True),
                annotation("bus", "2026-01-01T11:00:00Z"),
            ],
        },  # ground truth wins
        {
            "id": 3,
            "data": {"image": "/data/local-files/?d=c/images/seq-0/frame_0002.jpg"},
            "annotations": [annotation(None, "2026-01-01T11:00:00Z")],
        },  # skipped
        {
            "id": 4,
            "data": {"image": "/data/local-files/?d=c/images/seq-1/frame_0003.jpg"},
            "annotations": [
                {
                    "result": [
                        {"type": "rectanglelabels", "value": {"x": 1, "rectanglelabels": ["car"]}},
                        {"type": "rectanglelabels", "value": {"x": 2, "rectanglelabels": ["bus"]}},
                        {"type": "rectanglelabels", "value": {"x": 3, "rectanglelabels": ["bus"]}},
                    ]
                }
            ],
        },
    ]
    file = tmp_path / "export.json"
    file.write_text(json.dumps(tasks))
    entries = read_label_entries(file)
    assert [(e.name, e.classes) for e in entries] == [
        ("c/images/seq-0/frame_0000.jpg", ("bus",)),
        ("c/images/seq-1/frame_0001.jpg", ("truck",)),
        ("c/images/seq-1/frame_0003.jpg", ("car", "bus", "bus")),
    ]
    match = load_labels(file, ranking()[["image_id", "path"]])
    by_id = match.labelled.set_index("image_id")
    assert by_id.loc["seq-1/frame_0003", "class"] == "bus"  # the most frequent
    assert by_id.loc["seq-1/frame_0003", "classes"] == ["car", "bus"]


def test_the_names_that_are_spelled_twice_agree() -> None:
    from imgrank_dagster.core.annotation.batch import RANKING_COLUMNS
    from imgrank_dagster.defs.annotation.assets import RANKING_INPUT_COLUMNS
    from imgrank_dagster.devtools.label_studio import REPOSITORY, VERSION

    # The asset reads what a task shows; defs may not import the (pandas) core module.
    assert RANKING_INPUT_COLUMNS == RANKING_COLUMNS
    makefile = (REPOSITORY / "Makefile").read_text()
    assert f"LABEL_STUDIO_VERSION := {VERSION}\n" in makefile
