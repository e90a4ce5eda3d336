"""Sidecar metadata: where and when each image was taken, from a CSV or GeoJSON file beside it.

Street-level exports (Panoramax, Mapillary, KartaView, OpenSfM) ship the capture time, the
position and the heading in a file next to the images rather than in EXIF. A sidecar is a
`.csv` with a header, or a `.geojson` FeatureCollection, that names image files:

- the file column (CSV) or property (GeoJSON): file, filename, file_name, path, image, name;
  a value is a path relative to the sidecar's folder, or a bare file name;
- latitude and longitude: lat/latitude and lon/lng/longitude columns, or a GeoJSON Point;
- capture time: datetime, captured_at, capture_time, timestamp, time, date (ISO 8601 text,
  with or without a zone, or Unix seconds or milliseconds); kept as naive UTC;
- heading in degrees: heading, face_heading_deg, compass_angle, azimuth, bearing, direction.

A file without a file column is not a sidecar and is ignored. Values that do not parse are
left empty (the image keeps what its EXIF says), never an error: one bad row must not sink a
sequence.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SIDECAR_SUFFIXES = frozenset({".csv", ".geojson"})
FILE_KEYS = ("file", "filename", "file_name", "path", "filepath", "image", "image_path", "name")
LAT_KEYS = ("lat", "latitude")
LNG_KEYS = ("lon", "lng", "longitude", "long")
TIME_KEYS = ("datetime", "captured_at", "capture_time", "timestamp", "time", "date")
HEADING_KEYS = ("heading", "face_heading_deg", "compass_angle", "azimuth", "bearing", "direction")
_MAX_SIDECAR_BYTES = 256 * 1024 * 1024
# Unix times above this are milliseconds (1e11 s is the year 5138).
_MILLISECONDS_FROM = 1e11


@dataclass(frozen=True)
class SidecarRecord:
    """What a sidecar says about one image; None where it says nothing usable."""

    captured_at: datetime | None = None
    lat: float | None = None
    lng: float | None = None
    heading: float | None = None
    source: str = ""  # the sidecar file, for messages


def _first(row: Mapping[str, object], keys: Iterable[str]) -> object:
    lowered = {str(key).strip().lower(): value for key, value in row.items()}
    for key in keys:
        value = lowered.get(key)
        if value not in (None, ""):
            return value
    return None


def _float(value: object, low: float, high: float) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and low <= number <= high else None


def parse_capture_time(value: object) -> datetime | None:
    """ISO 8601 text (zone -> UTC) or Unix seconds/milliseconds, as naive UTC; else None."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) or str(value).strip().replace(".", "", 1).isdigit():
        seconds = float(value)  # type: ignore[arg-type]
        if seconds >= _MILLISECONDS_FROM:
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(value).strip().replace("Z", "+00:00")
    for candidate in (text, text.replace(" ", "T", 1)):
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed
    try:  # EXIF-style "2024:05:01 10:32:05"
        return datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _record(row: Mapping[str, object], source: str, point: tuple | None = None) -> SidecarRecord:
    lat = _float(_first(row, LAT_KEYS), -90, 90)
    lng = _float(_first(row, LNG_KEYS), -180, 180)
    if (lat is None or lng is None) and point is not None and len(point) >= 2:
        lng, lat = _float(point[0], -180, 180), _float(point[1], -90, 90)
    if lat is None or lng is None:
        lat = lng = None
    heading = _float(_first(row, HEADING_KEYS), -math.inf, math.inf)
    return SidecarRecord(
        captured_at=parse_capture_time(_first(row, TIME_KEYS)),
        lat=lat,
        lng=lng,
        heading=heading % 360 if heading is not None else None,
        source=source,
    )


def _csv_rows(path: Path) -> list[tuple[str, SidecarRecord]]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.DictReader(handle)
        header = {str(name).strip().lower() for name in reader.fieldnames or []}
        if not header & set(FILE_KEYS):
            return []
        rows = []
        for row in reader:
            name = _first(row, FILE_KEYS)
            if isinstance(name, str) and name.strip():
                rows.append((name.strip(), _record(row, path.name)))
        return rows


def _geojson_rows(path: Path) -> list[tuple[str, SidecarRecord]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (json.JSONDecodeError, RecursionError):
        return []
    features = document.get("features") if isinstance(document, dict) else None
    rows = []
    for feature in features if isinstance(features, list) else []:
        if not isinstance(feature, dict) or not isinstance(feature.get("properties"), dict):
            continue
        properties = feature["properties"]
        name = _first(properties, FILE_KEYS)
        geometry = feature.get("geometry")
        point = None
        if isinstance(geometry, dict) and geometry.get("type") == "Point":
            coordinates = geometry.get("coordinates")
            point = tuple(coordinates) if isinstance(coordinates, list) else None
        if isinstance(name, str) and name.strip():
            rows.append((name.strip(), _record(properties, path.name, point)))
    return rows


def read_sidecar(path: Path) -> list[tuple[str, SidecarRecord]]:
    """(file name as written, record) for every row of one sidecar; [] when it is not one."""
    try:
        if path.stat().st_size > _MAX_SIDECAR_BYTES:
            return []
        if path.suffix.lower() == ".csv":
            return _csv_rows(path)
        return _geojson_rows(path)
    except (OSError, csv.Error, UnicodeError):
        return []


def sidecar_files(folders: Iterable[Path]) -> list[Path]:
    """The candidate sidecar files directly in these folders, in a stable order."""
    found: list[Path] = []
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        found.extend(
            entry
            for entry in entries
            if entry.suffix.lower() in SIDECAR_SUFFIXES
            and not entry.name.startswith(".")
            and entry.is_file()
        )
    return found


def sidecar_index(sidecars: Iterable[Path]) -> dict[Path | str, SidecarRecord]:
    """What the sidecars say, keyed by resolved file path and, where unique, by file name.

    A later sidecar's row for the same file replaces an earlier one's.
    """
    by_path: dict[Path | str, SidecarRecord] = {}
    by_name: dict[str, SidecarRecord | None] = {}
    for sidecar in sidecars:
        for name, record in read_sidecar(sidecar):
            relative = Path(name.replace("\\", "/"))
            by_path[(sidecar.parent / relative).resolve()] = record
            base = relative.name
            by_name[base] = record if base not in by_name or by_name[base] == record else None
    index: dict[Path | str, SidecarRecord] = dict(by_path)
    index.update({name: record for name, record in by_name.items() if record is not None})
    return index


def lookup(index: Mapping[Path | str, SidecarRecord], file: Path) -> SidecarRecord | None:
    """The sidecar record of one image file: by its path, else by its (unique) file name."""
    return index.get(file.resolve()) or index.get(file.name)
