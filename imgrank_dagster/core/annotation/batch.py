"""Which images go to the annotators next, and what a task looks like.

Pure functions: frames and sets in, frames and dicts out; no I/O.

The batch is a window on the ranking. The next `batch_size` images of the current ranking
(leaving out the ones annotators already answered without a label: skipped tasks and deleted
ones) should be in the annotation project; the ones that are not yet are sent. Sending twice
sends nothing the second time, and sending after a re-rank sends only the new picks. With
`per_cluster`, the best `per_cluster` images of every cluster without a labelled image are
added to the window.
"""

from __future__ import annotations

from collections.abc import Collection as Container
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import pandas as pd

RANKING_COLUMNS = ["image_id", "path", "rank", "reason", "cluster"]
PICKED_TOP = "top of the ranking"
PICKED_CLUSTER = "cluster without labels"
# The control names of the labelling configs: the label parsers read any of them.
CLASS_CONTROL = "class"
BOX_CONTROL = "box"
IMAGE_OBJECT = "image"
LOCAL_FILES_PREFIX = "/data/local-files/?d="


def choose_batch(
    ranking: pd.DataFrame,
    in_project: Container[str],
    answered: Container[str] = frozenset(),
    batch_size: int = 20,
    per_cluster: int | None = None,
    clusters_without_labels: Iterable[int] = (),
) -> pd.DataFrame:
    """The ranking's rows to send now, in rank order, with a `picked_as` column.

    ranking: the unlabelled images in rank order (RANKING_COLUMNS). in_project: images
    already sent (never sent again). answered: images whose tasks were answered without a
    label (skipped, deleted): they leave the window so that it moves on.
    """
    missing = set(RANKING_COLUMNS) - set(ranking.columns)
    if missing:
        raise ValueError(f"ranking needs columns {RANKING_COLUMNS}; missing: {sorted(missing)}")
    if batch_size < 0 or (per_cluster is not None and per_cluster < 1):
        raise ValueError(
            f"batch_size must be >= 0 and per_cluster >= 1 or None, got {batch_size}, {per_cluster}"
        )
    ordered = ranking.sort_values("rank", kind="stable")
    open_rows = ordered[~ordered["image_id"].isin(list(answered))]
    window = open_rows.head(batch_size)
    picked_as = pd.Series(PICKED_TOP, index=window.index, dtype="str")
    if per_cluster is not None:
        targets = open_rows[open_rows["cluster"].isin(list(clusters_without_labels))]
        per_cluster_rows = targets.groupby("cluster", sort=False).head(per_cluster)
        extra = per_cluster_rows.index.difference(window.index)
        picked_as = pd.concat([picked_as, pd.Series(PICKED_CLUSTER, index=extra, dtype="str")])
    chosen = ordered.loc[ordered.index.isin(picked_as.index)].copy()
    chosen["picked_as"] = picked_as.reindex(chosen.index)
    fresh = ~chosen["image_id"].isin(list(in_project))
    return chosen[fresh].reset_index(drop=True)


def local_files_url(image: Path, document_root: Path) -> str:
    """The URL Label Studio serves a local file under: relative to its document root."""
    try:
        relative = Path(image).resolve().relative_to(Path(document_root).resolve())
    except ValueError:
        raise ValueError(
            f"{image} is outside Label Studio's document root {document_root}: it can only "
            "serve files below that folder (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)"
        ) from None
    return LOCAL_FILES_PREFIX + quote(relative.as_posix(), safe="/")


def task_summary(rank: int, cluster: int, reason: str, picked_as: str) -> str:
    """The line annotators read above the image: why imgrank picked it."""
    return f"imgrank rank {rank} · cluster {cluster} ({picked_as}) · {reason}"


def label_studio_task(row: Mapping[str, Any], image_url: str) -> dict[str, Any]:
    """One task: the image, and imgrank's rank, reason and cluster as task data (sortable and
    filterable columns in Label Studio's data manager). row: a row of choose_batch."""
    rank, cluster, reason = int(row["rank"]), int(row["cluster"]), str(row["reason"])
    return {
        "data": {
            IMAGE_OBJECT: image_url,
            "image_id": str(row["image_id"]),
            "rank": rank,
            "reason": reason,
            "cluster": cluster,
            "picked_as": str(row["picked_as"]),
            "imgrank": task_summary(rank, cluster, reason, str(row["picked_as"])),
        }
    }


def label_config(classes: list[str], task: str = "classification") -> str:
    """Label Studio's labelling interface for the collection: one class per image (default) or
    boxes with a class each; imgrank's summary of the task above the image."""
    if not classes:
        raise ValueError("a labelling config needs at least one class")
    if task == "classification":
        options = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in classes)
        control = (
            f'  <Choices name="{CLASS_CONTROL}" toName="{IMAGE_OBJECT}" choice="single-radio" '
            f'showInline="true" required="true">\n{options}\n  </Choices>'
        )
    elif task == "boxes":
        options = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in classes)
        control = (
            f'  <RectangleLabels name="{BOX_CONTROL}" toName="{IMAGE_OBJECT}">\n'
            f"{options}\n  </RectangleLabels>"
        )
    else:
        raise ValueError(f"unknown annotation task {task!r}: classification or boxes")
    # Why the image was picked, then the classes, then the image: all in view at once.
    return (
        "<View>\n"
        '  <Header value="$imgrank" size="5"/>\n'
        f"{control}\n"
        f'  <Image name="{IMAGE_OBJECT}" value="$image" zoom="true" maxWidth="960px"/>\n'
        "</View>"
    )
