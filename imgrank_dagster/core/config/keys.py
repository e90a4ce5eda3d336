"""Names of collections and sequences, and the sequence partition key that joins them.

A sequence partition key is "<collection>.<sequence>". Collection names never hold a dot and
sequence ids are sanitised so that they never do either: the first dot splits a key. This module
is the one home of that rule; the IO manager, the sensors and the CLI all call it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
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


SEQUENCE_ID_MAX_CHARS = 64
_SEQUENCE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_NAME_HASH_CHARS = 8


def sanitize_sequence_id(raw: str) -> str:
    """A sequence id safe in partition keys and file names, for any name a folder can have.

    A name that is already such an id (ASCII letters, digits, '-' and '_', at most
    SEQUENCE_ID_MAX_CHARS) is its own id. Any other name keeps its ASCII letters and digits
    (accents dropped, the rest turned into '-', cut to fit) and gets '-' and 8 hex characters
    of a hash of the name: 'seq x' and 'seq-x' get different ids, '日本' gets 'seq-<hash>',
    a 220-character name a short id. An id depends on the name alone, so it never changes.
    """
    if _SEQUENCE_ID.match(raw) and len(raw) <= SEQUENCE_ID_MAX_CHARS:
        return raw
    # surrogateescape: a name that is not valid UTF-8 hashes as the bytes on disk.
    name_hash = hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()
    ascii_name = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_name).strip("-_")
    slug = slug[: SEQUENCE_ID_MAX_CHARS - _NAME_HASH_CHARS - 1].rstrip("-_") or "seq"
    return f"{slug}-{name_hash[:_NAME_HASH_CHARS]}"
