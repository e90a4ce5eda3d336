"""The definitions load, and their public names do not change by accident."""

import dagster as dg

from imgrank_dagster.definitions import defs


def test_definitions_load() -> None:
    repository = defs.get_repository_def()
    assert repository.get_all_jobs()
    dg.Definitions.validate_loadable(defs)


def test_asset_keys_snapshot() -> None:
    keys = sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    assert keys == sorted(
        [
            "kartaview_sequences",
            "raw_image_sequences",
            "image_features",
            "collection_images",
            "feature_matrix",
            "labeled_images",
            "cluster_assignments",
            "similar_pairs",
            "neighbour_graph",
            "image_base_scores",
            "cluster_metrics",
            "image_scores",
            "labeling_priority",
            "embedding_map",
            "ranking_report",
            "fiftyone_dataset",
        ]
    )


def test_jobs_sensors_schedules_snapshot() -> None:
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")} == {
        "apply_labels",
        "discover_kartaview",
        "ingest_sequences",
        "rank_collection",
        "refresh_views",
    }
    assert {sensor.name for sensor in repository.sensor_defs} == {
        "collections_sensor",
        "kartaview_sequences_sensor",
        "labels_sensor",
        "rank_after_ingestion_sensor",
        "visualization_automation_sensor",
    }
    assert {schedule.name for schedule in repository.schedule_defs} == {"daily_refresh_schedule"}


def test_label_dependent_assets_are_exactly_downstream_of_the_labelled_set() -> None:
    from imgrank_dagster.defs.labels.jobs import LABEL_DEPENDENT

    graph = defs.resolve_asset_graph()
    selected = {key.to_user_string() for key in LABEL_DEPENDENT.resolve(graph)}
    assert selected == {"labeled_images", "cluster_metrics", "image_scores", "labeling_priority"}
    # The views of the ranking are downstream of it but outside the labels fast path; the
    # embedding map is label-independent.
    downstream = {
        key.to_user_string()
        for key in dg.AssetSelection.keys("labeling_priority").downstream().resolve(graph)
    }
    assert downstream == {"labeling_priority", "ranking_report", "fiftyone_dataset"}


def test_every_asset_is_partitioned_and_described() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.partitions_def is not None, key
        assert node.description, key
        assert node.code_version, key
