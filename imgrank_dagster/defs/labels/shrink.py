"""A labelled set that loses more than half its images in one change is held, not applied.

An emptied or half-written labels file (a crashed export, a save in progress, the wrong file
copied over) would otherwise re-rank the collection with the labels gone. Such a change is
held with a warning until it is confirmed: the same content saved again (the file's stats
change, its content does not), or `allow_labels_shrink: true` for the collection.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# labeled_images' metadata entry with the size of the labelled set.
LABELLED_COUNT_METADATA = "labelled"


@dataclass(frozen=True)
class Shrink:
    ranked: int  # labelled images the current ranking used
    new: int  # labelled images the changed files give

    @property
    def is_large(self) -> bool:
        """More than half of the labelled images would be gone."""
        return self.ranked > 0 and self.new * 2 < self.ranked

    def warning(self, collection: str, labels: object) -> str:
        return (
            f"{collection}: labels change HELD, not applied: {labels} now labels {self.new} "
            f"image(s), the ranking used {self.ranked}. If the file was emptied or is still "
            "being written, fix it; if the labels really shrank, save the file again unchanged "
            f"to confirm (or set allow_labels_shrink: true for {collection})."
        )


def ranked_labelled_count(metadata: Mapping[str, Any]) -> int | None:
    """How many images a labeled_images materialization labelled, from its metadata (None:
    unknown)."""
    value = metadata.get(LABELLED_COUNT_METADATA)
    try:
        return int(getattr(value, "value", value)) if value is not None else None
    except (TypeError, ValueError):
        return None
