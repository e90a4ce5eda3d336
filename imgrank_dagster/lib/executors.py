"""Which executor runs the steps of a run, chosen by the deployment profile's configuration.

`IMGRANK_EXECUTOR` (read when the definitions are built):
- unset or `multiprocess`: Dagster's default, a process per step on the run's machine (local);
- `celery`: dagster-celery's executor, a Celery task per step on any worker that reaches the
  broker (cluster); broker and result backend from IMGRANK_CELERY_BROKER/_BACKEND;
- `k8s`: dagster-k8s' `k8s_job_executor`, a Kubernetes Job per step (kubernetes).

Jobs that pin their own executor keep it (`apply_labels` runs in one process everywhere: its
steps take well under a second). The integration libraries are imported only for the profile
that uses them, so loading the definitions stays light.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import dagster as dg

from imgrank_dagster.lib.services import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    EXECUTOR_ENV,
    check_broker,
    required_setting,
)

MULTIPROCESS = "multiprocess"
CELERY = "celery"
K8S = "k8s"
EXECUTORS = (MULTIPROCESS, CELERY, K8S)

# Celery settings shared by the run process (through the executor) and the workers (through
# `imgrank worker`). A worker takes a step only when a process of its own is free (Redis
# brokers; RabbitMQ allows one reserved step), so a busy worker never sits on a step another
# could run; a started task records its worker, so a worker that dies mid-step can be noticed
# (lib.celery_watch). Tasks are acknowledged on receipt: a step is never silently run twice.
CELERY_SETTINGS: dict[str, Any] = {
    "worker_prefetch_multiplier": 1,
    "worker_disable_prefetch": True,
    "task_track_started": True,
    "task_acks_late": False,
    "broker_connection_retry_on_startup": True,
    # Keep the worker's stdout/stderr real files: Dagster captures a step's output from them
    # and the compute log manager uploads it (Celery would route them through its logger).
    "worker_redirect_stdouts": False,
    "result_expires": 7 * 24 * 3600,
}


def configured_executor_name(environ: dict[str, str] | None = None) -> str:
    value = (os.environ if environ is None else environ).get(EXECUTOR_ENV, "").strip()
    name = value or MULTIPROCESS
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={value!r} is not one of {', '.join(EXECUTORS)}")
    return name


def celery_settings_from_environment() -> tuple[str, str]:
    """(broker URL, result backend URL); a missing setting names itself."""
    broker = required_setting(CELERY_BROKER_ENV, "the Celery broker (redis://host:6379/0)")
    backend = required_setting(CELERY_BACKEND_ENV, "the Celery result backend (redis://...)")
    return broker, backend


def imgrank_celery_executor() -> dg.ExecutorDefinition:
    """dagster-celery's executor with the broker and backend from the environment, a check
    that the broker answers before any step is submitted, and lost-worker detection."""
    from dagster_celery import celery_executor

    from imgrank_dagster.lib.celery_watch import watched_backend_url

    @dg.executor(
        name=CELERY,
        config_schema=celery_executor.config_schema,
        requirements=dg.multiple_process_executor_requirements(),
    )
    def imgrank_celery(init_context: dg.InitExecutorContext) -> dg.Executor:
        config = dict(init_context.executor_config)
        broker, backend = celery_settings_from_environment()
        # Run config wins over the environment; "rpc://" is dagster-celery's default backend.
        config["broker"] = config.get("broker") or broker
        if config.get("backend") in (None, "rpc://"):
            config["backend"] = backend
        check_broker(config["broker"])  # ServiceUnavailable names the broker and its setting
        config["backend"] = watched_backend_url(config["backend"])
        config["config_source"] = {**CELERY_SETTINGS, **(config.get("config_source") or {})}
        # dagster-celery's own creation function reads only `executor_config`.
        return celery_executor.executor_creation_fn(SimpleNamespace(executor_config=config))

    return imgrank_celery


def executor_from_environment() -> dg.ExecutorDefinition | None:
    """The profile's executor; None keeps Dagster's default (multiprocess)."""
    name = configured_executor_name()
    if name == CELERY:
        return imgrank_celery_executor()
    if name == K8S:
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return None
