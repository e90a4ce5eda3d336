import dagster as dg

from imgrank_dagster.lib.names import VIEWS_GROUP

# Evaluates the views' automation conditions: a new ranking refreshes the map, the report and
# the FiftyOne dataset, outside the label-change fast path. Dagster's default one starts stopped.
visualization_automation_sensor = dg.AutomationConditionSensorDefinition(
    "visualization_automation_sensor",
    target=dg.AssetSelection.groups(VIEWS_GROUP),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
