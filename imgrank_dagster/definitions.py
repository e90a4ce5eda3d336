"""Assembles the project: every definition under defs/ (loaded folder by folder) and the
resources. Each folder of defs/ is one asset group; lib/names.py has every name."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import dagster as dg

import imgrank_dagster.defs
from imgrank_dagster.lib.executors import executor_from_environment
from imgrank_dagster.lib.resources import build_resources

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def load_defs_package() -> dg.Definitions:
    """Every definition in the modules of defs/, as `dg.load_from_defs_folder` finds them
    (a test checks both agree).

    Not `load_from_defs_folder` itself: on every load (each run worker, each step process) it
    also builds a JSON catalogue of every installed integration's component types, importing
    their registries (dagster-aws': boto3), for a project that has no components: 0.4 s
    without the cluster extras, 1.9 s with them, measured here at load 2-4 (README "New labels
    re-rank in seconds"). Dagster marks the package loader "preview"; the Dagster family is
    pinned (pyproject.toml).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*load_definitions_from_", category=dg.PreviewWarning
        )
        return dg.load_definitions_from_package_module(imgrank_dagster.defs)


def build_definitions(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The project with the given resources (tests point them at temporary folders) and the
    executor of the deployment profile (IMGRANK_EXECUTOR, lib.executors)."""
    return dg.Definitions.merge(
        load_defs_package(),
        dg.Definitions(
            resources=build_resources() if resources is None else resources,
            executor=executor_from_environment(),
        ),
    )


defs = build_definitions()
