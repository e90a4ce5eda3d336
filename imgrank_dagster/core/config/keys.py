"""Names of collections and sequences, and the sequence partition key that joins them.

A sequence partition key is "<collection>.<sequence>". Collection names never hold a dot and
sequence ids are sanitised so that they never do either: the first dot splits a key. This module
is the one home of that rule; the IO manager, the sensors and the CLI all call it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

COLLECTION_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SEQUENCE_KEY_SEPARATOR = "."


def sequence_key(collection: str, sequence_id: str) -> str:
    """The partition key of one sequence of a collection."""
    return f"{collection}{SEQUENCE_KEY_SEPARATOR}{sequence_id}"


def split_sequence_key(partition_key: str) -> tuple[str, str]:
    """'<collection>.<sequence>' -> (collection, sequence); anything else is an error."""
    collection, separator, sequence = partition_key.partition(SEQUENCE_KEY_SEPARATOR)
    if not separator or not collection or not sequence:
        raise ValueError(
            f"sequence partition key {partition_key!r} is not '<collection>.<sequence>'"
        )
    return collection, sequence


def collection_of(partition_key: str) -> str:
    """The collection of a collection key ("<collection>") or a sequence key.

    Never raises: a stray key added by hand in the UI must not stop a sensor.
    """
    return partition_key.split(SEQUENCE_KEY_SEPARATOR, 1)[0]


def sequence_keys_of(partition_keys: Iterable[str], collection: str) -> list[str]:
    """The sequence keys of one collection among partition_keys, in their order."""
    prefix = f"{collection}{SEQUENCE_KEY_SEPARATOR}"
    return [key for key in partition_keys if key.startswith(prefix)]


def sanitize_sequence_id(raw: str) -> str:
    """A sequence id safe in partition keys and file names (no dots, slashes or spaces)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-")
    if not cleaned:
        raise ValueError(f"sequence name {raw!r} has no usable characters")
    return cleaned
