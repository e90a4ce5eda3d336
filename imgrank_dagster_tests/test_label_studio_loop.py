"""The annotation loop against a real Label Studio, started from its own venv on a free port of
127.0.0.1: send the top 20, annotate through Label Studio's API as an annotator's browser does
(two classes, a skipped task, an updated annotation), and the labels come back by themselves
and re-rank.

CI installs Label Studio (`make label-studio-install`, .ci/run) and sets
IMGRANK_REQUIRE_LABEL_STUDIO, so there the test fails rather than skips when it is missing;
elsewhere it is skipped without it.
"""

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pandas as pd
import pytest
import requests
import yaml
from sensor_ticks import evaluate_on_pipeline

from imgrank_dagster.core.annotation.client import (
    DOCUMENT_ROOT_ENV,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    URL_ENV,
    LabelStudioClient,
)
from imgrank_dagster.core.annotation.send import task_image_id
from imgrank_dagster.defs.annotation.sensors import label_studio_sensor
from imgrank_dagster.defs.labels.sensors import labels_sensor
from imgrank_dagster.devtools.demo_collection import SCENE_TYPES
from imgrank_dagster.devtools.label_studio import (
    LabelStudioServer,
    LabelStudioUnavailable,
    executable,
)
from imgrank_dagster.lib.runs import send_batch

pytestmark = pytest.mark.slow  # a real Label Studio server

REQUIRE_ENV = "IMGRANK_REQUIRE_LABEL_STUDIO"
COLLECTION = "city"


@dataclass
class Running:
    server: LabelStudioServer
    token: str


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One server for the module; it serves local files below pytest's temporary root, where
    every copy of the ranked pipeline lives."""
    try:
        executable()
    except LabelStudioUnavailable as error:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but {error}")
        pytest.skip(str(error))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = tmp_path_factory.mktemp("label-studio")
    with LabelStudioServer(base, tmp_path_factory.getbasetemp(), port) as server:
        yield Running(server, server.create_access_token())


@pytest.fixture
def loop(fresh_pipeline, label_studio: Running, monkeypatch: pytest.MonkeyPatch):
    """The ranked test pipeline with its city collection sending batches to Label Studio."""
    monkeypatch.setenv(URL_ENV, label_studio.server.url)
    monkeypatch.setenv(TOKEN_ENV, label_studio.token)
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)
    monkeypatch.setenv(DOCUMENT_ROOT_ENV, str(label_studio.server.document_root))
    return fresh_pipeline


def declare_annotation(pipeline, project: str) -> None:
    path = pipeline.data_dir / "collections.yaml"
    document = yaml.safe_load(path.read_text())
    document["collections"][COLLECTION]["annotation"] = {
        "classes": list(SCENE_TYPES),
        "project": project,
        "batch_size": 20,
    }
    path.write_text(yaml.safe_dump(document))


def poll_label_studio(pipeline, cursor: str | None) -> tuple[str, str | None]:
    result, cursor = evaluate_on_pipeline(pipeline, label_studio_sensor, cursor)
    return result.skip_message, cursor


def apply_labels(pipeline, cursor: str | None) -> tuple[bool, str | None]:
    """One labels_sensor tick, and the run it requests executed as the daemon would."""
    result, cursor = evaluate_on_pipeline(pipeline, labels_sensor, cursor)
    if not isinstance(result, dg.SensorResult):
        return False, cursor
    (request,) = result.run_requests
    job = pipeline.defs.resolve_job_def(labels_sensor.job_name)
    run = job.execute_in_process(
        instance=pipeline.instance, partition_key=request.partition_key, tags=request.tags
    )
    assert run.success
    return True, cursor


def project_tasks(client: LabelStudioClient, title: str) -> tuple[int, list[dict]]:
    (project,) = client.projects_titled(title)
    tasks = list(client.tasks(project["id"]))
    return project["id"], sorted(tasks, key=lambda task: task["data"]["rank"])


def choices(name: str) -> list[dict]:
    return [
        {"from_name": "class", "to_name": "image", "type": "choices", "value": {"choices": [name]}}
    ]


def annotate(client: LabelStudioClient, task: dict, name: str | None) -> dict:
    """Submit (or, for None, skip) a task as the labelling interface does."""
    body = {"result": choices(name) if name else [], "was_cancelled": name is None}
    return client.request("POST", f"/api/tasks/{task['id']}/annotations/", body=body)


def labelled(pipeline) -> pd.DataFrame:
    return pipeline.read("labeled_images", COLLECTION).set_index("image_id")


def ranked(pipeline) -> list[str]:
    return pipeline.read("labeling_priority", COLLECTION)["image_id"].tolist()


def test_send_annotate_and_the_labels_come_back_and_rerank(loop, label_studio: Running) -> None:
    declare_annotation(loop, "city loop")
    before = loop.read("labeling_priority", COLLECTION)
    ok, message = send_batch(loop.defs, loop.instance, COLLECTION)
    assert ok, message
    assert "sent 20 new image(s) as batch 1" in message

    client = LabelStudioClient(label_studio.server.url, label_studio.token)
    project_id, tasks = project_tasks(client, "city loop")
    assert [task_image_id(task) for task in tasks] == before["image_id"].head(20).tolist()
    for task, row in zip(tasks, before.head(20).itertuples(), strict=True):
        assert task["data"]["rank"] == row.rank and task["data"]["reason"] == row.reason
        assert task["data"]["cluster"] == row.cluster
    # Label Studio serves the image in place (no copy) to a signed-in annotator.
    with label_studio.server.browser_session() as browser:
        served = browser.get(label_studio.server.url + tasks[0]["data"]["image"], timeout=30)
    assert served.status_code == 200
    image_root = loop.data_dir / COLLECTION / "images"
    assert served.content == (image_root / before["path"].iloc[0]).read_bytes()

    # An annotator: two classes, one skipped task, one annotation changed after submitting.
    first, second, skipped, changed = tasks[:4]
    annotate(client, first, "highway")
    annotate(client, second, "tunnel")
    annotate(client, skipped, None)
    annotation = annotate(client, changed, "highway")
    client.request(
        "PATCH", f"/api/annotations/{annotation['id']}/", body={"result": choices("night")}
    )

    message, ls_cursor = poll_label_studio(loop, None)
    assert "4 task(s) with new or changed annotations (1 skipped) written to" in message
    (export,) = (loop.data_dir / COLLECTION / "labels" / "label-studio").glob("*.json")
    assert export.name == f"city_loop-project-{project_id}.json"
    exported = json.loads(export.read_text())  # Label Studio's own JSON export format
    assert [task["id"] for task in exported] == sorted(t["id"] for t in tasks[:4])
    assert all({"id", "data", "annotations"} <= set(task) for task in exported)
    again, ls_cursor = poll_label_studio(loop, ls_cursor)
    assert "no new annotations" in again

    applied, labels_cursor = apply_labels(loop, None)
    assert applied
    classes = labelled(loop)
    ids = {
        name: task_image_id(task)
        for name, task in [
            ("first", first),
            ("second", second),
            ("skipped", skipped),
            ("changed", changed),
        ]
    }
    assert classes.loc[ids["first"], "class"] == "highway"
    assert classes.loc[ids["second"], "class"] == "tunnel"
    assert classes.loc[ids["changed"], "class"] == "night"  # the update replaced "highway"
    assert classes.loc[ids["first"], "source_file"] == f"label-studio/{export.name}"
    assert ids["skipped"] not in classes.index
    after = ranked(loop)
    assert set(after) == set(before["image_id"]) - {ids["first"], ids["second"], ids["changed"]}
    assert ids["skipped"] in after  # skipped: still to be labelled
    assert loop.read("labeling_priority", COLLECTION)["rank"].tolist() == list(
        range(1, len(after) + 1)
    )
    assert apply_labels(loop, labels_cursor)[0] is False  # nothing new: no second run

    # Sending again after the re-rank adds only new picks, never a duplicate task.
    ok, message = send_batch(loop.defs, loop.instance, COLLECTION)
    assert ok, message
    _, tasks_now = project_tasks(client, "city loop")
    images_now = [task_image_id(task) for task in tasks_now]
    assert len(images_now) == len(set(images_now))
    window = [i for i in after if i != ids["skipped"]][:20]
    sent_before = {task_image_id(task) for task in tasks}
    assert set(images_now) - sent_before == set(window) - sent_before
    assert send_batch(loop.defs, loop.instance, COLLECTION)[1].endswith(
        f"nothing new to send; the batch is in {label_studio.server.url}/projects/{project_id}/data"
    )
    record = loop.read("annotation_batch", COLLECTION).set_index("image_id")
    assert len(record) == len(images_now)
    assert record.loc[ids["first"], "status"] == "labelled"
    assert record.loc[ids["skipped"], "status"] == "skipped"
    assert set(record["batch"]) == {1, 2}


def test_changed_and_deleted_annotations_and_deleted_tasks(loop, label_studio: Running) -> None:
    declare_annotation(loop, "city deletions")
    ok, message = send_batch(loop.defs, loop.instance, COLLECTION, count=5)
    assert ok, message
    client = LabelStudioClient(label_studio.server.url, label_studio.token)
    _, tasks = project_tasks(client, "city deletions")
    relabelled, deleted, unannotated = tasks[0], tasks[1], tasks[2]
    annotation = annotate(client, relabelled, "highway")
    annotate(client, deleted, "park_road")
    _, ls_cursor = poll_label_studio(loop, None)
    _, labels_cursor = apply_labels(loop, None)
    assert labelled(loop).loc[task_image_id(relabelled), "class"] == "highway"

    # A class changing alone re-ranks: labeled_images' data version covers the classes.
    client.request(
        "PATCH", f"/api/annotations/{annotation['id']}/", body={"result": choices("tunnel")}
    )
    message, ls_cursor = poll_label_studio(loop, ls_cursor)
    assert "1 task(s) with new or changed annotations" in message
    applied, labels_cursor = apply_labels(loop, labels_cursor)
    assert applied and labelled(loop).loc[task_image_id(relabelled), "class"] == "tunnel"

    # Tasks deleted in Label Studio: an annotated one is reported and its labels kept.
    client.request("DELETE", f"/api/tasks/{deleted['id']}/")
    client.request("DELETE", f"/api/tasks/{unannotated['id']}/")
    message, ls_cursor = poll_label_studio(loop, ls_cursor)
    assert "1 task(s) deleted in Label Studio, their labels kept" in message
    assert f"task {deleted['id']} ({task_image_id(deleted)})" in message
    assert apply_labels(loop, labels_cursor)[0] is False
    assert task_image_id(deleted) in labelled(loop).index
    message, ls_cursor = poll_label_studio(loop, ls_cursor)
    assert "deleted" not in message  # reported once

    # An annotation deleted in Label Studio unlabels its image again.
    client.request("DELETE", f"/api/annotations/{annotation['id']}/")
    message, ls_cursor = poll_label_studio(loop, ls_cursor)
    assert "1 task(s) whose annotations were deleted" in message
    applied, labels_cursor = apply_labels(loop, labels_cursor)
    assert applied and task_image_id(relabelled) not in labelled(loop).index
    assert task_image_id(relabelled) in ranked(loop)

    # Deleted tasks are never sent again; the record says what became of each image.
    ok, message = send_batch(loop.defs, loop.instance, COLLECTION, count=5)
    assert ok, message
    _, tasks_now = project_tasks(client, "city deletions")
    images_now = [task_image_id(task) for task in tasks_now]
    assert task_image_id(unannotated) not in images_now and len(images_now) == len(set(images_now))
    record = loop.read("annotation_batch", COLLECTION).set_index("image_id")
    assert record.loc[task_image_id(unannotated), "status"] == "deleted"
    assert record.loc[task_image_id(deleted), "status"] == "labelled"
    assert record.loc[task_image_id(relabelled), "status"] == "waiting"
    # Nothing of this leaves an orphan server: the fixture stops it (and it answers until then).
    assert requests.get(f"{label_studio.server.url}/health", timeout=10).ok
