"""Finding a collection's KartaView sequences, and downloading one sequence robustly.

Files land as `<images_dir>/<sequence_id>/<photo_id>.jpg`, named from the numeric ids only
(never from API strings), written to a temp file, checked to decode, then renamed. A file
already on disk that decodes is not fetched again, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imgrank_dagster.core.config.collections import BoundingBox, KartaViewSource
from imgrank_dagster.core.config.keys import sanitize_sequence_id
from imgrank_dagster.core.files import write_atomically
from imgrank_dagster.core.sources.base import RAW_COLUMNS
from imgrank_dagster.core.sources.images import DEFAULT_MAX_BYTES, ImageInspection, inspect_image
from imgrank_dagster.core.sources.kartaview.client import (
    ATTRIBUTION,
    IMAGE_SIZES,
    LICENCE,
    ImageSize,
    KartaViewClient,
    KartaViewError,
    Photo,
    parse_id,
)

log = logging.getLogger(__name__)

ATTRIBUTION_COLUMNS = ["photo_id", "heading", "source_url", "details_url", "licence", "attribution"]
KARTAVIEW_COLUMNS = [*RAW_COLUMNS, *ATTRIBUTION_COLUMNS]
METRES_PER_DEGREE = math.pi * 6_371_008.8 / 180
DEFAULT_BBOX_RADIUS_M = 100.0
MAX_GRID_QUERIES = 2500
# write_atomically's temp files for "<photo_id>.jpg"; a killed run leaves them behind.
_STALE_TEMP_FILES = ".*.jpg.*.tmp"


# --- discovery ------------------------------------------------------------------------------


def _grid_shape(bbox: BoundingBox, side_m: float) -> tuple[int, int]:
    # Degrees of longitude are widest (in metres) nearest the equator: size cells there.
    widest_cos = (
        1.0
        if bbox.min_lat <= 0 <= bbox.max_lat
        else math.cos(math.radians(min(abs(bbox.min_lat), abs(bbox.max_lat))))
    )
    height_m = (bbox.max_lat - bbox.min_lat) * METRES_PER_DEGREE
    width_m = (bbox.max_lng - bbox.min_lng) * METRES_PER_DEGREE * widest_cos
    return max(1, math.ceil(height_m / side_m)), max(1, math.ceil(width_m / side_m))


def _cell_side_m(radius_m: float) -> float:
    """A square of side radius*sqrt(2) fits in the circle; 5% less absorbs the flat-earth error."""
    if radius_m <= 0:
        raise ValueError(f"bbox query radius must be > 0 m, got {radius_m}")
    return radius_m * math.sqrt(2) * 0.95


def grid_size(bbox: BoundingBox, radius_m: float) -> int:
    """How many proximity queries grid_points would make, without listing them."""
    rows, cols = _grid_shape(bbox, _cell_side_m(radius_m))
    return rows * cols


def grid_points(bbox: BoundingBox, radius_m: float) -> list[tuple[float, float]]:
    """Centres of proximity queries of radius_m whose circles together cover the box."""
    rows, cols = _grid_shape(bbox, _cell_side_m(radius_m))
    lat_step = (bbox.max_lat - bbox.min_lat) / rows
    lng_step = (bbox.max_lng - bbox.min_lng) / cols
    return [
        (bbox.min_lat + (row + 0.5) * lat_step, bbox.min_lng + (col + 0.5) * lng_step)
        for row in range(rows)
        for col in range(cols)
    ]


def discover_sequences(
    client: KartaViewClient,
    source: KartaViewSource,
    *,
    bbox_radius_m: float = DEFAULT_BBOX_RADIUS_M,
    max_queries: int = MAX_GRID_QUERIES,
) -> list[str]:
    """Sequence ids near the source's points and inside its bbox: unique, sorted, capped.

    A bbox is covered by a grid of proximity queries of bbox_radius_m; only photos inside
    the box count. The cap keeps the lowest (oldest) ids, so reruns pick the same ones.
    """
    grid: list[tuple[float, float]] = []
    if source.bbox is not None:
        queries = grid_size(source.bbox, bbox_radius_m)
        if queries > max_queries:
            raise ValueError(
                f"kartaview bbox {source.bbox} needs {queries} proximity queries of "
                f"{bbox_radius_m:g} m (limit {max_queries}); use a smaller box or a larger radius"
            )
        grid = grid_points(source.bbox, bbox_radius_m)
    found: set[str] = set()
    for point in source.points:
        found.update(client.nearby_sequences(point.lat, point.lng, point.radius_m))
    for lat, lng in grid:
        found.update(client.nearby_sequences(lat, lng, bbox_radius_m, bbox=source.bbox))
    sequence_ids = sorted({sanitize_sequence_id(item) for item in found}, key=int)
    log.info(
        "kartaview discovery: %d sequences from %d points and %d grid queries",
        len(sequence_ids),
        len(source.points),
        len(grid),
    )
    if source.max_sequences is not None:
        sequence_ids = sequence_ids[: source.max_sequences]
    return sequence_ids


# --- progress -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceProgress:
    """Where one sequence's download stands; passed to the progress callback per image."""

    sequence_id: str
    done: int
    total: int
    ok: int
    rejected: int
    already_on_disk: int
    bytes_downloaded: int
    elapsed_s: float

    @property
    def images_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.bytes_downloaded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"kartaview sequence {self.sequence_id}: {self.done}/{self.total} images "
            f"({self.ok} ok, {self.rejected} rejected, {self.already_on_disk} already on disk), "
            f"{self.bytes_downloaded / 1e6:.1f} MB, {self.images_per_s:.1f} images/s, "
            f"{self.bytes_per_s / 1e3:.0f} kB/s"
        )


DownloadProgressCallback = Callable[[SequenceProgress], None]


def progress_logger(emit: Callable[[str], None], every_s: float = 5.0) -> DownloadProgressCallback:
    """A progress callback that emits a line at most every `every_s` seconds, and at the end."""
    last_emitted = -math.inf

    def report(progress: SequenceProgress) -> None:
        nonlocal last_emitted
        now = time.monotonic()
        if progress.done == progress.total or now - last_emitted >= every_s:
            last_emitted = now
            emit(str(progress))

    return report


# --- download -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    photo: Photo
    inspection: ImageInspection
    source_url: str
    downloaded_bytes: int = 0
    already_on_disk: bool = False


def _failure_reason(photo: Photo, problems: list[tuple[str, str]]) -> str:
    """'download failed: HTTP 404 on all sizes', or each URL's size with its own problem."""
    if not problems:
        return "download failed: no usable image URL in the API response"

    def size_of(url: str) -> str:
        return "thumbnail" if url in photo.thumbnail_urls else "full"

    reasons = list(dict.fromkeys(reason for _, reason in problems))
    if len(problems) == 1:
        return f"download failed: {reasons[0]}"
    if len(reasons) == 1:
        sizes = {size_of(url) for url, _ in problems}
        where = "on all sizes" if len(sizes) > 1 else f"on all {len(problems)} URLs"
        return f"download failed: {reasons[0]} {where}"
    return "download failed: " + "; ".join(f"{size_of(url)} {reason}" for url, reason in problems)


def _short_reason(inspection_reason: str) -> str:
    # Pillow names the missing byte count, which differs per size; the cause does not.
    if "truncated" in inspection_reason:
        return "truncated JPEG"
    return inspection_reason


class _InvalidImage(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _download_checked(
    client: KartaViewClient, url: str, target: Path, max_bytes: int
) -> ImageInspection:
    """Fetch url into a temp file beside target; rename it into place only if it decodes."""
    checked: list[ImageInspection] = []

    def fetch(temporary: Path) -> None:
        client.fetch_image(url, temporary, max_bytes=max_bytes)
        inspection = inspect_image(temporary, max_bytes=max_bytes)
        if not inspection.ok:
            raise _InvalidImage(_short_reason(inspection.reason))
        checked.append(inspection)

    write_atomically(target, fetch)
    return checked[0]


def _fetch_photo(
    client: KartaViewClient,
    photo: Photo,
    sequence_dir: Path,
    image_size: ImageSize,
    max_bytes: int,
) -> _Outcome:
    target = sequence_dir / f"{photo.photo_id}.jpg"
    urls = photo.image_urls(image_size)
    if target.exists():
        on_disk = inspect_image(target, max_bytes=max_bytes)
        if on_disk.ok:
            return _Outcome(photo, on_disk, urls[0] if urls else "", already_on_disk=True)
        target.unlink(missing_ok=True)  # left by an older, broken run: fetch it again
    problems: list[tuple[str, str]] = []
    for url in urls:
        try:
            inspection = _download_checked(client, url, target, max_bytes)
        except (KartaViewError, _InvalidImage) as error:
            problems.append((url, error.reason))
            continue
        return _Outcome(photo, inspection, url, downloaded_bytes=inspection.bytes)
    failed = ImageInspection(
        status="rejected", reason=_failure_reason(photo, problems), sha256="", bytes=0
    )
    return _Outcome(photo, failed, urls[0] if urls else "")


def _empty_frame() -> pd.DataFrame:
    return _frame([])


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    column = {name: [row[name] for row in rows] for name in KARTAVIEW_COLUMNS}
    return pd.DataFrame(
        {
            **{name: pd.Series(column[name], dtype="str") for name in KARTAVIEW_COLUMNS},
            "sequence_index": pd.Series(column["sequence_index"], dtype="int64"),
            "bytes": pd.Series(column["bytes"], dtype="int64"),
            "width": pd.array(column["width"], dtype="Int64"),
            "height": pd.array(column["height"], dtype="Int64"),
            # One fixed unit: pandas would otherwise infer s/ms/us from the values at hand.
            "captured_at": pd.to_datetime(pd.Series(column["captured_at"], dtype="object")).astype(
                "datetime64[us]"
            ),
            "lat": pd.array(column["lat"], dtype="Float64"),
            "lng": pd.array(column["lng"], dtype="Float64"),
            "heading": pd.array(column["heading"], dtype="Float64"),
        },
        columns=KARTAVIEW_COLUMNS,
    )


def _row(sequence_id: str, outcome: _Outcome) -> dict[str, object]:
    photo, inspection = outcome.photo, outcome.inspection
    # The API's values first; the file's EXIF only where the API has none.
    lat, lng = (photo.lat, photo.lng) if photo.lat is not None else (inspection.lat, inspection.lng)
    return {
        "image_id": f"{sequence_id}/{photo.photo_id}",
        "sequence_id": sequence_id,
        "sequence_index": photo.sequence_index,
        # A photo that could not be fetched has no file: no path that points nowhere.
        "path": f"{sequence_id}/{photo.photo_id}.jpg" if inspection.ok else None,
        "sha256": inspection.sha256,
        "bytes": inspection.bytes,
        "width": inspection.width,
        "height": inspection.height,
        "captured_at": photo.captured_at or inspection.captured_at,
        "lat": lat,
        "lng": lng,
        "status": inspection.status,
        "reason": inspection.reason,
        "photo_id": photo.photo_id,
        "heading": photo.heading,
        "source_url": outcome.source_url,
        "details_url": photo.details_url,
        "licence": LICENCE,
        "attribution": ATTRIBUTION,
    }


def download_sequence(
    client: KartaViewClient,
    sequence_id: str,
    images_dir: Path,
    image_size: ImageSize = "thumbnail",
    progress: DownloadProgressCallback | None = None,
    workers: int = 4,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pd.DataFrame:
    """Download one sequence's photos; one raw_image_sequences row (+ attribution) per photo.

    A photo that cannot be fetched is a rejected row with its reason; the sequence still
    completes. Listing the sequence failing for good raises KartaViewError. An exception
    from `progress` stops the download (running fetches finish and land first).
    """
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    if parse_id(sanitize_sequence_id(sequence_id)) is None:
        raise ValueError(f"KartaView sequence id must be digits, got {sequence_id!r}")
    sequence_id = sanitize_sequence_id(sequence_id)
    photos = client.sequence_photos(sequence_id)
    if not photos:
        log.info("kartaview sequence %s has no photos", sequence_id)
        return _empty_frame()
    images_dir = Path(images_dir)
    sequence_dir = images_dir / sequence_id
    sequence_dir.mkdir(parents=True, exist_ok=True)
    for stale in sequence_dir.glob(_STALE_TEMP_FILES):
        stale.unlink(missing_ok=True)  # a killed run's half-written downloads

    started = time.monotonic()
    outcomes: list[_Outcome] = []
    ok = rejected = already = downloaded = 0
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"kartaview-{sequence_id}")
    try:
        futures = [
            pool.submit(_fetch_photo, client, photo, sequence_dir, image_size, max_bytes)
            for photo in photos
        ]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            ok += outcome.inspection.ok
            rejected += not outcome.inspection.ok
            already += outcome.already_on_disk
            downloaded += outcome.downloaded_bytes
            if not outcome.inspection.ok:
                log.warning(
                    "kartaview photo %s/%s rejected: %s",
                    sequence_id,
                    outcome.photo.photo_id,
                    outcome.inspection.reason,
                )
            if progress is not None:
                progress(
                    SequenceProgress(
                        sequence_id=sequence_id,
                        done=len(outcomes),
                        total=len(photos),
                        ok=ok,
                        rejected=rejected,
                        already_on_disk=already,
                        bytes_downloaded=downloaded,
                        elapsed_s=time.monotonic() - started,
                    )
                )
    finally:
        # On error, drop queued photos but let running fetches land (they are valid files).
        pool.shutdown(wait=True, cancel_futures=True)
    order = {photo.photo_id: position for position, photo in enumerate(photos)}
    outcomes.sort(key=lambda outcome: order[outcome.photo.photo_id])
    return _frame([_row(sequence_id, outcome) for outcome in outcomes])
