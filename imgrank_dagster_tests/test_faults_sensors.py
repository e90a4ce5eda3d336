"""Sensor faults: whatever one collection's files hold, the sensors skip it by name and keep
evaluating the others; a labelled set that collapses is held; event metadata stays small.

Real sensors evaluated against a real instance (a copy of the ranked pipeline), real runs.
"""

import os
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml
from fault_timings import record_timing
from sensor_ticks import evaluate_on_pipeline as _evaluate

from imgrank_dagster.defs.ingestion.sensors import collections_sensor
from imgrank_dagster.defs.labels.sensors import labels_sensor
from imgrank_dagster.defs.ranking.sensors import rank_after_ingestion_sensor
from imgrank_dagster.lib.names import APPLY_LABELS_JOB


def _labels_file(pipeline, name: str) -> Path:
    return pipeline.data_dir / name / "labels" / "labels.csv"


def _labels(pipeline, name: str) -> list[str]:
    return pd.read_csv(_labels_file(pipeline, name))["image_id"].tolist()


def _write_labels(pipeline, name: str, ids: list[str]) -> None:
    pd.DataFrame({"image_id": sorted(ids)}).to_csv(_labels_file(pipeline, name), index=False)


def _top(pipeline, name: str, count: int) -> list[str]:
    return pipeline.read("labeling_priority", name)["image_id"].head(count).tolist()


def _collections_yaml(pipeline) -> Path:
    return pipeline.data_dir / "collections.yaml"


def _apply(pipeline, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    job = pipeline.defs.resolve_job_def(APPLY_LABELS_JOB)
    return job.execute_in_process(
        instance=pipeline.instance, partition_key=request.partition_key, tags=request.tags
    )


def test_a_deeply_nested_json_label_file_is_skipped_by_name(fresh_pipeline) -> None:
    """It raised RecursionError out of the sensor: the tick failed for every collection."""
    pipeline = fresh_pipeline
    folder = pipeline.data_dir / "city" / "labels"
    (folder / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    _, cursor = _evaluate(pipeline, labels_sensor)
    _write_labels(pipeline, "town", _labels(pipeline, "town") + _top(pipeline, "town", 1))
    result, cursor = _evaluate(pipeline, labels_sensor, cursor)
    # town is still evaluated and re-ranked; city gets a run of its label_files_readable check
    # alone (the broken file shows there), never a re-rank.
    assert isinstance(result, dg.SensorResult)
    by_collection = {r.partition_key: r for r in result.run_requests}
    assert by_collection["town"].asset_check_keys is None
    check = dg.AssetCheckKey(dg.AssetKey("labeled_images"), "label_files_readable")
    assert by_collection["city"].asset_check_keys == [check]
    (folder / "nested.json").write_text("[" * 100_001 + "]" * 100_001)
    again, _ = _evaluate(pipeline, labels_sensor, cursor)
    (request,) = again.run_requests
    job = pipeline.defs.resolve_job_def(labels_sensor.job_name)
    run = job.get_subset(asset_selection=set(), asset_check_selection={check}).execute_in_process(
        instance=pipeline.instance, partition_key="city", tags=request.tags
    )
    (evaluation,) = run.get_asset_check_evaluations()
    problem = evaluation.metadata["problem"].value
    assert not evaluation.passed
    assert "nested.json" in problem and "nested too deeply" in problem


def test_a_byte_that_is_not_utf8_in_collections_yaml_names_file_and_line(fresh_pipeline) -> None:
    path = _collections_yaml(fresh_pipeline)
    path.write_bytes(b"# caf\xe9\n" + path.read_bytes())
    for sensor in (collections_sensor, labels_sensor, rank_after_ingestion_sensor):
        result, _ = _evaluate(fresh_pipeline, sensor)
        assert isinstance(result, dg.SkipReason), sensor.name
        message = result.skip_message
        assert str(path) in message and "line 1, column 6" in message and "UTF-8" in message


def test_a_collection_declared_twice_is_refused_naming_both_lines(fresh_pipeline) -> None:
    """PyYAML kept the last one silently."""
    path = _collections_yaml(fresh_pipeline)
    text = path.read_text()
    town = text[text.index("  town:") :]
    path.write_text(text + town)
    result, _ = _evaluate(fresh_pipeline, labels_sensor)
    assert isinstance(result, dg.SkipReason)
    assert "duplicate key 'town'" in result.skip_message and str(path) in result.skip_message


def test_one_invalid_collection_does_not_stop_the_others(fresh_pipeline) -> None:
    pipeline = fresh_pipeline
    document = yaml.safe_load(_collections_yaml(pipeline).read_text())
    document["collections"]["city"]["strategy"] = "best"
    _collections_yaml(pipeline).write_text(yaml.safe_dump(document))
    _, cursor = _evaluate(pipeline, labels_sensor)
    _write_labels(pipeline, "town", _labels(pipeline, "town") + _top(pipeline, "town", 1))
    result, _ = _evaluate(pipeline, labels_sensor, cursor)
    assert [r.partition_key for r in result.run_requests] == ["town"]
    skipped, _ = _evaluate(pipeline, collections_sensor)
    assert "collection 'city' is invalid" in skipped.skip_message
    assert "collections.city.strategy" in skipped.skip_message


def test_an_emptied_labels_file_is_held_until_saved_again(fresh_pipeline) -> None:
    pipeline = fresh_pipeline
    ranked = _labels(pipeline, "city")
    assert len(ranked) >= 3
    _, cursor = _evaluate(pipeline, labels_sensor)
    _labels_file(pipeline, "city").write_text("image_id\n")
    held, cursor = _evaluate(pipeline, labels_sensor, cursor)
    assert isinstance(held, dg.SkipReason)
    assert "city: labels change HELD" in held.skip_message
    assert f"the ranking used {len(ranked)}" in held.skip_message
    still, cursor = _evaluate(pipeline, labels_sensor, cursor)  # nothing changed: still held
    assert "HELD" in still.skip_message
    before = pipeline.read("labeling_priority", "city")
    # Saved again with the same content: confirmed.
    stat = _labels_file(pipeline, "city").stat()
    _labels_file(pipeline, "city").write_text("image_id\n")
    os.utime(_labels_file(pipeline, "city"), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    confirmed, _ = _evaluate(pipeline, labels_sensor, cursor)
    assert isinstance(confirmed, dg.SensorResult)
    assert _apply(pipeline, confirmed.run_requests[0]).success
    assert len(pipeline.read("labeling_priority", "city")) > len(before)
    assert pipeline.read("labeled_images", "city").empty


def test_a_half_written_labels_file_is_held_and_the_finished_one_applied(fresh_pipeline) -> None:
    pipeline = fresh_pipeline
    ranked = _labels(pipeline, "city")
    new = ranked + _top(pipeline, "city", 4)
    _, cursor = _evaluate(pipeline, labels_sensor)
    full = pd.DataFrame({"image_id": sorted(new)}).to_csv(index=False)
    _labels_file(pipeline, "city").write_text(full[: len(full) // 5])  # an export in progress
    held, cursor = _evaluate(pipeline, labels_sensor, cursor)
    assert isinstance(held, dg.SkipReason) and "HELD" in held.skip_message
    _labels_file(pipeline, "city").write_text(full)
    applied, _ = _evaluate(pipeline, labels_sensor, cursor)
    assert isinstance(applied, dg.SensorResult)
    assert _apply(pipeline, applied.run_requests[0]).success
    assert sorted(pipeline.read("labeled_images", "city")["image_id"]) == sorted(new)


def test_allow_labels_shrink_applies_at_once(fresh_pipeline) -> None:
    pipeline = fresh_pipeline
    document = yaml.safe_load(_collections_yaml(pipeline).read_text())
    document["collections"]["city"]["allow_labels_shrink"] = True
    _collections_yaml(pipeline).write_text(yaml.safe_dump(document))
    _, cursor = _evaluate(pipeline, labels_sensor)
    _write_labels(pipeline, "city", _labels(pipeline, "city")[:1])
    result, _ = _evaluate(pipeline, labels_sensor, cursor)
    assert isinstance(result, dg.SensorResult)


def _storage_bytes(home: Path) -> int:
    return sum(f.stat().st_size for f in home.rglob("*") if f.is_file())


def test_a_50_mb_label_name_stays_out_of_the_event_log(fresh_pipeline) -> None:
    """It once grew the Dagster database by about 300 MB in one run."""
    pipeline = fresh_pipeline
    home = pipeline.data_dir.parent / "dagster_home"
    huge = "x" * 50_000_000
    labels = _labels(pipeline, "city")
    text_file = pipeline.data_dir / "city" / "labels.txt"  # a TXT line is taken whole
    text_file.write_text("\n".join([*labels, _top(pipeline, "city", 1)[0], huge]) + "\n")
    document = yaml.safe_load(_collections_yaml(pipeline).read_text())
    document["collections"]["city"]["labels"] = "city/labels.txt"
    _collections_yaml(pipeline).write_text(yaml.safe_dump(document))
    before = _storage_bytes(home)
    request = dg.RunRequest(partition_key="city", tags={})
    result = _apply(pipeline, request)
    assert result.success
    grown = _storage_bytes(home) - before
    assert grown < 5_000_000, grown
    record_timing("50 MB label name: Dagster storage growth of the run", grown / 1e6, "MB")
    (materialization,) = result.asset_materializations_for_node("labeled_images")
    summary = materialization.metadata["label_summary"].value
    assert summary["unknown"] == 1 and len(summary["unknown_examples"][0]) < 300
    assert sum(len(str(value.value)) for value in materialization.metadata.values()) < 100_000
