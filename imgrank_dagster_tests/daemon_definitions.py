"""The project's definitions as the fault tests' daemon serves them: without the views'
automation sensor (the FiftyOne dataset needs a MongoDB these tests do not start)."""

import dagster as dg

from imgrank_dagster.definitions import build_definitions

VIEWS_AUTOMATION_SENSOR = "visualization_automation_sensor"


def _without_views_automation() -> dg.Definitions:
    everything = build_definitions()
    return dg.Definitions(
        assets=everything.assets,
        asset_checks=everything.asset_checks,
        jobs=everything.jobs,
        schedules=everything.schedules,
        sensors=[
            s for s in everything.sensors or [] if s.name != "visualization_automation_sensor"
        ],
        resources=everything.resources,
    )


defs = _without_views_automation()
