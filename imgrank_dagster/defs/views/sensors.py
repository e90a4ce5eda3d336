import dagster as dg

from imgrank_dagster.lib.names import LANE_TAG, VIEWS_GROUP, VIEWS_LANE

# Evaluates the views' automation conditions: a new ranking refreshes the map, the report and
# the FiftyOne dataset, outside the label-change fast path. Dagster's default one starts stopped.
visualization_automation_sensor = dg.AutomationConditionSensorDefinition(
    "visualization_automation_sensor",
    target=dg.AssetSelection.groups(VIEWS_GROUP),
    run_tags={LANE_TAG: VIEWS_LANE},
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
)
