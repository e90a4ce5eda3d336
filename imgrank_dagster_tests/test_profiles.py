"""Deployment profiles are chosen by configuration only, and a service that does not answer at
start gives an error naming the service and its setting (nothing listens on the ports used)."""

import os
import re
import subprocess
import sys

import dagster as dg
import pytest

from imgrank_dagster.definitions import build_definitions
from imgrank_dagster.devtools.cluster import free_port
from imgrank_dagster.lib import names
from imgrank_dagster.lib.executors import configured_executor_name, imgrank_celery_executor
from imgrank_dagster.lib.services import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    EXECUTOR_ENV,
    POSTGRES_URL_ENV,
    ServiceUnavailable,
    check_broker,
    check_postgres,
    check_services,
)

pytest.importorskip("dagster_celery", reason="the `cluster` extra is not installed")


def _dead_address() -> str:
    return f"127.0.0.1:{free_port()}"  # bound, released: nothing listens there


def test_unreachable_postgres_names_the_service_the_setting_and_the_address() -> None:
    address = _dead_address()
    with pytest.raises(ServiceUnavailable) as error:
        check_postgres(f"postgresql+psycopg2://imgrank:s3cret@{address}/dagster")
    message = str(error.value)
    assert message.startswith("PostgreSQL (Dagster's run and event storage) is unreachable at")
    assert POSTGRES_URL_ENV in message and address in message
    assert "s3cret" not in message and "***" in message


def test_a_postgres_url_without_the_driver_is_refused_with_the_fix() -> None:
    with pytest.raises(ServiceUnavailable, match=r"must start with postgresql\+psycopg2://"):
        check_postgres(f"postgresql://imgrank@{_dead_address()}/dagster")


def test_unreachable_broker_names_the_service_the_setting_and_the_address() -> None:
    address = _dead_address()
    with pytest.raises(ServiceUnavailable) as error:
        check_broker(f"redis://{address}/0")
    message = str(error.value)
    assert message.startswith("the Celery broker is unreachable at")
    assert CELERY_BROKER_ENV in message and address in message


def test_check_services_lists_every_service_that_does_not_answer() -> None:
    environ = {
        EXECUTOR_ENV: "celery",
        POSTGRES_URL_ENV: f"postgresql+psycopg2://imgrank@{_dead_address()}/dagster",
        CELERY_BROKER_ENV: f"redis://{_dead_address()}/0",
        CELERY_BACKEND_ENV: f"redis://{_dead_address()}/1",
    }
    problems = check_services(environ)
    assert [problem.split(" is unreachable")[0] for problem in problems] == [
        "PostgreSQL (Dagster's run and event storage)",
        "the Celery broker",
        "the Celery result backend",
    ]
    missing = check_services({EXECUTOR_ENV: "celery"})
    assert missing == [
        f"{CELERY_BROKER_ENV} is not set: it must point at the Celery broker (redis://...)"
    ]


def _cli(*arguments: str, **environ: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", "/tmp"), **environ}
    return subprocess.run(
        [sys.executable, "-m", "imgrank_dagster.cli", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_worker_command_refuses_to_start_without_its_broker(tmp_path) -> None:
    broker = f"redis://{_dead_address()}/0"
    result = _cli(
        "worker",
        "--name",
        "w1",
        DAGSTER_HOME=str(tmp_path),
        **{EXECUTOR_ENV: "celery", CELERY_BROKER_ENV: broker, CELERY_BACKEND_ENV: broker},
    )
    assert result.returncode == 1
    assert "worker w1 not started" in result.stderr
    assert f"the Celery broker is unreachable at {broker} ({CELERY_BROKER_ENV})" in result.stderr
    assert not (tmp_path / "celery").exists()  # dagster-celery was never started


def test_check_services_command_exits_non_zero_naming_postgres() -> None:
    address = _dead_address()
    url = f"postgresql+psycopg2://imgrank@{address}/dagster"
    result = _cli("check-services", **{POSTGRES_URL_ENV: url})
    assert result.returncode == 1
    assert "PostgreSQL (Dagster's run and event storage) is unreachable at" in result.stderr
    assert address in result.stderr and POSTGRES_URL_ENV in result.stderr


@dg.op
def _nothing() -> None:
    pass


def celery_job() -> dg.JobDefinition:
    @dg.job(executor_def=imgrank_celery_executor())
    def on_celery() -> None:
        _nothing()

    return on_celery


def test_a_run_on_celery_fails_at_start_naming_the_unreachable_broker(monkeypatch) -> None:
    broker = f"redis://{_dead_address()}/0"
    monkeypatch.setenv(CELERY_BROKER_ENV, broker)
    monkeypatch.setenv(CELERY_BACKEND_ENV, broker)
    with dg.instance_for_test() as instance:
        expected = f"the Celery broker is unreachable at {broker} ({CELERY_BROKER_ENV})"
        with pytest.raises(ServiceUnavailable, match=re.escape(expected)):
            dg.execute_job(dg.reconstructable(celery_job), instance=instance)
        # Raised where the executor is created: before any step is submitted.
        (run,) = instance.get_runs()
        assert not instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)


def test_the_executor_is_chosen_by_configuration_only(monkeypatch) -> None:
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    local = build_definitions()
    assert (
        local.resolve_job_def(names.RANK_COLLECTION_JOB).executor_def.name
        == "multi_or_in_process_executor"
    )
    for value, executor in (("celery", "celery"), ("k8s", "k8s")):
        monkeypatch.setenv(EXECUTOR_ENV, value)
        definitions = build_definitions()
        for job in (names.INGEST_SEQUENCES_JOB, names.RANK_COLLECTION_JOB, names.REFRESH_VIEWS_JOB):
            assert definitions.resolve_job_def(job).executor_def.name == executor, (value, job)
        # The label-change run stays in one process in every profile.
        labels = definitions.resolve_job_def(names.APPLY_LABELS_JOB).executor_def.name
        assert labels == "in_process"
    monkeypatch.setenv(EXECUTOR_ENV, "dask")
    with pytest.raises(ValueError, match="IMGRANK_EXECUTOR='dask' is not one of"):
        configured_executor_name()
