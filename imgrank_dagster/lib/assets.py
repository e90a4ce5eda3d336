"""The shape of a collection-level asset: one partition per collection, Parquet through the IO
manager, a code version and a description."""

from typing import Any

import dagster as dg

from imgrank_dagster.lib.partitions import collection_partitions


def collection_asset(
    group_name: str,
    description: str,
    code_version: str = "1",
    kinds: set[str] | None = None,
    **kwargs: Any,
) -> Any:
    """@dg.asset for a collection-partitioned asset of group_name."""
    return dg.asset(
        partitions_def=collection_partitions,
        group_name=group_name,
        kinds=kinds or {"python", "parquet"},
        code_version=code_version,
        description=description,
        **kwargs,
    )
