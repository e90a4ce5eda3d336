"""Assembles the project: every definition under defs/ (loaded folder by folder) and the
resources. Each folder of defs/ is one asset group; lib/names.py has every name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from imgrank_dagster.lib.executors import executor_from_environment
from imgrank_dagster.lib.resources import build_resources

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def build_definitions(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The project with the given resources (tests point them at temporary folders) and the
    executor of the deployment profile (IMGRANK_EXECUTOR, lib.executors)."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(project_root=PROJECT_ROOT),
        dg.Definitions(
            resources=build_resources() if resources is None else resources,
            executor=executor_from_environment(),
        ),
    )


defs = build_definitions()
