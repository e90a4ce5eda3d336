"""The "coverage" ranking strategy: label where the most still-uncovered images are.

Work on labelling under a small budget (ProbCover, TypiClust) agrees on three rules: spend
each label where it covers the most unlabelled images that nothing labelled covers yet,
prefer typical images over outliers, and never spend two labels on near-copies. This module
turns them into a greedy selection order over a `NeighbourGraph` (computed once per
collection; only this selection re-runs when labels change):

1. Radii from the data. Stage m uses the radius r_m = median content distance from an image
   to its m-th nearest neighbour, for m = k, k/2, k/4, ..., 1: a ball at stage m holds about
   m images around a typical image. No distance is hand-set, so rescaling every distance
   leaves the order unchanged. Balls are measured on the graph's effective distances (place
   mixing included); an image's ball only holds images that are graph neighbours either way.
2. Greedy coverage per stage, coarse to fine. An image is covered at a stage when a labelled
   or already picked image lies within the stage's radius. Among uncovered images the next
   pick is the one whose ball holds the most uncovered images (ties: the most typical, i.e.
   the smallest mean content distance to its k neighbours, then the lower row). Each pick
   updates what is covered before the next is chosen (lazy greedy: coverage is submodular,
   so a stale heap entry is only ever an over-estimate). Dense neighbourhoods come first and
   outliers (balls of one) late. When every image is covered the next, finer stage starts.
3. Held back. The finest radius r_1 (median nearest-neighbour distance) is the near-duplicate
   distance: an image within it of a labelled or picked image is a near-copy, or, through the
   graph's place mixing, a frame of the same place in its sequence. The coverage stages never
   pick such an image (it is covered at every stage), so no group or place gets a second
   image before every one has had its first. Held-back images follow the coverage picks,
   farthest from everything chosen first.
4. Defects. Black, very dark, overexposed and very blurred frames (`detect_defects`, limits
   from the collection's own statistics plus absolute limits for black and white frames)
   take no part in coverage and form the last region.

Regions, in rank order: "coverage", "held back", "defect".
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imgrank_dagster.core.neighbours import NeighbourGraph

REGIONS = ("coverage", "held back", "defect")
RANKING_COLUMNS = [
    "rank",
    "image_id",
    "region",
    "score",
    "covers",
    "stage",
    "radius",
    "typicality",
    "cluster",
    "opens_unlabelled_cluster",
    "nearest_chosen_id",
    "nearest_chosen_similarity",
    "held_back_reason",
    "reason",
]
DEFECT_COLUMNS = ["image_id", "defect", "defect_reason"]

# Robust z-score beyond which a value is an outlier (Iglewicz & Hoaglin's modified z-score).
OUTLIER_Z = 3.5
# Absolute limits on 8-bit pixel statistics, independent of the collection:
BLACK_MEAN = 8.0  # mean below ~3% of full scale: nothing visible
BLACK_MAX = 16.0  # or no pixel brighter than ~6% of full scale
DARK_MEAN_CEILING = 64.0  # never call a frame with a mean above a quarter of full scale "dark"
BRIGHT_MEAN_FLOOR = 192.0  # never call a frame with a mean below three quarters "overexposed"
WHITE_MIN = 240.0  # no pixel darker than ~94% of full scale: a white frame
# log(blur) spread floor, so a collection of uniformly sharp images does not flag tiny dips.
LOG_BLUR_SPREAD_FLOOR = 0.25


@dataclass(frozen=True)
class _Adjacency:
    """The graph made symmetric (an edge either way counts), rows sorted by distance."""

    starts: np.ndarray  # (N + 1,) row offsets
    columns: np.ndarray  # neighbour rows
    distances: np.ndarray  # effective distances
    content: np.ndarray  # content distances


def coverage_radii(graph: NeighbourGraph) -> np.ndarray:
    """Stage radii, coarsest first: median content distance to the m-th neighbour, m = k, k/2,
    k/4, ..., 1. The last is the near-duplicate distance (the graph's place mixing uses it)."""
    ranks = sorted({max(1, graph.k >> shift) for shift in range(graph.k.bit_length() + 1)})
    # Sorted per row: with place mixing a row is ordered by the mixed distance.
    content = np.sort(graph.content_distances, axis=1)
    radii = [float(np.median(content[:, m - 1])) for m in reversed(ranks)]
    unique: list[float] = []
    for radius in radii:
        if not unique or radius < unique[-1]:
            unique.append(radius)
    return np.array(unique, dtype=np.float64)


def typicality(graph: NeighbourGraph) -> np.ndarray:
    """TypiClust's typicality: inverse mean content distance to the k nearest neighbours."""
    mean_distance = graph.content_distances.astype(np.float64).mean(axis=1)
    return 1.0 / np.maximum(mean_distance, 1e-9)


def _robust_z(values: np.ndarray, spread_floor: float = 0.0) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.zeros_like(values)
    median = np.median(finite)
    spread = max(1.4826 * np.median(np.abs(finite - median)), spread_floor, 1e-9)
    z = (values - median) / spread
    return np.where(np.isfinite(z), z, 0.0)


def detect_defects(quality: pd.DataFrame) -> pd.DataFrame:
    """Flag black, very dark, overexposed and very blurred frames.

    quality: image_id plus either a boolean `defect` column (taken as given, with an optional
    `defect_reason`) or fastdup statistics: brightness (mean, 0-255), blur (sharpness, low =
    blurry) and optionally min_value and max_value. Returns image_id, defect, defect_reason.
    Relative limits are robust z-scores (median/MAD) within this collection beyond
    OUTLIER_Z; black and white frames also have absolute limits.
    """
    if "image_id" not in quality.columns:
        raise ValueError("quality needs an image_id column")
    if quality["image_id"].duplicated().any():
        duplicate = quality.loc[quality["image_id"].duplicated(), "image_id"].iloc[0]
        raise ValueError(f"quality lists image {duplicate!r} more than once")
    ids = quality["image_id"].astype(str).to_numpy()
    if "defect" in quality.columns:
        flags = quality["defect"].fillna(False).astype(bool).to_numpy()
        given = quality.get("defect_reason", pd.Series("defect", index=quality.index))
        reasons = np.where(flags, given.fillna("defect").astype(str).to_numpy(), "")
        return pd.DataFrame({"image_id": ids, "defect": flags, "defect_reason": reasons})[
            DEFECT_COLUMNS
        ]
    missing = {"brightness", "blur"} - set(quality.columns)
    if missing:
        raise ValueError(f"quality needs a defect column or the columns {sorted(missing)}")

    def column(name: str) -> np.ndarray:
        if name not in quality.columns:
            return np.full(len(quality), np.nan)
        return pd.to_numeric(quality[name], errors="coerce").to_numpy(dtype=float)

    brightness, blur = column("brightness"), column("blur")
    lowest, highest = column("min_value"), column("max_value")
    brightness_z = _robust_z(brightness)
    log_blur = np.log(np.maximum(blur, 1e-6))
    log_blur[~np.isfinite(blur)] = np.nan
    blur_z = _robust_z(log_blur, LOG_BLUR_SPREAD_FLOOR)
    median_brightness = float(np.nanmedian(brightness)) if np.isfinite(brightness).any() else 0
    median_blur = float(np.nanmedian(blur)) if np.isfinite(blur).any() else 0

    black = (brightness < BLACK_MEAN) | (highest <= BLACK_MAX)
    dark = ~black & (brightness_z < -OUTLIER_Z) & (brightness < DARK_MEAN_CEILING)
    white = lowest >= WHITE_MIN
    bright = white | ((brightness_z > OUTLIER_Z) & (brightness > BRIGHT_MEAN_FLOOR))
    blurred = blur_z < -OUTLIER_Z
    flags = black | dark | bright | blurred
    reasons = np.full(len(quality), "", dtype=object)
    for row in np.flatnonzero(flags):
        found = []
        if black[row]:
            found.append(f"black frame (brightness {brightness[row]:.0f}, max {highest[row]:.0f})")
        if dark[row]:
            found.append(
                f"very dark (brightness {brightness[row]:.0f}, "
                f"collection median {median_brightness:.0f})"
            )
        if bright[row]:
            found.append(
                f"overexposed (brightness {brightness[row]:.0f}, "
                f"collection median {median_brightness:.0f})"
            )
        if blurred[row]:
            found.append(
                f"very blurred (sharpness {blur[row]:.0f}, collection median {median_blur:.0f})"
            )
        reasons[row] = "; ".join(found)
    return pd.DataFrame({"image_id": ids, "defect": flags, "defect_reason": reasons})[
        DEFECT_COLUMNS
    ]


def _symmetric_adjacency(graph: NeighbourGraph) -> _Adjacency:
    n, k = graph.indices.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    columns = graph.indices.ravel().astype(np.int64)
    first = np.concatenate([rows, columns])
    second = np.concatenate([columns, rows])
    distances = np.tile(graph.distances.ravel(), 2)
    content = np.tile(graph.content_distances.ravel(), 2)
    # An edge found both ways appears twice: keep one copy, the smaller distance.
    order = np.lexsort((distances, first * n + second))
    first, second = first[order], second[order]
    distances, content = distances[order], content[order]
    keep = np.ones(len(first), dtype=bool)
    keep[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    first, second = first[keep], second[keep]
    distances, content = distances[keep], content[keep]
    # Rows by image, each nearest first (non-negative float32 bits sort like the floats).
    distance_bits = np.maximum(distances, 0).astype(np.float32).view(np.uint32).astype(np.int64)
    order = np.argsort((first << 32) | distance_bits, kind="stable")
    first, second = first[order], second[order]
    distances, content = distances[order], content[order]
    starts = np.searchsorted(first, np.arange(n + 1))
    return _Adjacency(starts, second, distances, content)


def _positions(graph: NeighbourGraph, ids: Iterable[str], what: str, strict: bool) -> np.ndarray:
    position = {image_id: row for row, image_id in enumerate(graph.image_ids.tolist())}
    rows, unknown = [], []
    for image_id in ids:
        row = position.get(str(image_id))
        if row is None:
            unknown.append(str(image_id))
        else:
            rows.append(row)
    if strict and unknown:
        raise ValueError(
            f"{what}: {len(unknown)} image(s) are not in the neighbour graph, e.g. {unknown[0]!r}"
        )
    return np.array(sorted(set(rows)), dtype=np.int64)


@dataclass
class _Pick:
    image: int
    region: str
    covers: int
    stage: int
    nearest: int  # nearest labelled or earlier picked image (-1: none among its neighbours)
    distance: float  # effective distance to it
    content_distance: float


class _Selection:
    """The greedy state shared by the stages: what is chosen (labelled or picked), in order."""

    def __init__(self, adjacency: _Adjacency, targets: np.ndarray, labelled: np.ndarray):
        self.adjacency = adjacency
        self.targets = targets  # rankable, non-defect, unlabelled
        self.chosen = labelled.copy()
        self.picks: list[_Pick] = []

    def nearest_chosen(self, image: int) -> tuple[int, float, float]:
        adjacency = self.adjacency
        start, stop = adjacency.starts[image], adjacency.starts[image + 1]
        hits = self.chosen[adjacency.columns[start:stop]]
        first = int(np.argmax(hits)) if stop > start else 0
        if stop == start or not hits[first]:
            return -1, np.inf, np.inf
        return (
            int(adjacency.columns[start + first]),
            float(adjacency.distances[start + first]),
            float(adjacency.content[start + first]),
        )

    def choose(self, image: int, region: str, covers: int, stage: int) -> None:
        self.picks.append(_Pick(image, region, covers, stage, *self.nearest_chosen(image)))
        self.chosen[image] = True

    def coverage_stage(self, stage: int, radius: float, typical: np.ndarray) -> None:
        """Greedy max coverage at one radius until every target is covered."""
        adjacency = self.adjacency
        n = len(self.targets)
        within = adjacency.distances <= radius
        sources = np.repeat(np.arange(n), np.diff(adjacency.starts))
        covered = self.chosen.copy()
        covered[adjacency.columns[within & self.chosen[sources]]] = True
        open_targets = self.targets & ~covered
        counted = within & open_targets[adjacency.columns]
        gains = np.bincount(sources[counted], minlength=n) + open_targets
        # Ball sizes at this radius: rows are sorted by distance.
        ball_ends = adjacency.starts[:-1] + np.bincount(sources[within], minlength=n)
        heap = [
            (-int(gains[image]), -float(typical[image]), int(image))
            for image in np.flatnonzero(open_targets)
        ]
        heapq.heapify(heap)
        while heap:
            negative_gain, negative_typical, image = heapq.heappop(heap)
            if covered[image]:
                continue
            ball = adjacency.columns[adjacency.starts[image] : ball_ends[image]]
            uncovered = ball[~covered[ball] & self.targets[ball]]
            gain = len(uncovered) + 1
            if gain < -negative_gain:  # stale: others may now beat it
                heapq.heappush(heap, (-gain, negative_typical, image))
                continue
            covered[uncovered] = True
            covered[image] = True
            self.choose(image, "coverage", gain, stage)

    def held_back(self, remaining: np.ndarray) -> None:
        """Near-copies, farthest from everything chosen first (lazy farthest-first)."""
        heap = [
            (-self.nearest_chosen(int(image))[1], int(image)) for image in np.flatnonzero(remaining)
        ]
        heapq.heapify(heap)
        while heap:
            negative_distance, image = heapq.heappop(heap)
            distance = self.nearest_chosen(image)[1]
            if distance < -negative_distance:
                heapq.heappush(heap, (-distance, image))
                continue
            self.choose(image, "held back", 0, -1)


def rank_by_coverage(
    graph: NeighbourGraph,
    labelled_ids: Iterable[str] = (),
    *,
    image_ids: Sequence[str] | None = None,
    quality: pd.DataFrame | None = None,
    clusters: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rank the unlabelled images of `image_ids` (default: every graph image) by coverage.

    labelled_ids: labelled images; ids not in the graph are ignored (labels may name images
    the collection no longer holds). quality: see `detect_defects` (rows for images outside
    the graph are ignored). clusters: image_id, cluster, to report whether a pick opens a
    cluster with no labels. Sequence information enters through the graph (its `places`).

    Returns one row per ranked image, RANKING_COLUMNS:
    rank (1..N); image_id; region ("coverage", "held back", "defect"); score (covers divided
    by the largest covers, 0 outside the coverage region: rank is the order, score a gain to
    read); covers (uncovered images the pick covered when it was picked, itself included);
    stage (0 = coarsest radius, -1 outside coverage); radius (of the stage; the near-duplicate
    distance for held-back rows); typicality; cluster (-1 without clusters);
    opens_unlabelled_cluster; nearest_chosen_id and nearest_chosen_similarity (nearest
    labelled or earlier-ranked image among its graph neighbours, cosine similarity; "" / NaN
    when none); held_back_reason (why a held-back or defect row is there, "" for coverage);
    reason (readable text). attrs["coverage"] holds the derived radii.
    """
    n = graph.size
    labelled = np.zeros(n, dtype=bool)
    labelled[_positions(graph, labelled_ids, "labelled_ids", strict=False)] = True
    rankable = np.zeros(n, dtype=bool)
    if image_ids is None:
        rankable[:] = True
    else:
        rankable[_positions(graph, image_ids, "image_ids", strict=True)] = True
    rankable &= ~labelled

    defect = np.zeros(n, dtype=bool)
    defect_reason = np.full(n, "", dtype=object)
    if quality is not None:
        defects = detect_defects(quality)
        known = defects[defects["image_id"].isin(set(graph.image_ids.tolist()))]
        rows = _positions(graph, known["image_id"], "quality", strict=True)
        known = known.set_index("image_id").loc[graph.image_ids[rows]]
        defect[rows] = known["defect"].to_numpy(dtype=bool)
        defect_reason[rows] = known["defect_reason"].to_numpy(dtype=object)
    defect &= rankable

    cluster = None
    if clusters is not None:
        missing = {"image_id", "cluster"} - set(clusters.columns)
        if missing:
            raise ValueError(f"clusters lacks columns {sorted(missing)}")
        by_id = clusters.drop_duplicates("image_id").set_index("image_id")["cluster"]
        by_id.index = by_id.index.astype(str)
        cluster = (
            pd.Series(graph.image_ids).map(by_id).fillna(-1).to_numpy(dtype=np.int64)
        )

    adjacency = _symmetric_adjacency(graph)
    typical = typicality(graph)
    radii = coverage_radii(graph)
    targets = rankable & ~defect
    selection = _Selection(adjacency, targets, labelled)
    for stage, radius in enumerate(radii):
        selection.coverage_stage(stage, radius, typical)
    selection.held_back(targets & ~selection.chosen)
    defect_rows = np.flatnonzero(defect)
    for image in defect_rows[np.lexsort((defect_rows, -typical[defect_rows]))]:
        selection.picks.append(_Pick(int(image), "defect", 0, -1, -1, np.inf, np.inf))

    frame = _ranking_frame(graph, selection.picks, radii, typical, cluster, labelled, defect_reason)
    frame.attrs["coverage"] = {
        "radii": radii.tolist(),
        "near_duplicate_distance": float(radii[-1]),
        "labelled_in_graph": int(labelled.sum()),
        "defects": int(defect.sum()),
    }
    return frame


def _ranking_frame(
    graph: NeighbourGraph,
    picks: list[_Pick],
    radii: np.ndarray,
    typical: np.ndarray,
    cluster: np.ndarray | None,
    labelled: np.ndarray,
    defect_reason: np.ndarray,
) -> pd.DataFrame:
    ids = graph.image_ids
    image = np.array([pick.image for pick in picks], dtype=np.int64)
    region = np.array([pick.region for pick in picks], dtype=object)
    covers = np.array([pick.covers for pick in picks], dtype=np.int64)
    stage = np.array([pick.stage for pick in picks], dtype=np.int64)
    nearest = np.array([pick.nearest for pick in picks], dtype=np.int64)
    similarity = 1.0 - np.array([pick.content_distance for pick in picks], dtype=np.float64)
    effective = np.array([pick.distance for pick in picks], dtype=np.float64)
    is_coverage = region == "coverage"
    max_covers = max(int(covers[is_coverage].max()) if is_coverage.any() else 1, 1)
    near_duplicate = float(radii[-1])
    radius = np.where(stage >= 0, radii[np.maximum(stage, 0)], np.nan)
    radius[region == "held back"] = near_duplicate
    has_nearest = nearest >= 0
    similarity[~has_nearest] = np.nan

    if cluster is None:
        ranked_cluster = np.full(len(picks), -1, dtype=np.int64)
        opens = np.zeros(len(picks), dtype=bool)
    else:
        ranked_cluster = cluster[image]
        labelled_clusters = set(cluster[labelled].tolist())
        first_in_ranking = ~pd.Series(ranked_cluster).duplicated().to_numpy()
        opens = (
            first_in_ranking
            & (ranked_cluster >= 0)
            & ~np.isin(ranked_cluster, list(labelled_clusters))
        )

    held_back_reason = np.full(len(picks), "", dtype=object)
    reason = np.empty(len(picks), dtype=object)
    for row, pick in enumerate(picks):
        near = f"{ids[pick.nearest]} (similarity {similarity[row]:.2f})" if has_nearest[row] else ""
        if pick.region == "coverage":
            parts = [
                f"covers {pick.covers} uncovered image{'s' if pick.covers != 1 else ''} "
                f"(radius {radius[row]:.3f}, stage {pick.stage + 1} of {len(radii)})"
            ]
            if opens[row]:
                parts.append(f"opens cluster {ranked_cluster[row]}, which has no labels yet")
            parts.append(
                f"nearest labelled/picked image {near}"
                if near
                else "no labelled or picked image among its neighbours"
            )
        elif pick.region == "held back":
            same_place = has_nearest[row] and 1 - similarity[row] > near_duplicate >= effective[row]
            why = (
                f"same place as {near} in its sequence"
                if same_place
                else f"near-duplicate of {near}" if near else "near-duplicate"
            )
            held_back_reason[row] = why
            parts = [f"held back: {why}"]
            if opens[row]:
                parts.append(f"opens cluster {ranked_cluster[row]}, which has no labels yet")
        else:
            why = str(defect_reason[pick.image]) or "defect"
            held_back_reason[row] = why
            parts = [f"defect: {why}"]
        reason[row] = "; ".join(parts)

    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(picks) + 1, dtype=np.int64),
            "image_id": ids[image].astype(object),
            "region": region,
            "score": np.where(is_coverage, covers / max_covers, 0.0),
            "covers": covers,
            "stage": stage,
            "radius": radius,
            "typicality": typical[image],
            "cluster": ranked_cluster,
            "opens_unlabelled_cluster": opens,
            "nearest_chosen_id": np.where(has_nearest, ids[np.maximum(nearest, 0)], "").astype(
                object
            ),
            "nearest_chosen_similarity": similarity,
            "held_back_reason": held_back_reason,
            "reason": reason,
        }
    )
    return frame[RANKING_COLUMNS]
