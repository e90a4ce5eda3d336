"""Temporary files that a killed write left behind, removed once no live run can own them.

Every atomic write (lib.parquet.write_frame, core.files.write_atomically) writes a hidden
`.<name>.<random>.tmp` beside its target and renames it. A process killed in between leaves the
temporary file. A temporary file last modified before the oldest run still in progress started
belongs to no live run (a writer keeps touching its file), so it is an orphan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from upath import UPath

from imgrank_dagster.lib.runs_alive import IN_PROGRESS_STATUSES

TEMP_FILE_PATTERN = ".*.tmp"


def oldest_live_run_start(instance: dg.DagsterInstance) -> float:
    """When the oldest run still queued or in progress started (now when there is none)."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS_STATUSES))
    starts = [
        record.start_time or record.create_timestamp.timestamp()
        for record in records
        if record.start_time or record.create_timestamp
    ]
    return min(starts, default=time.time())


def remove_orphan_temp_files(
    folder: Path | UPath,
    older_than: float,
    warn: Callable[[str], None] | None = None,
) -> list[str]:
    """Delete the temporary files in folder last modified before `older_than` (a timestamp).

    Returns their names. Never raises: a file that cannot be listed or removed is reported
    through `warn` and left for the next write.
    """
    removed: list[str] = []
    try:
        candidates = list(folder.glob(TEMP_FILE_PATTERN))
    except (OSError, ValueError) as error:
        if warn is not None:
            warn(f"could not list {folder} for leftover temporary files: {error}")
        return removed
    for candidate in candidates:
        try:
            if candidate.stat().st_mtime < older_than:
                candidate.unlink()
                removed.append(candidate.name)
        except FileNotFoundError:
            continue  # renamed or removed meanwhile
        except (OSError, ValueError, AttributeError) as error:
            if warn is not None:
                warn(f"could not remove leftover temporary file {candidate}: {error}")
    return removed


def clean_after_killed_writes(
    instance: dg.DagsterInstance, folder: Path | UPath, log: dg.DagsterLogManager | None = None
) -> list[str]:
    """remove_orphan_temp_files(folder) with the oldest live run as the age limit; logged."""
    warn = log.warning if log is not None else None
    removed = remove_orphan_temp_files(folder, oldest_live_run_start(instance), warn)
    if removed and log is not None:
        shown = ", ".join(removed[:5]) + (
            f" and {len(removed) - 5} more" if len(removed) > 5 else ""
        )
        log.info(
            f"removed {len(removed)} temporary file(s) left by killed writes in {folder}: {shown}"
        )
    return removed
