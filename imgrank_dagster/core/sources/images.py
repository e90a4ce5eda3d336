"""Checking one image file: does it decode, how big is it, when and where was it taken.

Every source (folder, KartaView) runs each file through `inspect_image`, so a bad file is
rejected with the same reasons whatever its origin.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_MAX_PIXELS = 64_000_000  # larger is treated as a decompression bomb
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132


@dataclass(frozen=True)
class ImageInspection:
    status: str  # "ok" or "rejected"
    reason: str  # empty when ok
    sha256: str
    bytes: int
    width: int | None = None
    height: int | None = None
    captured_at: datetime | None = None
    lat: float | None = None
    lng: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _rejected(reason: str, sha256: str = "", size: int = 0) -> ImageInspection:
    return ImageInspection(status="rejected", reason=reason, sha256=sha256, bytes=size)


def inspect_image(
    path: Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ImageInspection:
    """Decode the whole file once; never raises for a bad image, returns a rejection instead.

    Whatever goes wrong with one file (unreadable, a decoder bug, an odd format) is that
    file's rejection with the reason, never an error of its sequence.
    """
    try:
        return _inspect_image(Path(path), max_pixels, max_bytes)
    except Exception as error:
        return _rejected(f"cannot inspect file: {type(error).__name__}: {str(error)[:200]}")


def _inspect_image(path: Path, max_pixels: int, max_bytes: int) -> ImageInspection:
    try:
        size = path.stat().st_size
    except OSError as error:
        return _rejected(f"cannot read file: {error.strerror or error}")
    if size == 0:
        return _rejected("empty file (0 bytes)")
    if size > max_bytes:
        return _rejected(f"file too large ({size} bytes > {max_bytes})", size=size)
    try:
        sha256 = file_sha256(path)
    except OSError as error:  # no read permission, an I/O error
        return _rejected(f"cannot read file: {error.strerror or error}", size=size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    return _rejected(
                        f"too many pixels ({width}x{height} > {max_pixels}), "
                        "possible decompression bomb",
                        sha256,
                        size,
                    )
                exif = image.getexif()
                if image.format == "JPEG":
                    # DCT-domain downscaling still reads every block of the stream (so a
                    # truncated file still fails) at a fraction of the cost of a full decode.
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                # load() decodes the whole stream: a truncated file fails here, not later.
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return _rejected(f"possible decompression bomb: {error}", sha256, size)
    except UnidentifiedImageError:
        return _rejected("not an image (unrecognised format)", sha256, size)
    except (OSError, SyntaxError, ValueError) as error:
        return _rejected(f"cannot decode image: {error}", sha256, size)
    captured_at, lat, lng = read_exif_capture(exif)
    return ImageInspection(
        status="ok",
        reason="",
        sha256=sha256,
        bytes=size,
        width=width,
        height=height,
        captured_at=captured_at,
        lat=lat,
        lng=lng,
    )


def _parse_exif_datetime(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip().rstrip("\x00"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _dms_to_degrees(dms: object, ref: object) -> float | None:
    try:
        degrees, minutes, seconds = (float(part) for part in dms)  # type: ignore[union-attr]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    if isinstance(ref, bytes):
        ref = ref.decode(errors="ignore")
    return -value if str(ref).strip().upper() in {"S", "W"} else value


def read_exif_capture(exif: Image.Exif) -> tuple[datetime | None, float | None, float | None]:
    """(capture time, lat, lng) from EXIF; each None when absent or implausible."""
    captured_at = _parse_exif_datetime(exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL))
    if captured_at is None:
        captured_at = _parse_exif_datetime(exif.get(_DATETIME))
    gps = exif.get_ifd(_GPS_IFD)
    lat = _dms_to_degrees(gps.get(2), gps.get(1)) if gps else None
    lng = _dms_to_degrees(gps.get(4), gps.get(3)) if gps else None
    if lat is None or lng is None or not (-90 <= lat <= 90 and -180 <= lng <= 180):
        lat = lng = None
    return captured_at, lat, lng


def exif_capture_time(path: Path) -> datetime | None:
    """The EXIF capture time of an image file from its header only (no decode); None when
    the file has none or cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                captured_at, _, _ = read_exif_capture(image.getexif())
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return captured_at
