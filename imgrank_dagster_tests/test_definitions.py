"""The definitions load, their public names do not change by accident, and loading them stays
light."""

import inspect
import json
import subprocess
import sys

import dagster as dg
import pytest

from imgrank_dagster.core.config import ScoringSettings
from imgrank_dagster.core.ranking import clustering, scores, strategies, study
from imgrank_dagster.definitions import defs
from imgrank_dagster.lib import names

# asset -> group: the folders of imgrank_dagster/defs/ are the groups.
ASSET_GROUPS = {
    "kartaview_sequences": "kartaview",
    "raw_image_sequences": "ingestion",
    "image_features": "ingestion",
    "collection_images": "features",
    "feature_matrix": "features",
    "labeled_images": "labels",
    "cluster_assignments": "ranking",
    "similar_pairs": "ranking",
    "neighbour_graph": "ranking",
    "focus_weights": "ranking",
    "image_base_scores": "ranking",
    "cluster_metrics": "ranking",
    "image_scores": "ranking",
    "labeling_priority": "ranking",
    "embedding_map": "views",
    "ranking_report": "views",
    "fiftyone_dataset": "views",
    "annotation_batch": "annotation",
}


def test_definitions_load() -> None:
    repository = defs.get_repository_def()
    assert repository.get_all_jobs()
    dg.Definitions.validate_loadable(defs)


def test_the_package_loader_finds_what_the_defs_folder_loader_finds() -> None:
    """definitions.py loads defs/ module by module (lighter); a component added to defs/ (a
    defs.yaml) would be found only by load_from_defs_folder: this fails then."""
    from imgrank_dagster.definitions import PROJECT_ROOT, load_defs_package

    def contents(definitions: dg.Definitions) -> dict[str, object]:
        merged = dg.Definitions.merge(definitions, dg.Definitions(resources=defs.resources))
        graph = merged.resolve_asset_graph()
        repository = merged.get_repository_def()
        return {
            "assets": {
                key.to_user_string(): (
                    graph.get(key).group_name,
                    graph.get(key).code_version,
                    graph.get(key).description,
                    sorted(graph.get(key).metadata),
                    str(graph.get(key).automation_condition),
                )
                for key in graph.get_all_asset_keys()
            },
            "checks": sorted(str(key) for key in graph.asset_check_keys),
            "jobs": sorted(job.name for job in repository.get_all_jobs()),
            "sensors": sorted(sensor.name for sensor in repository.sensor_defs),
            "schedules": sorted(schedule.name for schedule in repository.schedule_defs),
        }

    assert contents(load_defs_package()) == contents(
        dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
    )


def test_asset_keys_and_groups_snapshot() -> None:
    graph = defs.resolve_asset_graph()
    found = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert found == ASSET_GROUPS


def test_jobs_sensors_schedules_snapshot() -> None:
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")} == {
        "apply_labels",
        "discover_kartaview",
        "ingest_sequences",
        "rank_collection",
        "refresh_views",
        "send_annotation_batch",
    }
    assert {sensor.name for sensor in repository.sensor_defs} == {
        "collections_sensor",
        "dead_runs_sensor",
        "ingestion_retry_sensor",
        "kartaview_sequences_sensor",
        "label_studio_sensor",
        "labels_sensor",
        "rank_after_ingestion_sensor",
        "visualization_automation_sensor",
    }
    assert {schedule.name for schedule in repository.schedule_defs} == {"daily_refresh_schedule"}


def test_every_name_in_the_names_module_exists() -> None:
    graph = defs.resolve_asset_graph()
    keys = {value for value in vars(names).values() if isinstance(value, dg.AssetKey)}
    assert keys == set(graph.get_all_asset_keys())
    groups = {value for name, value in vars(names).items() if name.endswith("_GROUP")}
    assert groups == set(ASSET_GROUPS.values())
    jobs = {value for name, value in vars(names).items() if name.endswith("_JOB")}
    repository = defs.get_repository_def()
    assert jobs == {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")}


def test_the_ranking_job_covers_features_labels_and_ranking() -> None:
    job = defs.resolve_job_def(names.RANK_COLLECTION_JOB)
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    expected = {a for a, g in ASSET_GROUPS.items() if g in ("features", "labels", "ranking")}
    assert selected == expected


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
    assert downstream == {
        "labeling_priority",
        "ranking_report",
        "fiftyone_dataset",
        "annotation_batch",
    }


def test_every_asset_is_partitioned_and_described() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.partitions_def is not None, key
        assert node.description, key
        assert node.code_version, key


def test_loading_the_definitions_imports_no_model_plotting_or_fiftyone_code() -> None:
    heavy = ["pandas", "numpy", "pyarrow", "sklearn", "scipy", "matplotlib", "fiftyone"]
    heavy += ["fastdup", "PIL", "requests"]
    # The cluster and kubernetes profiles' libraries load only where a profile uses them.
    heavy += ["celery", "kombu", "dagster_celery", "psycopg2", "boto3", "s3fs", "kubernetes"]
    heavy += ["dagster_k8s", "dagster_aws", "dagster_postgres"]
    # (definitions.py does not let Dagster import the component registries of the installed
    # integration libraries: dagster-aws' imports boto3.)
    code = (
        "import json, sys; import dagster; dagsters = set(sys.modules); "
        "import imgrank_dagster.definitions; "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules and m not in dagsters]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def _defaults(function: object) -> dict[str, object]:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


@pytest.mark.parametrize(
    ("params", "function"),
    [
        ("clustering_params", clustering.choose_k_and_cluster),
        ("similar_pairs_params", study.collection_similar_pairs),
        ("base_scores_params", study.base_scores),
        ("score_weights", scores.combine_score),
        ("priority_params", scores.priority_groups),
        ("region_params", scores.rank_images),
        ("region_params", strategies.rank),
    ],
)
def test_the_settings_defaults_are_the_algorithms_defaults(params: str, function: object) -> None:
    """The collections file's defaults and the algorithms' keyword defaults stay in step."""
    given = getattr(ScoringSettings(), params)
    defaults = _defaults(function)
    assert given == {name: defaults[name] for name in given}


def test_run_study_takes_every_setting_with_the_same_default() -> None:
    settings = ScoringSettings().model_dump()
    defaults = _defaults(study.run_study)
    assert {name: defaults[name] for name in settings} == settings
