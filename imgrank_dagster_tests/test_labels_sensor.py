"""labels_sensor on a real instance: cheap checks, one run per change, incremental re-ranking."""

import threading
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from sensor_ticks import evaluate_on_pipeline

from imgrank_dagster.core.labels import labelled_set_hash
from imgrank_dagster.defs.labels.jobs import LABEL_DEPENDENT
from imgrank_dagster.defs.labels.sensors import (
    DEFAULT_WATCH_SECONDS,
    LABELS_WATCH_ENV,
    labels_sensor,
    watch_seconds,
)
from imgrank_dagster.lib.names import LANE_TAG, VIEWS_GROUP, VIEWS_LANE
from imgrank_dagster.lib.resources import build_resources


def evaluate(pipeline, cursor: str | None):
    return evaluate_on_pipeline(pipeline, labels_sensor, cursor)


def labels_file(pipeline, collection: str) -> Path:
    return pipeline.data_dir / collection / "labels" / "labels.csv"


def write_labels(pipeline, collection: str, image_ids: list[str]) -> None:
    frame = pd.DataFrame({"image_id": sorted(image_ids)})
    frame.to_csv(labels_file(pipeline, collection), index=False)


def labels_of(pipeline, collection: str) -> list[str]:
    return pd.read_csv(labels_file(pipeline, collection))["image_id"].tolist()


def unlabelled(pipeline, collection: str, count: int) -> list[str]:
    ranking = pipeline.read("labeling_priority", collection)
    return ranking["image_id"].head(count).tolist()


def execute(pipeline, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run the request as the daemon would: the sensor's job, with the request's tags."""
    job = pipeline.defs.resolve_job_def(labels_sensor.job_name)
    result = job.execute_in_process(
        instance=pipeline.instance,
        partition_key=request.partition_key,
        tags=request.tags,
        asset_selection=request.asset_selection,
    )
    assert result.success
    return result


def test_no_change_gives_a_skip(fresh_pipeline) -> None:
    result, cursor = evaluate(fresh_pipeline, None)
    assert isinstance(result, dg.SkipReason)
    assert "no labelled set changed" in result.skip_message
    again, _ = evaluate(fresh_pipeline, cursor)
    assert isinstance(again, dg.SkipReason)


def test_a_change_gives_one_request_and_the_same_labels_again_nothing(fresh_pipeline) -> None:
    _, cursor = evaluate(fresh_pipeline, None)
    new_labels = labels_of(fresh_pipeline, "city") + unlabelled(fresh_pipeline, "city", 3)
    write_labels(fresh_pipeline, "city", new_labels)
    result, cursor = evaluate(fresh_pipeline, cursor)
    assert isinstance(result, dg.SensorResult)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.partition_key == "city"
    assert labelled_set_hash(new_labels)[:16] in request.run_key
    assert request.tags["imgrank/labelled_set"] == labelled_set_hash(new_labels)
    selected = {
        key.to_user_string()
        for key in LABEL_DEPENDENT.resolve(fresh_pipeline.defs.resolve_asset_graph())
    }
    job = fresh_pipeline.defs.resolve_job_def(labels_sensor.job_name)
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} == selected
    assert "feature_matrix" not in selected and "cluster_assignments" not in selected
    # The same labels written again (new mtime, same content): nothing.
    write_labels(fresh_pipeline, "city", list(reversed(new_labels)))
    again, _ = evaluate(fresh_pipeline, cursor)
    assert isinstance(again, dg.SkipReason)


def test_a_change_during_the_watch_is_seen_by_the_same_evaluation(
    fresh_pipeline, monkeypatch
) -> None:
    """As under the daemon: an evaluation that finds nothing watches the label files' stats
    and evaluates again when they change, instead of leaving the change to the next tick."""
    _, cursor = evaluate(fresh_pipeline, None)
    new_labels = labels_of(fresh_pipeline, "city") + unlabelled(fresh_pipeline, "city", 2)
    monkeypatch.setenv(LABELS_WATCH_ENV, "20")
    writer = threading.Timer(0.5, write_labels, args=(fresh_pipeline, "city", new_labels))
    writer.start()
    try:
        result, cursor = evaluate(fresh_pipeline, cursor)
    finally:
        writer.join()
    assert isinstance(result, dg.SensorResult)
    assert [request.partition_key for request in result.run_requests] == ["city"]
    assert result.run_requests[0].tags["imgrank/labelled_set"] == labelled_set_hash(new_labels)
    # Nothing changes during a short watch: a skip, and the cursor already has the change.
    monkeypatch.setenv(LABELS_WATCH_ENV, "0.3")
    again, _ = evaluate(fresh_pipeline, cursor)
    assert isinstance(again, dg.SkipReason)


@pytest.mark.parametrize("value", ["soon", "-1", "3600"])
def test_a_bad_watch_setting_names_itself(monkeypatch, value: str) -> None:
    monkeypatch.setenv(LABELS_WATCH_ENV, value)
    with pytest.raises(ValueError, match=LABELS_WATCH_ENV):
        watch_seconds()
    monkeypatch.delenv(LABELS_WATCH_ENV)
    assert watch_seconds() == DEFAULT_WATCH_SECONDS


def test_going_back_to_earlier_labels_is_a_new_run_key(fresh_pipeline) -> None:
    original = labels_of(fresh_pipeline, "city")
    _, cursor = evaluate(fresh_pipeline, None)
    write_labels(fresh_pipeline, "city", original + unlabelled(fresh_pipeline, "city", 2))
    first, cursor = evaluate(fresh_pipeline, cursor)
    execute(fresh_pipeline, first.run_requests[0])
    write_labels(fresh_pipeline, "city", original)
    back, _ = evaluate(fresh_pipeline, cursor)
    assert len(back.run_requests) == 1
    assert back.run_requests[0].run_key != first.run_requests[0].run_key


def test_a_malformed_file_fails_a_check_and_keeps_the_ranking(fresh_pipeline) -> None:
    """No re-rank: one run of the label_files_readable check, which fails naming file and line."""
    pipeline = fresh_pipeline
    _, cursor = evaluate(pipeline, None)
    before = pipeline.read("labeling_priority", "city")
    labels = pipeline.data_dir / "city" / "labels" / "labels.csv"
    labels.write_text('image_id\n"seq-000/frame_0001\nseq-000/frame_0002\n')
    result, cursor = evaluate(pipeline, cursor)
    assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
    (request,) = result.run_requests
    check = dg.AssetCheckKey(dg.AssetKey("labeled_images"), "label_files_readable")
    assert request.partition_key == "city"
    assert request.asset_selection == [] and request.asset_check_keys == [check]
    # The same problem again: the same run key, so the daemon starts no second run.
    again, _ = evaluate(pipeline, cursor)
    assert [r.run_key for r in again.run_requests] == [request.run_key]
    # As the daemon runs the request: the sensor's job, only the checks it names.
    job = pipeline.defs.resolve_job_def(labels_sensor.job_name)
    run = job.get_subset(asset_selection=set(), asset_check_selection={check}).execute_in_process(
        instance=pipeline.instance, partition_key="city", tags=request.tags
    )
    (evaluation,) = run.get_asset_check_evaluations()
    assert not evaluation.passed
    problem = evaluation.metadata["problem"].value
    assert "labels.csv" in problem and "line 2" in problem
    pd.testing.assert_frame_equal(pipeline.read("labeling_priority", "city"), before)
    assert not run.get_asset_materialization_events()


def test_names_that_match_no_image_or_several_fail_a_warning_check(fresh_pipeline) -> None:
    pipeline = fresh_pipeline
    _, cursor = evaluate(pipeline, None)
    known = labels_of(pipeline, "city")
    path = pipeline.data_dir / "city" / "labels" / "labels.csv"
    path.write_text("image_id\n" + "".join(f"{name}\n" for name in known) + "seq-000/typo\n")
    result, _ = evaluate(pipeline, cursor)
    run = execute(pipeline, result.run_requests[0])
    evaluations = {e.check_name: e for e in run.get_asset_check_evaluations()}
    names = evaluations["label_names_match"]
    assert not names.passed and names.severity == dg.AssetCheckSeverity.WARN
    problems = names.metadata["problems"].value.records
    assert [(r.data["name"], r.data["line"]) for r in problems] == [
        ("seq-000/typo", str(len(known) + 2))
    ]
    # Nothing to re-rank: only labeled_images ran, to show the problem.
    assert {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()} == {
        "labeled_images"
    }


def test_two_collections_changing_together_give_two_requests(fresh_pipeline) -> None:
    _, cursor = evaluate(fresh_pipeline, None)
    for name in ["city", "town"]:
        write_labels(
            fresh_pipeline,
            name,
            labels_of(fresh_pipeline, name) + unlabelled(fresh_pipeline, name, 1),
        )
    result, _ = evaluate(fresh_pipeline, cursor)
    assert sorted(r.partition_key for r in result.run_requests) == ["city", "town"]


def test_the_cursor_survives_a_restart(fresh_pipeline) -> None:
    _, cursor = evaluate(fresh_pipeline, None)
    write_labels(
        fresh_pipeline,
        "city",
        labels_of(fresh_pipeline, "city") + unlabelled(fresh_pipeline, "city", 1),
    )
    first, cursor = evaluate(fresh_pipeline, cursor)
    assert len(first.run_requests) == 1
    # A restarted daemon starts from the stored cursor string: the change is not seen twice.
    again, _ = evaluate(fresh_pipeline, str(cursor))
    assert isinstance(again, dg.SkipReason)


def test_labels_covering_a_cluster_reorder_it_without_touching_features(fresh_pipeline) -> None:
    pipeline = fresh_pipeline
    metrics = pipeline.read("cluster_metrics", "city")
    assignments = pipeline.read("cluster_assignments", "city")
    ranking_before = pipeline.read("labeling_priority", "city").set_index("image_id")
    candidates = metrics[(metrics["priority_group"] == 1) & (metrics["size"] >= 4)]
    if candidates.empty:
        pytest.fail("the generated collection should have an unlabelled cluster of 4+ images")
    cluster = int(candidates.sort_values("size").iloc[0]["cluster"])
    members = sorted(assignments.loc[assignments["cluster"] == cluster, "image_id"])
    kept_unlabelled = members[:2]
    counts_before = {
        asset: pipeline.materialization_count(asset, "city")
        for asset in [
            "collection_images",
            "feature_matrix",
            "cluster_assignments",
            "similar_pairs",
            "image_base_scores",
            "neighbour_graph",
        ]
    }
    _, cursor = evaluate(pipeline, None)
    write_labels(pipeline, "city", labels_of(pipeline, "city") + members[2:])
    result, _ = evaluate(pipeline, cursor)
    assert len(result.run_requests) == 1
    execute(pipeline, result.run_requests[0])

    after_metrics = pipeline.read("cluster_metrics", "city").set_index("cluster")
    # size - 2 of size labelled: 30 % or more, so the study's group 4.
    assert after_metrics.loc[cluster, "labelled_count"] == len(members) - 2
    assert after_metrics.loc[cluster, "priority_group"] == 4
    ranking_after = pipeline.read("labeling_priority", "city").set_index("image_id")
    assert not set(members[2:]) & set(ranking_after.index)
    for image in kept_unlabelled:
        assert ranking_after.loc[image, "priority_group"] == 4
        assert ranking_after.loc[image, "rank"] > ranking_before.loc[image, "rank"]
        region = ranking_after.loc[image, "region"]
        same_region = ranking_after[ranking_after["region"] == region]
        # Within its region, nothing of a lower priority group comes after it.
        below = same_region[same_region["rank"] > ranking_after.loc[image, "rank"]]
        assert (below["priority_group"] == 4).all()
    for asset, count in counts_before.items():
        assert pipeline.materialization_count(asset, "city") == count, asset
    assert pipeline.materialization_count("labeling_priority", "city") == 2


def test_views_follow_a_label_change_run(fresh_pipeline) -> None:
    """The report and the FiftyOne dataset are requested after the ranking changed."""
    pipeline = fresh_pipeline
    views = dg.AssetSelection.groups(VIEWS_GROUP)
    before = dg.evaluate_automation_conditions(
        defs=pipeline.defs, instance=pipeline.instance, asset_selection=views
    )
    _, cursor = evaluate(pipeline, None)
    write_labels(pipeline, "city", labels_of(pipeline, "city") + unlabelled(pipeline, "city", 2))
    result, _ = evaluate(pipeline, cursor)
    execute(pipeline, result.run_requests[0])
    after = dg.evaluate_automation_conditions(
        defs=pipeline.defs, instance=pipeline.instance, asset_selection=views, cursor=before.cursor
    )
    for asset in ["ranking_report", "fiftyone_dataset"]:
        assert "city" in after.get_requested_partitions(dg.AssetKey(asset)), asset
        assert "town" not in after.get_requested_partitions(dg.AssetKey(asset)), asset


def test_a_ranking_that_lands_while_a_refresh_runs_is_refreshed_again(
    fresh_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report reflects the newest ranking within one more refresh, whatever was running.

    A report refresh is held in the middle of its step (it has read the old ranking) while a
    label change lands a new ranking; once the refresh finishes, the automation condition must
    request the report again (Dagster's eager() drops that update).
    """
    import threading

    from imgrank_dagster.core.views import report

    pipeline = fresh_pipeline
    views = dg.AssetSelection.assets("ranking_report")
    resources = build_resources(data_dir=pipeline.data_dir, warehouse=str(pipeline.warehouse))

    def conditions(cursor=None):
        return dg.evaluate_automation_conditions(
            defs=pipeline.defs, instance=pipeline.instance, asset_selection=views, cursor=cursor
        )

    started, release = threading.Event(), threading.Event()
    write_report = report.write_report

    def held_write(*args, **kwargs):
        started.set()
        assert release.wait(120)
        return write_report(*args, **kwargs)

    monkeypatch.setattr(report, "write_report", held_write)
    evaluation = conditions()
    refresh_result = {}

    def refresh() -> None:
        refresh_result["run"] = dg.materialize(
            list(pipeline.defs.assets),
            selection=["ranking_report"],
            partition_key="city",
            instance=pipeline.instance,
            resources=resources,
            tags={LANE_TAG: VIEWS_LANE},  # as visualization_automation_sensor tags its runs
        )

    refresh_thread = threading.Thread(target=refresh)
    refresh_thread.start()
    assert started.wait(120)
    # The refresh is in progress and has read the current ranking: a label change lands now.
    _, cursor = evaluate(pipeline, None)
    write_labels(pipeline, "city", labels_of(pipeline, "city") + unlabelled(pipeline, "city", 2))
    result, _ = evaluate(pipeline, cursor)
    execute(pipeline, result.run_requests[0])
    evaluation = conditions(evaluation.cursor)
    assert "city" not in evaluation.get_requested_partitions(dg.AssetKey("ranking_report"))
    release.set()
    refresh_thread.join(timeout=120)
    assert refresh_result["run"].success
    evaluation = conditions(evaluation.cursor)
    assert "city" in evaluation.get_requested_partitions(dg.AssetKey("ranking_report"))


def test_labels_with_two_classes_turn_the_coverage_ranking(fresh_pipeline) -> None:
    """A label column with two classes: the label-change run trains the class probe, records
    its cross-validated accuracy and names the classes in the picks' reasons."""
    pipeline = fresh_pipeline
    before = pipeline.read("labeling_priority", "town")
    labelled = sorted(labels_of(pipeline, "town") + before["image_id"].head(6).tolist())
    _, cursor = evaluate(pipeline, None)
    classes = ["car" if row % 2 else "sign" for row in range(len(labelled))]
    pd.DataFrame({"image_id": labelled, "label": classes}).to_csv(
        labels_file(pipeline, "town"), index=False
    )
    result, _ = evaluate(pipeline, cursor)
    assert len(result.run_requests) == 1
    execute(pipeline, result.run_requests[0])

    event = pipeline.instance.get_latest_materialization_event(
        dg.AssetKey("labeling_priority")
    ).asset_materialization
    assert event.partition == "town"
    probe = event.metadata["class_probe"].value
    assert probe["classes"] == ["car", "sign"] and probe["trained_on"] == len(labelled)
    assert 0.0 <= event.metadata["class_probe_cv_accuracy"].value <= 1.0
    after = pipeline.read("labeling_priority", "town")
    coverage = after[after["region"] == "coverage"]
    assert coverage["reason"].str.contains(r"class probe: (?:car|sign) or (?:car|sign)\?").all()
    assert (after["score"].diff().dropna() < 0).all()
