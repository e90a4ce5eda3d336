"""Sensors evaluated directly, held to the rule the daemon applies to every tick."""

import dagster as dg

from imgrank_dagster.lib.resources import build_resources


def evaluate_sensor(
    sensor: dg.SensorDefinition,
    *,
    instance: dg.DagsterInstance,
    resources: dict,
    cursor: str | None = None,
    definitions: dg.Definitions | None = None,
) -> tuple[dg.SensorResult | dg.SkipReason | None, str | None]:
    """One evaluation: (its result, the cursor it leaves). Calling the sensor directly skips
    the daemon's check that a SensorResult carrying a cursor comes from an evaluation that did
    not call context.update_cursor(); the daemon fails such a tick, so this fails the test."""
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, definitions=definitions
    ) as context:
        updates: list[str | None] = []
        update_cursor = context.update_cursor

        def recording_update(value: str | None) -> None:
            updates.append(value)
            update_cursor(value)

        context.update_cursor = recording_update  # type: ignore[method-assign]
        result = sensor(context)
        if isinstance(result, dg.SensorResult) and result.cursor is not None:
            assert not updates, (
                f"{sensor.name} returned a cursor after calling update_cursor(): "
                "the daemon fails that tick"
            )
            return result, result.cursor
        return result, context.cursor


def evaluate_on_pipeline(
    pipeline, sensor: dg.SensorDefinition, cursor: str | None = None
) -> tuple[dg.SensorResult | dg.SkipReason | None, str | None]:
    """evaluate_sensor on a test pipeline (conftest's): its instance, definitions and the
    resources over its data folder and warehouse."""
    return evaluate_sensor(
        sensor,
        instance=pipeline.instance,
        resources=build_resources(data_dir=pipeline.data_dir, warehouse=str(pipeline.warehouse)),
        cursor=cursor,
        definitions=pipeline.defs,
    )
