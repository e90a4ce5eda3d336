"""The "coverage" ranking strategy: label where the most still-uncovered images are.

Work on labelling under a small budget (ProbCover, TypiClust, MaxHerding) agrees on three
rules: spend each label where it covers the most unlabelled images that nothing labelled
covers yet, prefer typical images over outliers, and never spend two labels on near-copies.
This module turns them into a greedy selection order over a `NeighbourGraph` (computed once
per collection; only this selection re-runs when labels change):

1. Radii from the data. Stage m uses the radius r_m = median content distance from an image
   to its m-th nearest neighbour, for m = k, k/2, k/4, ..., 1: a ball at stage m holds about
   m images around a typical image. No distance is hand-set, so rescaling every distance
   leaves the order unchanged. Distances are the graph's effective distances (place mixing
   included); an image's neighbourhood only holds images that are graph neighbours either way.
2. Greedy coverage per stage, coarse to fine, with one of two objectives:
   - "soft" (the default; facility location / kernel herding, as in MaxHerding, Bae et al.
     2024): an image i is covered to the degree cover[i] = max over chosen (labelled or
     picked) images c of K(i, c) = exp(-d(i, c)^2 / (2 h^2)), 1 for a chosen image itself;
     the kernel width h is the median distance to the 5th nearest neighbour
     (`soft_coverage_bandwidth`). A pick's gain is sum_i w_i * (K(i, pick) - cover[i])^+ over
     itself and its neighbours, so typical images (many close neighbours) gain most and the
     labelled images already cover their neighbourhoods. The weight w_i is 1 / (1 + the
     image's near-copies, within r_1): a group of near-copies counts about as much as one
     image, so a clump of identical frames does not pass for a dense region. An optional
     per-image weight (`weights`: a classifier's uncertainty, a focus) multiplies it. At stage
     m a pick must lie farther than r_m from everything chosen, so the first picks spread
     over the collection, as the radius stages do; within a stage the soft gain orders them.
   - "radius" (the earlier objective, kept for comparison): an image is covered at a stage
     when a labelled or already picked image lies within the stage's radius; the next pick
     is the one whose ball holds the most uncovered images (ties: the most typical, i.e. the
     smallest mean content distance to its k neighbours, then the lower row).
   Both are submodular, so the greedy is lazy: a stale heap entry is only ever an
   over-estimate. When no image is left at a stage the next, finer stage starts.
3. Held back. The finest radius r_1 (median nearest-neighbour distance) is the near-duplicate
   distance: an image within it of a labelled or picked image is a near-copy, or, through the
   graph's place mixing, a frame of the same place in its sequence. The coverage stages never
   pick such an image, so no group or place gets a second image before every one has had its
   first. Held-back images follow the coverage picks, farthest from everything chosen first.
4. Defects. Black, very dark, overexposed and very blurred frames (`detect_defects`, limits
   from the collection's own statistics plus absolute limits for black and white frames)
   take no part in coverage and form the last region.

Regions, in rank order: "coverage", "held back", "defect". The score is what a pick added to
the objective when it was picked, relative to the first pick, made strictly decreasing with
rank (held-back and defect rows continue below the last pick), so sorting by score gives the
ranking's order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from imgrank_dagster.core.ranking.neighbours import NeighbourGraph

REGIONS = ("coverage", "held back", "defect")
Objective = Literal["radius", "soft"]
OBJECTIVES: tuple[Objective, ...] = ("soft", "radius")
# Soft coverage's kernel width: the median distance to this neighbour (MaxHerding's choice of
# a width about the size of a small neighbourhood; see soft_coverage_bandwidth).
SOFT_BANDWIDTH_RANK = 5
# The columns rank_by_coverage returns (strategies.RANKING_COLUMNS is the ranking asset's).
COVERAGE_RANKING_COLUMNS = [
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
    """The graph made symmetric (an edge either way counts), rows sorted by distance (ties by
    column)."""

    starts: np.ndarray  # (N + 1,) row offsets
    rows: np.ndarray  # the row of each entry
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
    """Every edge both ways, once: a pair listed in both rows keeps the smaller distance (on a
    tie the row's own entry, with its content distance)."""
    n, k = graph.indices.shape
    # A NeighbourGraph's rows list distinct other images: an edge is at most once per row.
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    columns = graph.indices.ravel().astype(np.int64)
    distances = graph.distances.ravel()
    content = graph.content_distances.ravel()
    # Edge i -> j is also listed as j -> i iff the pair {i, j} occurs twice; pair them up.
    pairs = np.minimum(rows, columns) * n + np.maximum(rows, columns)
    by_pair = np.argsort(pairs)
    twice = np.flatnonzero(pairs[by_pair[1:]] == pairs[by_pair[:-1]])
    reverse = np.full(n * k, -1, dtype=np.int64)  # -1: listed one way only
    reverse[by_pair[twice]] = by_pair[twice + 1]
    reverse[by_pair[twice + 1]] = by_pair[twice]
    one_way = reverse < 0
    use_reverse = ~one_way & (distances[reverse] < distances)
    best_distances = np.where(use_reverse, distances[reverse], distances)
    best_content = np.where(use_reverse, content[reverse], content)
    # Each listed edge with the better of its two entries, plus the way back of one-way edges.
    first = np.concatenate([rows, columns[one_way]])
    second = np.concatenate([columns, rows[one_way]])
    distances = np.concatenate([best_distances, distances[one_way]])
    content = np.concatenate([best_content, content[one_way]])
    # Rows by image, each nearest first (non-negative float32 bits sort like the floats);
    # a stable sort, as rows mostly come nearest first already.
    distance_bits = np.maximum(distances, 0).astype(np.float32).view(np.uint32)
    key = (first << 32) | distance_bits.astype(np.int64)
    order = np.argsort(key, kind="stable")
    # Equal distances within a row go by column: re-sort the entries of tied runs.
    sorted_key = key[order]
    tied = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])
    runs = np.union1d(tied, tied + 1)
    order[runs] = order[runs][np.lexsort((second[order[runs]], sorted_key[runs]))]
    first = first[order]
    starts = np.searchsorted(first, np.arange(n + 1))
    return _Adjacency(starts, first, second[order], distances[order], content[order])


def _positions(lookup: pd.Index, ids: Iterable[str], what: str, strict: bool) -> np.ndarray:
    """Graph rows of `ids` (via the graph's id index); unknown ids are skipped or, if strict,
    an error."""
    names = [str(image_id) for image_id in ids]
    rows = lookup.get_indexer(names)
    if strict and (rows < 0).any():
        unknown = [name for name, row in zip(names, rows, strict=True) if row < 0]
        raise ValueError(
            f"{what}: {len(unknown)} image(s) are not in the neighbour graph, e.g. {unknown[0]!r}"
        )
    return rows[rows >= 0]


class _Selection:
    """The greedy state shared by the stages: what is chosen (labelled or picked), in order."""

    def __init__(self, adjacency: _Adjacency, targets: np.ndarray, labelled: np.ndarray):
        self.adjacency = adjacency
        self.targets = targets  # rankable, non-defect, unlabelled
        self.labelled = labelled
        self.chosen = labelled.copy()
        # The picks, in rank order.
        self.images: list[int] = []
        self.regions: list[str] = []
        self.covers: list[int] = []
        self.stages: list[int] = []
        self.gains: list[float] = []  # what each pick added to the objective (0: not a gain pick)
        # Python ints: the greedy loops index them one image at a time.
        self.starts: list[int] = adjacency.starts.tolist()

    def choose(self, image: int, region: str, covers: int, stage: int, gain: float = 0.0) -> None:
        self.images.append(image)
        self.regions.append(region)
        self.covers.append(covers)
        self.stages.append(stage)
        self.gains.append(gain)
        self.chosen[image] = True

    def coverage_stage(self, stage: int, radius: float, typical: np.ndarray) -> None:
        """Greedy max coverage at one radius until every target is covered."""
        adjacency = self.adjacency
        n = len(self.targets)
        within = adjacency.distances <= radius
        covered = self.chosen.copy()
        covered[adjacency.columns[within & self.chosen[adjacency.rows]]] = True
        # Uncovered targets: the only images a pick can still gain.
        open_targets = self.targets & ~covered
        counted = within & open_targets[adjacency.columns]
        gains = np.bincount(adjacency.rows[counted], minlength=n) + open_targets
        # Ball sizes at this radius: rows are sorted by distance.
        ball_ends = (
            adjacency.starts[:-1] + np.bincount(adjacency.rows[within], minlength=n)
        ).tolist()
        candidates = np.flatnonzero(open_targets)
        gain_keys, typical_keys = (-gains[candidates]).tolist(), (-typical[candidates]).tolist()
        heap = list(zip(gain_keys, typical_keys, candidates.tolist(), strict=True))
        heapq.heapify(heap)
        while heap:
            negative_gain, negative_typical, image = heapq.heappop(heap)
            if not open_targets[image]:
                continue
            ball = adjacency.columns[self.starts[image] : ball_ends[image]]
            gain = int(np.count_nonzero(open_targets[ball])) + 1
            if gain < -negative_gain:  # stale: others may now beat it
                heapq.heappush(heap, (-gain, negative_typical, image))
                continue
            open_targets[ball] = False
            open_targets[image] = False
            self.choose(image, "coverage", gain, stage, float(gain))

    def soft_stage(
        self,
        kernel: np.ndarray,
        weight: np.ndarray,
        separation: np.ndarray,
        typical: np.ndarray,
        stage: int = 0,
        preference: np.ndarray | None = None,
    ) -> None:
        """Greedy soft coverage (facility location, kernel herding) over the targets.

        Each image i is covered to the degree cover[i] = the largest kernel value to a chosen
        (labelled or picked) image among its neighbours, 1 for itself. A pick's gain is the
        weighted rise of every cover it lifts: sum_i weight[i] * max(0, k(i, pick) -
        cover[i]). The function is submodular, so a stale heap entry only over-estimates
        (lazy greedy). An image within the near-duplicate distance of a chosen image is never
        picked here (it is held back). separation: per image, how far from every chosen image
        it must be to be picked at this stage. preference: per image, a factor on its gain as
        a candidate (a constant per image, so stale heap entries still over-estimate).
        """
        adjacency = self.adjacency
        n = len(self.targets)
        rows, columns = adjacency.rows, adjacency.columns
        cover = np.where(self.chosen, 1.0, 0.0)
        chosen_entries = self.chosen[columns]
        np.maximum.at(cover, rows[chosen_entries], kernel[chosen_entries])
        near = adjacency.distances <= separation[rows]
        open_targets = self.targets & ~self.chosen
        open_targets[rows[near & chosen_entries]] = False
        lift = weight[columns] * np.maximum(kernel - cover[columns], 0.0)
        gains = weight * (1.0 - cover) + np.bincount(rows, weights=lift, minlength=n)
        if preference is not None:
            gains = gains * preference
        candidates = np.flatnonzero(open_targets)
        heap = list(
            zip(
                (-gains[candidates]).tolist(),
                (-typical[candidates]).tolist(),
                candidates.tolist(),
                strict=True,
            )
        )
        heapq.heapify(heap)
        while heap:
            negative_gain, negative_typical, image = heapq.heappop(heap)
            if not open_targets[image]:
                continue
            start, stop = self.starts[image], self.starts[image + 1]
            neighbours = columns[start:stop]
            rise = np.maximum(kernel[start:stop] - cover[neighbours], 0.0)
            gain = float(weight[image] * (1.0 - cover[image]) + weight[neighbours] @ rise)
            if preference is not None:
                gain *= float(preference[image])
            if gain < -negative_gain * (1 - 1e-12) - 1e-15:  # stale: others may now beat it
                heapq.heappush(heap, (-gain, negative_typical, image))
                continue
            covers = int(np.count_nonzero(rise >= 0.5)) + 1
            cover[image] = 1.0
            np.maximum(cover[neighbours], kernel[start:stop], out=rise)
            cover[neighbours] = rise
            open_targets[image] = False
            close = adjacency.distances[start:stop] <= separation[neighbours]
            open_targets[neighbours[close]] = False
            self.choose(image, "coverage", covers, stage, gain)

    def nearest_distance(self, image: int) -> float:
        """Effective distance to the nearest chosen image among its neighbours (inf: none)."""
        adjacency = self.adjacency
        start, stop = self.starts[image], self.starts[image + 1]
        hits = self.chosen[adjacency.columns[start:stop]]
        first = int(hits.argmax()) if stop > start else 0
        return float(adjacency.distances[start + first]) if stop > start and hits[first] else np.inf

    def held_back(self, remaining: np.ndarray) -> None:
        """Near-copies, farthest from everything chosen first (lazy farthest-first)."""
        adjacency = self.adjacency
        entry = _first_entries(adjacency, self.chosen[adjacency.columns])
        distances = np.where(entry >= 0, adjacency.distances[entry], np.inf)
        images = np.flatnonzero(remaining)
        heap = list(zip((-distances[images]).tolist(), images.tolist(), strict=True))
        heapq.heapify(heap)
        while heap:
            negative_distance, image = heapq.heappop(heap)
            distance = self.nearest_distance(image)
            if distance < -negative_distance:
                heapq.heappush(heap, (-distance, image))
                continue
            self.choose(image, "held back", 0, -1)

    def nearest_chosen(self) -> np.ndarray:
        """Per pick, the adjacency entry of its nearest labelled or earlier picked image
        (-1: none among its neighbours)."""
        adjacency = self.adjacency
        # When each image was chosen: labelled before every pick, unchosen never.
        chosen_at = np.full(len(self.targets), len(self.images), dtype=np.int64)
        chosen_at[self.labelled] = -1
        images = np.array(self.images, dtype=np.int64)
        chosen_at[images] = np.arange(len(images))
        earlier = chosen_at[adjacency.columns] < chosen_at[adjacency.rows]
        return _first_entries(adjacency, earlier)[images]


def _first_entries(adjacency: _Adjacency, marked: np.ndarray) -> np.ndarray:
    """Per row, its first (nearest) marked entry; -1 where none is marked."""
    entries = np.flatnonzero(marked)
    rows = adjacency.rows[entries]
    is_first = np.ones(len(entries), dtype=bool)
    is_first[1:] = rows[1:] != rows[:-1]
    first = np.full(len(adjacency.starts) - 1, -1, dtype=np.int64)
    first[rows[is_first]] = entries[is_first]
    return first


def soft_coverage_bandwidth(graph: NeighbourGraph) -> float:
    """The kernel width of soft coverage, from the collection's own neighbour distances: the
    median content distance to the SOFT_BANDWIDTH_RANK-th nearest neighbour."""
    content = np.sort(graph.content_distances, axis=1)
    column = min(SOFT_BANDWIDTH_RANK, graph.k) - 1
    return max(float(np.median(content[:, column])), 1e-6)


def rank_by_coverage(
    graph: NeighbourGraph,
    labelled_ids: Iterable[str] = (),
    *,
    image_ids: Sequence[str] | None = None,
    quality: pd.DataFrame | None = None,
    clusters: pd.DataFrame | None = None,
    objective: Objective = "soft",
    weights: pd.Series | None = None,
    weight_reasons: pd.Series | None = None,
    reach: pd.Series | None = None,
    bandwidth: float | None = None,
) -> pd.DataFrame:
    """Rank the unlabelled images of `image_ids` (default: every graph image) by coverage.

    labelled_ids: labelled images; ids not in the graph are ignored (labels may name images
    the collection no longer holds). quality: see `detect_defects` (rows for images outside
    the graph are ignored). clusters: image_id, cluster, to report whether a pick opens a
    cluster with no labels. Sequence information enters through the graph (its `places`).
    objective: "soft" (greedy soft coverage with a Gaussian kernel of width `bandwidth`,
    default `soft_coverage_bandwidth`) or "radius" (greedy max coverage at the derived radii);
    see the module docstring. weights (soft only): image_id -> how much covering that image
    is worth (e.g. a classifier's uncertainty), multiplying the near-copy weight; 1 where not
    given. weight_reasons: image_id -> text that says why a coverage pick weighs what it does,
    added to its reason. reach (soft only; a focus, core.ranking.focus): image_id -> a
    factor >= 1 that multiplies the image's own gain when it is a candidate (picks near the
    examples first) and by which it may come closer to a chosen image than the stage's
    separation (never closer than the near-duplicate distance), so that one labelled image
    near an example does not keep the example's neighbourhood out of the coarse stages.

    Returns one row per ranked image, COVERAGE_RANKING_COLUMNS:
    rank (1..N); image_id; region ("coverage", "held back", "defect"); score (what the pick
    added when it was picked, relative to the first pick, strictly decreasing with rank; held
    back and defect rows continue below the last coverage pick); covers (images the pick
    brought near a chosen image, itself included); stage (0 = coarsest radius; -1 outside
    coverage); radius (of the stage; the near-duplicate distance for held-back rows);
    typicality; cluster (-1 without clusters);
    opens_unlabelled_cluster; nearest_chosen_id and nearest_chosen_similarity (nearest
    labelled or earlier-ranked image among its graph neighbours, cosine similarity; "" / NaN
    when none); held_back_reason (why a held-back or defect row is there, "" for coverage);
    reason (readable text). attrs["coverage"] holds the derived radii, the objective and
    the kernel width.
    """
    if objective not in OBJECTIVES:
        raise ValueError(
            f"objective must be one of {', '.join(map(repr, OBJECTIVES))}, got {objective!r}"
        )
    if objective == "radius" and (weights is not None or reach is not None):
        raise ValueError("weights and reach (classes, a focus) need objective 'soft'")
    n = graph.size
    lookup = pd.Index(graph.image_ids)  # id -> row, built once for every input
    labelled = np.zeros(n, dtype=bool)
    labelled[_positions(lookup, labelled_ids, "labelled_ids", strict=False)] = True
    rankable = np.zeros(n, dtype=bool)
    if image_ids is None:
        rankable[:] = True
    else:
        rankable[_positions(lookup, image_ids, "image_ids", strict=True)] = True
    rankable &= ~labelled

    defect = np.zeros(n, dtype=bool)
    defect_reason = np.full(n, "", dtype=object)
    if quality is not None:
        defects = detect_defects(quality)
        rows = lookup.get_indexer(defects["image_id"])
        known = rows >= 0  # rows for images outside the graph are ignored
        defect[rows[known]] = defects["defect"].to_numpy(dtype=bool)[known]
        defect_reason[rows[known]] = defects["defect_reason"].to_numpy(dtype=object)[known]
    defect &= rankable

    cluster = None
    if clusters is not None:
        missing = {"image_id", "cluster"} - set(clusters.columns)
        if missing:
            raise ValueError(f"clusters lacks columns {sorted(missing)}")
        by_id = clusters.drop_duplicates("image_id").set_index("image_id")["cluster"]
        by_id.index = by_id.index.astype(str)
        cluster = pd.Series(graph.image_ids).map(by_id).fillna(-1).to_numpy(dtype=np.int64)

    adjacency = _symmetric_adjacency(graph)
    typical = typicality(graph)
    radii = coverage_radii(graph)
    targets = rankable & ~defect
    selection = _Selection(adjacency, targets, labelled)
    if objective == "radius":
        for stage, radius in enumerate(radii):
            selection.coverage_stage(stage, radius, typical)
    else:
        bandwidth = soft_coverage_bandwidth(graph) if bandwidth is None else float(bandwidth)
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be positive, got {bandwidth}")
        kernel = np.exp(-0.5 * (adjacency.distances.astype(np.float64) / bandwidth) ** 2)
        # A group of near-copies is worth about one image (see the module docstring).
        near_copies = np.bincount(
            adjacency.rows[adjacency.distances <= radii[-1]], minlength=n
        ).astype(np.float64)
        worth = 1.0 / (1.0 + near_copies)
        if weights is not None:
            worth *= _weights_by_row(lookup, weights)
        # Covering a labelled image, a defect or an image outside the ranking is worth nothing.
        worth = np.where(targets, worth, 0.0)
        closer = np.ones(n) if reach is None else np.maximum(_weights_by_row(lookup, reach), 1.0)
        for stage, radius in enumerate(radii):
            separation = np.maximum(float(radius) / closer, float(radii[-1]))
            selection.soft_stage(
                kernel, worth, separation, typical, stage, None if reach is None else closer
            )
    selection.held_back(targets & ~selection.chosen)
    nearest_entries = selection.nearest_chosen()
    # Defects last, most typical first; no nearest chosen image is reported for them.
    defect_rows = np.flatnonzero(defect)
    for image in defect_rows[np.lexsort((defect_rows, -typical[defect_rows]))].tolist():
        selection.choose(image, "defect", 0, -1)
    nearest_entries = np.concatenate([nearest_entries, np.full(len(defect_rows), -1)])

    frame = _ranking_frame(
        graph,
        selection,
        nearest_entries,
        radii,
        typical,
        cluster,
        labelled,
        defect_reason,
        objective,
        None if weight_reasons is None else _reasons_by_row(lookup, weight_reasons),
    )
    frame.attrs["coverage"] = {
        "objective": objective,
        "radii": radii.tolist(),
        "near_duplicate_distance": float(radii[-1]),
        "kernel_width": bandwidth if objective == "soft" else None,
        "labelled_in_graph": int(labelled.sum()),
        "defects": int(defect.sum()),
    }
    return frame


def _weights_by_row(lookup: pd.Index, weights: pd.Series) -> np.ndarray:
    """Per-row weights from an image_id -> weight series (1 for images it does not name)."""
    given = pd.Series(weights, dtype=float)
    values = given.to_numpy(dtype=float)
    if not np.isfinite(values).all() or (values < 0).any():
        bad = given[~np.isfinite(values) | (values < 0)].index[0]
        raise ValueError(
            f"weights must be finite and not negative; image {bad!r} has {given[bad]!r}"
        )
    rows = lookup.get_indexer(given.index.astype(str))
    worth = np.ones(len(lookup))
    worth[rows[rows >= 0]] = values[rows >= 0]
    return worth


def _reasons_by_row(lookup: pd.Index, reasons: pd.Series) -> np.ndarray:
    texts = np.full(len(lookup), "", dtype=object)
    rows = lookup.get_indexer(pd.Index(reasons.index).astype(str))
    texts[rows[rows >= 0]] = reasons.astype(str).to_numpy(dtype=object)[rows >= 0]
    return texts


def _scores(gains: np.ndarray, is_coverage: np.ndarray) -> np.ndarray:
    """Each pick's gain relative to the first pick's, strictly decreasing with rank; rows after
    the coverage picks (held back, defects) continue evenly below the last pick's score."""
    score = np.zeros(len(gains))
    if is_coverage.any():
        first = float(gains[is_coverage][0]) or 1.0
        score[is_coverage] = strictly_decreasing(gains[is_coverage] / first)
    rest = np.flatnonzero(~is_coverage)
    if len(rest):
        floor = float(score[is_coverage][-1]) if is_coverage.any() else 1.0
        score[rest] = floor * (1 - np.arange(1, len(rest) + 1) / (len(rest) + 1))
    return score


def strictly_decreasing(values: np.ndarray) -> np.ndarray:
    """values made strictly decreasing by the smallest steps: each at most a relative 1e-6
    below the one before (ties keep their order; a gain above an earlier one is lowered)."""
    result = np.asarray(values, dtype=np.float64).copy()
    for row in range(1, len(result)):
        limit = result[row - 1] * (1 - 1e-6) if result[row - 1] > 0 else result[row - 1] - 1e-12
        if result[row] >= limit:
            result[row] = limit
    return result


def _ranking_frame(
    graph: NeighbourGraph,
    selection: _Selection,
    nearest_entries: np.ndarray,
    radii: np.ndarray,
    typical: np.ndarray,
    cluster: np.ndarray | None,
    labelled: np.ndarray,
    defect_reason: np.ndarray,
    objective: Objective,
    weight_reasons: np.ndarray | None,
) -> pd.DataFrame:
    """The ranking table; radii are the stage radii, the last the near-duplicate distance."""
    ids = graph.image_ids
    adjacency = selection.adjacency
    image = np.array(selection.images, dtype=np.int64)
    region = np.array(selection.regions, dtype=object)
    covers = np.array(selection.covers, dtype=np.int64)
    stage = np.array(selection.stages, dtype=np.int64)
    has_nearest = nearest_entries >= 0
    entries = nearest_entries[has_nearest]
    nearest = np.full(len(image), -1, dtype=np.int64)
    nearest[has_nearest] = adjacency.columns[entries]
    similarity = np.full(len(image), np.nan)
    similarity[has_nearest] = 1.0 - adjacency.content[entries].astype(np.float64)
    effective = np.full(len(image), np.inf)
    effective[has_nearest] = adjacency.distances[entries]
    is_coverage = region == "coverage"
    gains = np.array(selection.gains, dtype=np.float64)
    score = _scores(gains, is_coverage)
    near_duplicate = float(radii[-1])
    radius = np.where(stage >= 0, radii[np.maximum(stage, 0)], np.nan)
    radius[region == "held back"] = near_duplicate
    nearest_id = np.where(has_nearest, ids[np.maximum(nearest, 0)], "").astype(object)

    if cluster is None:
        ranked_cluster = np.full(len(image), -1, dtype=np.int64)
        opens = np.zeros(len(image), dtype=bool)
    else:
        ranked_cluster = cluster[image]
        labelled_clusters = set(cluster[labelled].tolist())
        first_in_ranking = ~pd.Series(ranked_cluster).duplicated().to_numpy()
        opens = (
            first_in_ranking
            & (ranked_cluster >= 0)
            & ~np.isin(ranked_cluster, list(labelled_clusters))
        )

    # Python scalars: formatting numpy scalars one row at a time is several times slower.
    near_texts = [
        f"{near_id} (similarity {value:.2f})" if found else ""
        for near_id, value, found in zip(
            nearest_id.tolist(), similarity.tolist(), has_nearest.tolist(), strict=True
        )
    ]
    stage_texts = [
        f"(radius {stage_radius:.3f}, stage {number + 1} of {len(radii)})"
        for number, stage_radius in enumerate(radii.tolist())
    ]
    opens_values, cluster_values = opens.tolist(), ranked_cluster.tolist()
    content_values, effective_values = (1.0 - similarity).tolist(), effective.tolist()
    held_back_reason = np.full(len(image), "", dtype=object)
    reason = np.empty(len(image), dtype=object)
    score_values = score.tolist()
    extra = [""] * len(image) if weight_reasons is None else weight_reasons[image].tolist()
    picks = zip(
        selection.regions,
        selection.covers,
        selection.stages,
        selection.images,
        near_texts,
        strict=True,
    )
    for row, (kind, count, step, pick, near) in enumerate(picks):
        opens_text = (
            f"; opens cluster {cluster_values[row]}, which has no labels yet"
            if opens_values[row]
            else ""
        )
        if kind == "coverage":
            nearest_text = (
                f"nearest labelled/picked image {near}"
                if near
                else "no labelled or picked image among its neighbours"
            )
            if objective == "soft":
                reason[row] = (
                    f"adds {score_values[row]:.1%} of the first pick's coverage: brings "
                    f"{count} image{'s' if count != 1 else ''} close to a pick "
                    f"{stage_texts[step]}{opens_text}; {nearest_text}"
                )
            else:
                reason[row] = (
                    f"covers {count} uncovered image{'s' if count != 1 else ''} "
                    f"{stage_texts[step]}{opens_text}; {nearest_text}"
                )
            if extra[row]:
                reason[row] += f"; {extra[row]}"
        elif kind == "held back":
            same_place = (
                bool(near) and content_values[row] > near_duplicate >= effective_values[row]
            )
            why = (
                f"same place as {near} in its sequence"
                if same_place
                else f"near-duplicate of {near}"
                if near
                else "near-duplicate"
            )
            held_back_reason[row] = why
            reason[row] = f"held back: {why}{opens_text}"
        else:
            why = str(defect_reason[pick]) or "defect"
            held_back_reason[row] = why
            reason[row] = f"defect: {why}"

    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(image) + 1, dtype=np.int64),
            "image_id": ids[image].astype(object),
            "region": region,
            "score": score,
            "covers": covers,
            "stage": stage,
            "radius": radius,
            "typicality": typical[image],
            "cluster": ranked_cluster,
            "opens_unlabelled_cluster": opens,
            "nearest_chosen_id": nearest_id,
            "nearest_chosen_similarity": similarity,
            "held_back_reason": held_back_reason,
            "reason": reason,
        }
    )
    return frame[COVERAGE_RANKING_COLUMNS]
