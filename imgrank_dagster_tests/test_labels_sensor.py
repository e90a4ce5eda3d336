"""labels_sensor on a real instance: cheap checks, one run per change, incremental re-ranking."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from imgrank_dagster.core.labels import labelled_set_hash
from imgrank_dagster.defs.labels.jobs import LABEL_DEPENDENT
from imgrank_dagster.defs.labels.sensors import labels_sensor
from imgrank_dagster.lib.names import VIEWS_GROUP
from imgrank_dagster.lib.resources import build_resources


def evaluate(pipeline, cursor: str | None):
    resources = build_resources(data_dir=pipeline.data_dir, warehouse=str(pipeline.warehouse))
    with dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=cursor,
        resources=resources,
        definitions=pipeline.defs,
    ) as context:
        result = labels_sensor(context)
        return result, context.cursor if not isinstance(result, dg.SensorResult) else result.cursor


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
        instance=pipeline.instance, partition_key=request.partition_key, tags=request.tags
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


def test_malformed_file_gives_a_skip_and_no_run(fresh_pipeline) -> None:
    _, cursor = evaluate(fresh_pipeline, None)
    before = fresh_pipeline.read("labeling_priority", "city")
    labels = fresh_pipeline.data_dir / "city" / "labels" / "labels.csv"
    labels.write_text('image_id\n"seq-000/frame_0001\nseq-000/frame_0002\n')
    result, _ = evaluate(fresh_pipeline, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "labels.csv" in result.skip_message and "city" in result.skip_message
    pd.testing.assert_frame_equal(fresh_pipeline.read("labeling_priority", "city"), before)


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
