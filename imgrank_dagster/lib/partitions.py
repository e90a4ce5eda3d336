"""Every partitions definition of the project, which partitions exist, and how a partition
picks its upstream partitions."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import dagster as dg

from imgrank_dagster.core.config import Collection, FolderSource
from imgrank_dagster.core.config.keys import sequence_key, sequence_keys_of

# One partition per collection declared in data/collections.yaml.
collection_partitions = dg.DynamicPartitionsDefinition(name="collections")
# One partition per capture run, keyed "<collection>.<sequence>" (core.config.keys).
sequence_partitions = dg.DynamicPartitionsDefinition(name="sequences")

# Named selectors of upstream partitions for inputs that read a fan-in of all partitions
# (dg.AllPartitionMapping) but need only some: (downstream partition, upstream keys) -> keys.
SEQUENCES_OF_COLLECTION = "sequences_of_collection"
_SELECTORS: dict[str, Callable[[str, list[str]], list[str]]] = {
    # A collection partition reads the sequence partitions of its own collection only.
    SEQUENCES_OF_COLLECTION: lambda collection, keys: sequence_keys_of(keys, collection),
}


def select_upstream_partitions(selector: str, partition_key: str, keys: list[str]) -> list[str]:
    """The upstream partition keys that `selector` picks for partition_key."""
    if selector not in _SELECTORS:
        raise ValueError(f"unknown upstream partition selector {selector!r}")
    return _SELECTORS[selector](partition_key, keys)


def unregistered_partitions(
    collections: Iterable[Collection], instance: dg.DagsterInstance
) -> tuple[list[str], list[str], list[str]]:
    """(new collection keys, new folder-sequence keys, problems) against the instance.

    KartaView sequences are not listed here: discovering them is a run of its own.
    """
    from imgrank_dagster.core.sources import SourceError, discover

    known_collections = set(instance.get_dynamic_partitions(collection_partitions.name))
    known_sequences = set(instance.get_dynamic_partitions(sequence_partitions.name))
    added_collections: list[str] = []
    added_sequences: list[str] = []
    problems: list[str] = []
    for collection in collections:
        if collection.name not in known_collections:
            added_collections.append(collection.name)
        if not isinstance(collection.source, FolderSource):
            continue
        try:
            found = discover(collection)
        except SourceError as error:
            problems.append(str(error))
            continue
        except Exception as error:  # one collection's folder never stops the others
            problems.append(
                f"{collection.name}: {collection.image_root}: {type(error).__name__}: {error}"
            )
            continue
        problems.extend(f"{collection.name}: {note}" for note in found.notes)
        for sequence_id in found.sequence_ids:
            key = sequence_key(collection.name, sequence_id)
            if key not in known_sequences:
                added_sequences.append(key)
    return added_collections, added_sequences, problems


def new_sequence_keys(collection: str, sequence_ids: Iterable[str], known: set[str]) -> list[str]:
    """Partition keys of a collection's sequences that are not partitions yet, in order."""
    keys = [sequence_key(collection, str(sequence_id)) for sequence_id in sequence_ids]
    return [key for key in dict.fromkeys(keys) if key not in known]
