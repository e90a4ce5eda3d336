"""Where a collection stands, read from the Dagster instance and the warehouse (for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from imgrank_dagster.core.config import Collection
from imgrank_dagster.core.config.keys import sequence_keys_of, split_sequence_key
from imgrank_dagster.lib.io_manager import PartitionedParquetIOManager
from imgrank_dagster.lib.names import (
    COLLECTION_IMAGES,
    IMAGE_FEATURES,
    LABELED_IMAGES,
    LABELING_PRIORITY,
)
from imgrank_dagster.lib.partitions import collection_partitions, sequence_partitions


@dataclass(frozen=True)
class CollectionStatus:
    name: str
    registered: bool
    sequences: int  # registered sequence partitions
    sequences_embedded: int
    images: dict[str, int] = field(default_factory=dict)  # status -> images
    ranked_at: datetime | None = None
    ranked_images: int | None = None
    strategy: str = ""
    labels: dict[str, Any] = field(default_factory=dict)  # labeled_images' label_summary
    notes: list[str] = field(default_factory=list)


def _latest_metadata(
    instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str
) -> tuple[datetime | None, dict[str, Any]]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None, {}
    metadata = {
        key: getattr(value, "value", value)
        for key, value in records[0].asset_materialization.metadata.items()
    }
    return datetime.fromtimestamp(records[0].timestamp, UTC), metadata


def collection_status(
    collection: Collection,
    instance: dg.DagsterInstance,
    warehouse: PartitionedParquetIOManager,
) -> CollectionStatus:
    """What is registered, ingested, ranked and labelled for one collection."""
    from imgrank_dagster.core.sources import SourceError, discover

    name = collection.name
    keys = sequence_keys_of(instance.get_dynamic_partitions(sequence_partitions.name), name)
    embedded = instance.get_materialized_partitions(IMAGE_FEATURES)
    images: dict[str, int] = {}
    if name in instance.get_materialized_partitions(COLLECTION_IMAGES):
        frames = warehouse.read_partitions(COLLECTION_IMAGES.to_user_string(), [name], ["status"])
        if name in frames:
            images = {str(k): int(v) for k, v in frames[name]["status"].value_counts().items()}
    ranked_at, ranking = _latest_metadata(instance, LABELING_PRIORITY, name)
    _, labels = _latest_metadata(instance, LABELED_IMAGES, name)
    notes: list[str] = []
    if collection.source.type == "folder":  # discovering KartaView needs the network
        try:
            found = discover(collection)
            notes.extend(found.notes)
            registered = {split_sequence_key(key)[1] for key in keys}
            unregistered = len(set(found.sequence_ids) - registered)
            if unregistered:
                notes.append(f"{unregistered} sequence(s) in the folder not registered yet")
        except SourceError as error:
            notes.append(str(error))
    return CollectionStatus(
        name=name,
        registered=name in instance.get_dynamic_partitions(collection_partitions.name),
        sequences=len(keys),
        sequences_embedded=sum(key in embedded for key in keys),
        images=images,
        ranked_at=ranked_at,
        ranked_images=ranking.get("ranked_images"),
        strategy=str(ranking.get("strategy", "")),
        labels=dict(labels.get("label_summary") or {}),
        notes=notes,
    )
