"""A self-contained HTML report of one collection's ranking, opened from disk without a server.

`write_report(data, report_dir)` writes

    report_dir/index.html      one page, inline CSS, no script, no external URL
    report_dir/thumbs/*.jpg    thumbnails (THUMBNAIL_SIZE px), referenced by relative paths
    report_dir/plots/*.png     the clustering plots

with a top-N contact sheet (scores and reasons), a grid per cluster (labelled count, priority
group), the elbow and silhouette plots, the near-duplicate groups, the rejected images with
their reasons, and a PixPlot-like map of the embeddings made of thumbnails.

The report is built in a folder next to report_dir and swapped in with two renames, so a
reader sees the previous report or the new one, never half of one. Thumbnails of the previous
report are reused (hard links) when their source file is unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

THUMBNAIL_SIZE = 160  # px, longest side
THUMBNAIL_QUALITY = 80
TOP_IMAGES = 100
CLUSTER_THUMBNAILS = 24  # per cluster; the rest is counted
DUPLICATE_GROUPS = 60
GROUP_THUMBNAILS = 12
REJECTED_IMAGES = 200
FOCUS_IMAGES = 24  # per focus example: its nearest unlabelled images
MAP_IMAGES = 1500  # thumbnails on the map; larger collections show a seeded sample
MAP_THUMBNAIL_PERCENT = 3.4  # width of one map thumbnail, in % of the map's width
THUMBS_DIR = "thumbs"
PLOTS_DIR = "plots"
INDEX = "index.html"
LEFTOVER_AGE_S = 3600  # build folders older than this belong to an interrupted write

_PRIORITY_NAMES = {
    1: "no labelled image",
    2: "few labelled",
    3: "partly labelled",
    4: "well labelled",
}
_REQUIRED = {
    "ranking": [
        "rank",
        "image_id",
        "path",
        "score",
        "cluster",
        "priority_group",
        "region",
        "reason",
    ],
    "scores": ["image_id", "cluster", "labelled", "uniqueness_punishment", "duplicate_group"],
    "cluster_metrics": [
        "cluster",
        "size",
        "labelled_count",
        "labelled_fraction",
        "priority_group",
        "mean_silhouette",
    ],
    "images": ["image_id", "path"],
    "rejected": ["image_id", "path", "reason"],
    "embedding_map": ["image_id", "x", "y"],
}


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything the report shows, as the project's frames (see the data contracts)."""

    collection: str
    image_root: Path  # every `path` is relative to it
    ranking: pd.DataFrame  # labeling_priority
    scores: pd.DataFrame  # image_scores: every accepted image, labelled ones too
    cluster_metrics: pd.DataFrame
    images: pd.DataFrame  # image_id, path of every accepted image
    rejected: pd.DataFrame  # image_id, path, reason of every image left out
    embedding_map: pd.DataFrame  # image_id, x, y in [0, 1]
    plots: Mapping[str, bytes] = field(default_factory=dict)  # caption -> PNG
    clustering_notes: Sequence[str] = ()
    map_method: str = ""
    seed: int = 0
    # focus_weights (image_id, focus_example, focus_similarity): one section per example with
    # its nearest unlabelled images; None or empty: the collection has no focus.
    focus: pd.DataFrame | None = None


# --- thumbnails ------------------------------------------------------------------------------


def thumbnail_jpeg(
    path: Path, size: int = THUMBNAIL_SIZE, quality: int = THUMBNAIL_QUALITY
) -> bytes:
    """A JPEG thumbnail (longest side `size`) of an image file; raises OSError if unreadable."""
    if size < 1:
        raise ValueError(f"thumbnail size must be at least 1 px, got {size}")
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def thumbnail_data_uri(path: Path, size: int = 64) -> str | None:
    """A small inline JPEG (data URI) for markdown metadata; None when the file is unreadable."""
    try:
        data = thumbnail_jpeg(path, size, quality=70)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()


class _Thumbnails:
    """Writes thumbnails into a report being built, reusing the previous report's files."""

    def __init__(self, image_root: Path, build_dir: Path, previous_dir: Path) -> None:
        self._root = image_root
        self._build = build_dir / THUMBS_DIR
        self._previous = previous_dir / THUMBS_DIR
        self._build.mkdir(parents=True)
        self._done: dict[str, str | None] = {}

    def src(self, relative_path: str) -> str | None:
        """The thumbnail's path relative to the report (None if the image cannot be read)."""
        if relative_path in self._done:
            return self._done[relative_path]
        source = self._root / relative_path
        try:
            stat = source.stat()
        except OSError:
            self._done[relative_path] = None
            return None
        # The name changes with the file: a stale thumbnail is never reused.
        key = f"{relative_path}|{stat.st_size}|{stat.st_mtime_ns}"
        name = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:20] + ".jpg"
        target = self._build / name
        result: str | None = f"{THUMBS_DIR}/{name}"
        if not self._reuse(name, target):
            try:
                target.write_bytes(thumbnail_jpeg(source))
            except (OSError, ValueError, Image.DecompressionBombError):
                result = None
        self._done[relative_path] = result
        return result

    def _reuse(self, name: str, target: Path) -> bool:
        previous = self._previous / name
        if not previous.is_file():
            return False
        try:
            os.link(previous, target)
        except OSError:
            shutil.copy2(previous, target)
        return True


# --- writing -----------------------------------------------------------------------------


def write_report(
    data: ReportData, report_dir: Path, generated_at: datetime | None = None
) -> pd.DataFrame:
    """Write the report into report_dir (replacing it atomically).

    Returns one row per file written: path (relative to report_dir), kind ("html",
    "thumbnail", "plot"), bytes.
    """
    _validate(data)
    report_dir = Path(report_dir)
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(report_dir)
    build = report_dir.with_name(f".{report_dir.name}.build-{uuid.uuid4().hex}")
    build.mkdir()
    try:
        thumbnails = _Thumbnails(Path(data.image_root), build, report_dir)
        plots = _write_plots(data.plots, build)
        page = _page(data, thumbnails, plots, generated_at or datetime.now(UTC))
        (build / INDEX).write_text(page, encoding="utf-8")
        _replace_directory(build, report_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return _file_list(report_dir)


def _validate(data: ReportData) -> None:
    if not data.collection:
        raise ValueError("report: collection name is empty")
    for name, columns in _REQUIRED.items():
        frame = getattr(data, name)
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"report: {name} must be a DataFrame, got {type(frame).__name__}")
        missing = [column for column in columns if column not in frame]
        if missing:
            raise ValueError(f"report: {name} lacks column(s) {missing}")
    for caption, png in data.plots.items():
        if not png.startswith(b"\x89PNG"):
            raise ValueError(f"report: plot {caption!r} is not a PNG image")


def _remove_leftovers(report_dir: Path) -> None:
    """Build or old folders of an earlier, interrupted write (old enough not to belong to a
    write still in progress)."""
    for prefix in (f".{report_dir.name}.build-", f".{report_dir.name}.old-"):
        for leftover in report_dir.parent.glob(f"{prefix}*"):
            try:
                age = time.time() - leftover.stat().st_mtime
            except OSError:
                continue
            if age > LEFTOVER_AGE_S:
                shutil.rmtree(leftover, ignore_errors=True)


def _replace_directory(build: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
    if target.exists():
        os.rename(target, old)
    os.rename(build, target)
    shutil.rmtree(old, ignore_errors=True)


def _write_plots(plots: Mapping[str, bytes], build: Path) -> list[tuple[str, str]]:
    """(caption, relative path) of each plot written."""
    folder = build / PLOTS_DIR
    folder.mkdir()
    written = []
    for number, (caption, png) in enumerate(plots.items()):
        name = f"{number:02d}-{_slug(caption)}.png"
        (folder / name).write_bytes(png)
        written.append((caption, f"{PLOTS_DIR}/{name}"))
    return written


def _file_list(report_dir: Path) -> pd.DataFrame:
    kinds = {INDEX: "html", THUMBS_DIR: "thumbnail", PLOTS_DIR: "plot"}
    rows = []
    for path in sorted(report_dir.rglob("*")):
        if path.is_file():
            relative = path.relative_to(report_dir).as_posix()
            kind = kinds.get(relative.split("/", 1)[0], "other")
            rows.append({"path": relative, "kind": kind, "bytes": path.stat().st_size})
    return pd.DataFrame(rows, columns=["path", "kind", "bytes"])


def _slug(text: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return "-".join(part for part in slug.split("-") if part)[:40] or "plot"


# --- the page --------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or value is pd.NA:
        return "-"
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}"
    return str(value)


def _page(
    data: ReportData,
    thumbnails: _Thumbnails,
    plots: list[tuple[str, str]],
    generated_at: datetime,
) -> str:
    labelled = data.scores.loc[data.scores["labelled"].astype(bool), "image_id"]
    paths = dict(zip(data.images["image_id"], data.images["path"], strict=True))
    ranks = dict(zip(data.ranking["image_id"], data.ranking["rank"], strict=True))
    context = _Context(thumbnails, paths, ranks, set(labelled))
    sections = [
        ("top", f"Label next: top {min(TOP_IMAGES, len(data.ranking))}", _top(data, context)),
        ("clusters", "Clusters", _clusters(data, context)),
        ("k", "Choosing k", _choosing_k(data, plots)),
        ("duplicates", "Near-duplicate groups", _duplicates(data, context)),
        ("rejected", "Rejected images", _rejected(data, thumbnails)),
        ("map", "Map of the embeddings", _map(data, context)),
    ]
    if data.focus is not None and not data.focus.empty:
        sections.insert(1, ("focus", "Focus: more like the examples", _focus(data, context)))
    nav = " ".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title, _ in sections)
    body = "\n".join(
        f'<section id="{anchor}"><h2>{_e(title)}</h2>\n{content}</section>'
        for anchor, title, content in sections
    )
    regions = data.ranking["region"].value_counts(sort=False)  # in ranking order
    summary = [
        ("accepted images", len(data.images)),
        ("labelled", len(labelled)),
        ("ranked (unlabelled)", len(data.ranking)),
        (" / ".join(map(str, regions.index)), " / ".join(str(int(n)) for n in regions)),
        ("rejected", len(data.rejected)),
        ("clusters", len(data.cluster_metrics)),
    ]
    summary_html = "".join(
        f"<div><b>{_e(value)}</b><span>{_e(name)}</span></div>" for name, value in summary
    )
    title = f"imgrank report: {data.collection}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{_e(title)}</h1>
<p class="muted">Generated {_e(generated_at.strftime("%Y-%m-%d %H:%M UTC"))}. Label from
the top: the order, the score regions and every reason come from the collection's ranking
strategy (see the README).</p>
<div class="summary">{summary_html}</div>
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
</body>
</html>
"""


@dataclass(frozen=True)
class _Context:
    thumbnails: _Thumbnails
    paths: dict[str, str]
    ranks: dict[str, int]
    labelled: set[str]

    def img(self, image_id: str, css_class: str = "") -> str:
        path = self.paths.get(image_id)
        src = self.thumbnails.src(path) if path is not None else None
        if src is None:
            return f'<div class="noimg {css_class}">no preview</div>'
        return f'<img class="{css_class}" src="{_e(src)}" alt="{_e(image_id)}">'

    def badge(self, image_id: str) -> str:
        if image_id in self.labelled:
            return '<span class="tag labelled">labelled</span>'
        rank = self.ranks.get(image_id)
        return f'<span class="tag">#{rank}</span>' if rank is not None else ""


def _top(data: ReportData, context: _Context) -> str:
    if data.ranking.empty:
        return "<p>No unlabelled image to rank.</p>"
    cards = []
    for row in data.ranking.sort_values("rank").head(TOP_IMAGES).itertuples(index=False):
        cards.append(
            f'<figure class="card">{context.img(row.image_id)}<figcaption>'
            f'<b>#{row.rank}</b> <span class="score">{_fmt(row.score)}</span> '
            f'<span class="region {_slug(str(row.region))}">{_e(row.region)}</span> '
            f'<span class="muted">cluster {_e(row.cluster)} · group {_e(row.priority_group)}</span>'
            f"<br><code>{_e(row.image_id)}</code>"
            f'<div class="reason">{_e(row.reason)}</div></figcaption></figure>'
        )
    return f'<div class="sheet">{"".join(cards)}</div>'


def _focus(data: ReportData, context: _Context) -> str:
    """Per focus example, its nearest unlabelled images (those nearer it than any other
    example), most similar first, with their rank."""
    focus = data.focus
    missing = [c for c in ("image_id", "focus_example", "focus_similarity") if c not in focus]
    if missing:
        raise ValueError(f"report: focus lacks column(s) {missing}")
    parts = [
        '<p class="muted">The collection\'s <code>focus:</code> examples. The coverage '
        "strategy weighs images near them up; below, each example's nearest unlabelled images "
        "with their similarity and rank.</p>"
    ]
    unlabelled = focus[~focus["image_id"].isin(context.labelled)]
    for example in dict.fromkeys(focus["focus_example"]):
        nearest = unlabelled[unlabelled["focus_example"] == example].sort_values(
            ["focus_similarity", "image_id"], ascending=[False, True]
        )
        own = context.img(example, "example") if example in context.paths else ""
        cards = [
            f'<figure class="card">{context.img(row.image_id)}<figcaption>'
            f"{context.badge(row.image_id)} similarity {_fmt(row.focus_similarity)}"
            f"<br><code>{_e(row.image_id)}</code></figcaption></figure>"
            for row in nearest.head(FOCUS_IMAGES).itertuples(index=False)
        ]
        more = len(nearest) - len(cards)
        parts.append(
            f"<h3>{own}Example <code>{_e(example)}</code>: {len(nearest)} unlabelled image"
            f"{'s' if len(nearest) != 1 else ''} nearest it"
            f"{f' ({more} more not shown)' if more > 0 else ''}</h3>"
            f'<div class="sheet">{"".join(cards) or "<p>none</p>"}</div>'
        )
    return "\n".join(parts)


def _clusters(data: ReportData, context: _Context) -> str:
    metrics = data.cluster_metrics.sort_values(
        ["priority_group", "size", "cluster"], ascending=[True, False, True]
    )
    members = data.scores[["image_id", "cluster", "labelled"]].copy()
    members["rank"] = members["image_id"].map(context.ranks)
    members["labelled"] = members["labelled"].astype(bool)
    members = members.sort_values(["labelled", "rank", "image_id"], na_position="last")
    by_cluster = {cluster: frame for cluster, frame in members.groupby("cluster", sort=False)}
    table_rows = []
    blocks = []
    for row in metrics.itertuples(index=False):
        group = int(row.priority_group)
        table_rows.append(
            f'<tr><td><a href="#cluster-{row.cluster}">{_e(row.cluster)}</a></td>'
            f"<td>{_e(row.size)}</td><td>{_e(row.labelled_count)}</td>"
            f"<td>{row.labelled_fraction:.1%}</td>"
            f'<td><span class="group g{group}">{group}</span> {_e(_PRIORITY_NAMES.get(group, ""))}'
            f"</td><td>{_fmt(row.mean_silhouette)}</td></tr>"
        )
        shown = _cluster_sample(by_cluster.get(row.cluster, members.iloc[0:0]))
        rest = int(row.size) - len(shown)
        tiles = "".join(
            f'<figure class="tile">{context.img(image_id)}{context.badge(image_id)}</figure>'
            for image_id in shown
        )
        more = f'<div class="more">+ {rest} more</div>' if rest > 0 else ""
        blocks.append(
            f'<div class="cluster" id="cluster-{row.cluster}"><h3>Cluster {_e(row.cluster)} '
            f'<span class="group g{group}">priority group {group}</span></h3>'
            f'<p class="muted">{_e(row.size)} images, {_e(row.labelled_count)} labelled '
            f"({row.labelled_fraction:.1%}): {_e(_PRIORITY_NAMES.get(group, ''))}; mean "
            f"silhouette {_fmt(row.mean_silhouette)}. Unlabelled images by rank, then the "
            f'labelled ones.</p><div class="grid">{tiles}{more}</div></div>'
        )
    table = (
        "<table><thead><tr><th>cluster</th><th>images</th><th>labelled</th><th>labelled %</th>"
        "<th>priority group</th><th>mean silhouette</th></tr></thead><tbody>"
        + "".join(table_rows)
        + "</tbody></table>"
    )
    return table + "".join(blocks)


def _cluster_sample(members: pd.DataFrame) -> list[str]:
    """Up to CLUSTER_THUMBNAILS ids: the best-ranked unlabelled images, and a quarter of the
    slots kept for labelled ones (so the grid shows what is covered already)."""
    labelled = members.loc[members["labelled"], "image_id"].tolist()
    unlabelled = members.loc[~members["labelled"], "image_id"].tolist()
    labelled_slots = min(len(labelled), CLUSTER_THUMBNAILS // 4)
    unlabelled_shown = unlabelled[: CLUSTER_THUMBNAILS - labelled_slots]
    labelled_shown = labelled[: CLUSTER_THUMBNAILS - len(unlabelled_shown)]
    return unlabelled_shown + labelled_shown


def _choosing_k(data: ReportData, plots: list[tuple[str, str]]) -> str:
    notes = "".join(f"<li>{_e(note)}</li>" for note in data.clustering_notes)
    parts = [f"<ul>{notes}</ul>"] if notes else []
    if plots:
        parts.append(
            '<div class="plots">'
            + "".join(
                f'<figure><img src="{_e(path)}" alt="{_e(caption)}"></figure>'
                for caption, path in plots
            )
            + "</div>"
        )
    else:
        parts.append(
            f"<p>k = {len(data.cluster_metrics)} was not chosen by a sweep (fixed in the "
            "collection's settings), so there is no elbow or silhouette curve.</p>"
        )
    return "".join(parts)


def _duplicates(data: ReportData, context: _Context) -> str:
    grouped = data.scores[data.scores["duplicate_group"] >= 0]
    if grouped.empty:
        return "<p>No near-duplicate group.</p>"
    groups = grouped.groupby("duplicate_group", sort=True)
    blocks = []
    for number, (group, frame) in enumerate(groups):
        if number == DUPLICATE_GROUPS:
            blocks.append(f'<p class="muted">{groups.ngroups - number} more groups not shown.</p>')
            break
        # The kept image (punishment 1.0) first, then the punished ones.
        frame = frame.sort_values(["uniqueness_punishment", "image_id"], ascending=[False, True])
        tiles = "".join(
            f'<figure class="tile">{context.img(row.image_id)}'
            f"{context.badge(row.image_id)}"
            f'<span class="tag {"kept" if row.uniqueness_punishment >= 1 else "punished"}">'
            f"{'kept' if row.uniqueness_punishment >= 1 else 'punished'}</span></figure>"
            for row in frame.head(GROUP_THUMBNAILS).itertuples(index=False)
        )
        rest = len(frame) - GROUP_THUMBNAILS
        more = f'<div class="more">+ {rest} more</div>' if rest > 0 else ""
        cluster = frame["cluster"].iloc[0]
        blocks.append(
            f'<div class="dupgroup"><h3>Group {_e(group)} <span class="muted">{len(frame)} '
            f'images, cluster {_e(cluster)}</span></h3><div class="grid">{tiles}{more}</div></div>'
        )
    intro = (
        f"<p>{groups.ngroups} groups of near-duplicates (an image and its nearest neighbours "
        "whose cosine similarity is at or above the threshold, within one cluster). The first "
        "image of each group keeps its score; the others are punished.</p>"
    )
    return intro + "".join(blocks)


def _rejected(data: ReportData, thumbnails: _Thumbnails) -> str:
    if data.rejected.empty:
        return "<p>No image was rejected.</p>"
    rows = []
    for row in data.rejected.sort_values("image_id").head(REJECTED_IMAGES).itertuples(index=False):
        has_file = isinstance(row.path, str) and bool(row.path)  # no path: no file to show
        src = thumbnails.src(row.path) if has_file else None
        preview = (
            f'<img class="small" src="{_e(src)}" alt="{_e(row.image_id)}">'
            if src
            else '<div class="noimg small">no preview</div>'
        )
        rows.append(
            f"<tr><td>{preview}</td><td><code>{_e(row.image_id)}</code><br>"
            f'<span class="muted">{_e(row.path if has_file else "")}</span></td>'
            f"<td>{_e(row.reason)}</td></tr>"
        )
    more = len(data.rejected) - REJECTED_IMAGES
    note = f'<p class="muted">{more} more not shown.</p>' if more > 0 else ""
    return (
        f"<p>{len(data.rejected)} images were left out of the ranking.</p><table><thead><tr>"
        "<th></th><th>image</th><th>reason</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + note
    )


def _map_points(data: ReportData, context: _Context) -> pd.DataFrame:
    """The map's points of the report's images."""
    return data.embedding_map[data.embedding_map["image_id"].isin(context.paths)]


def _map_selection(data: ReportData, context: _Context) -> pd.DataFrame:
    points = _map_points(data, context)
    if len(points) <= MAP_IMAGES:
        return points
    # The top of the ranking always, then a seeded sample of the rest.
    top = set(data.ranking.sort_values("rank")["image_id"].head(TOP_IMAGES))
    must = points[points["image_id"].isin(top)]
    rest = points[~points["image_id"].isin(top)]
    sample = rest.sample(n=MAP_IMAGES - len(must), random_state=data.seed)
    return pd.concat([must, sample])


def _map(data: ReportData, context: _Context) -> str:
    selected = _map_selection(data, context)
    if selected.empty:
        return "<p>No map: the embedding map has none of these images.</p>"
    clusters = dict(zip(data.scores["image_id"], data.scores["cluster"], strict=True))
    span = 100 - MAP_THUMBNAIL_PERCENT
    dots = []
    # Best-ranked last, so they are drawn on top.
    order = selected.assign(_rank=selected["image_id"].map(context.ranks)).sort_values(
        "_rank", ascending=False, na_position="first"
    )
    for row in order.itertuples(index=False):
        cluster = clusters.get(row.image_id, -1)
        rank = context.ranks.get(row.image_id)
        label = "labelled" if row.image_id in context.labelled else f"rank {rank}"
        css = "dot labelled" if row.image_id in context.labelled else "dot"
        dots.append(
            f'<div class="{css}" style="left:{row.x * span:.2f}%;top:{row.y * span:.2f}%;'
            f'border-color:{_cluster_colour(cluster)}" title="{_e(row.image_id)} · {label} · '
            f'cluster {_e(cluster)}">{context.img(row.image_id)}</div>'
        )
    placed = len(_map_points(data, context))
    missing = len(data.images) - placed
    notes = []
    if len(selected) < placed:
        notes.append(
            f"{len(selected)} of {len(data.images)} images shown: the top {TOP_IMAGES} and a "
            "seeded sample of the rest."
        )
    if missing > 0:
        notes.append(f"{missing} images are not on the map (it is older than the ranking).")
    method = {"tsne": "t-SNE after PCA", "pca": "PCA"}.get(data.map_method, data.map_method)
    intro = (
        "<p>Every image placed by its fastdup embedding"
        + (f" ({_e(method)}, scikit-learn)" if method else "")
        + ": similar images lie close together. Border colour = cluster; labelled images are "
        "faded with a dashed border. Hover to enlarge.</p>"
    )
    notes_html = "".join(f'<p class="muted">{_e(note)}</p>' for note in notes)
    return f'{intro}{notes_html}<div class="map">{"".join(dots)}</div>'


# Tableau 10: distinct colours for the first ten clusters, then the golden angle.
_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def _cluster_colour(cluster: object) -> str:
    number = int(cluster)  # type: ignore[call-overload]
    if 0 <= number < len(_PALETTE):
        return _PALETTE[number]
    return f"hsl({number * 137.508 % 360:.0f},65%,45%)"


_CSS = """
:root { --fg: #1d2430; --muted: #5f6b7a; --line: #d8dde4; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #1d2430; color: #fff; padding: 16px 24px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .muted { color: #b9c2cf; }
nav { margin-top: 10px; }
nav a { color: #9fd0ff; margin-right: 16px; text-decoration: none; }
main { padding: 8px 24px 40px; }
section { margin-top: 24px; }
h2 { border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { margin: 16px 0 4px; font-size: 16px; }
.muted { color: var(--muted); }
.summary { display: flex; gap: 24px; flex-wrap: wrap; margin-top: 8px; }
.summary div { display: flex; flex-direction: column; }
.summary b { font-size: 20px; }
.summary span { color: #b9c2cf; font-size: 12px; }
.sheet { display: grid; grid-template-columns: repeat(auto-fill, minmax(176px, 1fr)); gap: 10px; }
.card { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 6px;
        padding: 6px; }
.card img, .card .noimg { width: 100%; aspect-ratio: 4 / 3; object-fit: cover;
                          border-radius: 4px; display: block; }
.card figcaption { font-size: 12px; margin-top: 4px; }
.card code { font-size: 11px; }
.reason { color: var(--muted); font-size: 11px; }
.score { font-weight: 600; }
.region { padding: 0 5px; border-radius: 8px; font-size: 11px; color: #fff; }
.region { background: #777; }
.region.good, .region.coverage { background: #2e8b57; }
.region.medium, .region.held-back { background: #c08a1e; }
.region.bad, .region.defect { background: #b03a2e; }
.group { padding: 0 6px; border-radius: 8px; font-size: 12px; color: #fff; background: #777; }
.group.g1 { background: #b03a2e; } .group.g2 { background: #d2691e; }
.group.g3 { background: #c0a01e; } .group.g4 { background: #2e8b57; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.tile { margin: 0; position: relative; }
.tile img, .tile .noimg { width: 120px; height: 90px; object-fit: cover; border-radius: 4px;
                          display: block; }
.tile .tag { position: absolute; left: 3px; top: 3px; }
.tile .tag + .tag { left: auto; right: 3px; }
.tag { background: rgba(0,0,0,.65); color: #fff; font-size: 11px; padding: 0 4px;
       border-radius: 4px; }
.tag.labelled { background: #3060a0; } .tag.kept { background: #2e8b57; }
.tag.punished { background: #b03a2e; }
.more { color: var(--muted); padding: 0 8px; }
.noimg { background: #e4e7ec; color: var(--muted); display: flex; align-items: center;
         justify-content: center; font-size: 11px; }
img.small, .noimg.small { width: 96px; height: 72px; object-fit: cover; }
h3 img.example { width: 64px; height: 48px; object-fit: cover; vertical-align: middle;
  margin-right: .5em; }
table { border-collapse: collapse; background: #fff; margin: 8px 0; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
.plots { display: flex; gap: 16px; flex-wrap: wrap; }
.plots figure { margin: 0; background: #fff; border: 1px solid var(--line); padding: 8px; }
.plots img { max-width: 520px; width: 100%; }
.map { position: relative; width: min(96vw, 1100px); aspect-ratio: 1; background: #fff;
       border: 1px solid var(--line); overflow: hidden; }
.dot { position: absolute; width: 3.4%; border: 2px solid #999; border-radius: 3px;
       background: #fff; line-height: 0; }
.dot img, .dot .noimg { width: 100%; aspect-ratio: 4 / 3; object-fit: cover; display: block; }
.dot.labelled { opacity: .55; border-style: dashed; }
.dot:hover { z-index: 10; transform: scale(4); opacity: 1; box-shadow: 0 2px 8px rgba(0,0,0,.4); }
"""
