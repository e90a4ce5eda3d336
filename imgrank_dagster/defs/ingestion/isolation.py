"""One sequence's failure in a run over many: named, and kept apart from the others.

Dagster records the partitions of one step together: it cannot mark one sequence of a
100-sequence run failed and the others materialized (dagster-io/dagster#17836). So a sequence
that cannot be ingested (its folder vanished or cannot be listed, KartaView refuses it) fails
the run after every other sequence was tried, the run is tagged with the failed sequences, and
`ingestion_retry_sensor` re-runs the others at once and each failed one alone, with backoff.
Nothing about a single image fails a run: a bad image is a rejected row.
"""

import json

import dagster as dg

from imgrank_dagster.lib.names import FAILED_SEQUENCES_TAG

LOGGED_ROWS = 20  # per-image log lines per step; the rest is counted (the event log stays small)
ERROR_CHARS = 500


def fail_sequences(
    context: dg.AssetExecutionContext, failures: dict[str, str], succeeded: int
) -> None:
    """Tag the run with the sequences that failed and fail the step naming each one."""
    context.instance.add_run_tags(
        context.run_id, {FAILED_SEQUENCES_TAG: json.dumps(sorted(failures))}
    )
    lines = "\n".join(f"- {key}: {error[:ERROR_CHARS]}" for key, error in sorted(failures.items()))
    others = (
        f"The other {succeeded} sequence(s) of this run were ingested without error; "
        "ingestion_retry_sensor runs them again at once, and each failed sequence alone with "
        "backoff."
        if succeeded
        else "ingestion_retry_sensor retries each failed sequence alone, with backoff."
    )
    raise dg.Failure(
        description=f"{len(failures)} sequence(s) could not be ingested:\n{lines}\n{others}",
        metadata={
            "failed_sequences": dg.MetadataValue.json(
                {key: error[:ERROR_CHARS] for key, error in sorted(failures.items())}
            ),
            "sequences_ingested": succeeded,
        },
    )


def log_some(context: dg.AssetExecutionContext, lines: list[str], total: int, what: str) -> None:
    """Warn with the first lines, then one line counting the rest."""
    for line in lines[:LOGGED_ROWS]:
        context.log.warning(line[:ERROR_CHARS])
    if total > LOGGED_ROWS:
        context.log.warning(f"... and {total - LOGGED_ROWS} more {what}")
