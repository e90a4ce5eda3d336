"""The daily refresh: discover every KartaView collection; sensors carry the rest.

The chain after discovery is event-driven, so it also serves discoveries started by hand:
kartaview_sequences -> kartaview_sequences_sensor (new sequences become partitions, one
ingest_sequences run each) -> rank_after_ingestion_sensor (one rank_collection run once the
collection's ingestion is done). Folder collections are discovered every minute by
collections_sensor and ranked by the same rank sensor.
"""

import dagster as dg

from imgrank_dagster.core.config import CollectionConfigError, KartaViewSource
from imgrank_dagster.defs.kartaview.jobs import discover_kartaview_job
from imgrank_dagster.lib.names import COLLECTION_TAG, TRIGGER_TAG
from imgrank_dagster.lib.partitions import collection_partitions
from imgrank_dagster.lib.resources import ImgrankConfig

DAILY_REFRESH_CRON = "0 3 * * *"


@dg.schedule(
    cron_schedule=DAILY_REFRESH_CRON,
    job=discover_kartaview_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 03:00 UTC: one discovery run per KartaView collection. New "
    "sequences are then ingested (kartaview_sequences_sensor) and the collection re-ranked "
    "(rank_after_ingestion_sensor).",
)
def daily_refresh_schedule(
    context: dg.ScheduleEvaluationContext, imgrank: ImgrankConfig
) -> list[dg.RunRequest] | dg.SkipReason:
    try:
        collections, _ = imgrank.collections_and_problems()  # collections_sensor reports them
    except CollectionConfigError as error:
        return dg.SkipReason(str(error))
    registered = set(context.instance.get_dynamic_partitions(collection_partitions.name))
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    requests = []
    for name, collection in sorted(collections.items()):
        if not isinstance(collection.source, KartaViewSource):
            continue
        if name not in registered:
            # collections_sensor registers it within a minute; tomorrow's tick picks it up.
            context.log.warning(f"{name}: not a collection partition yet; skipped today")
            continue
        requests.append(
            dg.RunRequest(
                partition_key=name,
                run_key=f"{name}:{day}",
                tags={TRIGGER_TAG: "daily_refresh_schedule", COLLECTION_TAG: name},
            )
        )
    return requests or dg.SkipReason("no registered kartaview collection")
