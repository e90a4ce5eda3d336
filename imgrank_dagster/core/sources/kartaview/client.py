"""A small, defensive client for KartaView's public v2 read API.

Covers what a downloader needs (see shared/docs/kartaview_api.md): sequences near a point,
a sequence's photos page by page, and image files. Every request goes through one session,
a client-side rate limit, timeouts and bounded retries; every response is parsed as if any
field could be a string, missing, or shaped differently than documented.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlencode, urlsplit

import requests

from imgrank_dagster.core.config.collections import BoundingBox

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openstreetcam.org"
BASE_URL_ENV = "IMGRANK_KARTAVIEW_URL"
# Reports put the server's itemsPerPage cap at 100 or 150; 100 is safe for both.
PAGE_SIZE = 100
MAX_PAGES = 1000
LICENCE = "CC BY-SA 4.0"
ATTRIBUTION = "© Grab and KartaView Contributors"
DETAILS_URL = "https://kartaview.org/details/{sequence_id}/{sequence_index}"
USER_AGENT = "imgrank/0.1 (street-image labelling priority; python-requests)"

T = TypeVar("T")
ImageSize = Literal["thumbnail", "full"]
IMAGE_SIZES: tuple[str, ...] = ("thumbnail", "full")

API_OK = 600
API_EMPTY = 601  # "The request has an empty response": no rows, or a page past the end
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_ID_PATTERN = re.compile(r"^\d{1,20}$")
_DATE_PATTERN = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?$")


class KartaViewError(RuntimeError):
    """A KartaView request failed for good; names the endpoint and the code."""

    def __init__(self, endpoint: str, reason: str, code: int | None = None) -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.code = code
        super().__init__(f"KartaView {endpoint}: {reason}")


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, problem: str, code: int | None = None, retry_after: float | None = None):
        super().__init__(problem)
        self.problem = problem
        self.code = code
        self.retry_after = retry_after


# --- defensive value parsing --------------------------------------------------------------


def parse_int(value: object) -> int | None:
    """An int from an int or a numeric string ("12", " 12 ", "12.0"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = parse_float(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def parse_float(value: object) -> float | None:
    """A finite float from a number or a numeric string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def parse_id(value: object) -> str | None:
    """A KartaView id as a digit string; anything else (paths, names, negatives) is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if isinstance(value, str) and _ID_PATTERN.match(value.strip()):
        return value.strip()
    return None


def parse_datetime(value: object) -> datetime | None:
    """'YYYY-MM-DD HH:MM:SS[.fff]' (UTC by convention, returned naive); the zero date is None."""
    if not isinstance(value, str):
        return None
    match = _DATE_PATTERN.match(value.strip())
    if match is None or match.group(1) == "0000-00-00":
        return None
    try:
        parsed = datetime.strptime(f"{match.group(1)} {match.group(2)}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    fraction = match.group(3)
    return parsed.replace(microsecond=int(fraction.ljust(6, "0"))) if fraction else parsed


def parse_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in {"true", "1", "false", "0"}:
        return value.strip().lower() in {"true", "1"}
    return None


def result_items(data: object) -> list[dict]:
    """`result.data` as a list of objects: a list, or an object keyed by index (seen live)."""
    if isinstance(data, list):
        return [item for item in data if isinstance(item, dict)]
    if isinstance(data, dict):
        if data and all(str(key).strip().isdigit() for key in data):
            ordered = sorted(data.items(), key=lambda item: int(str(item[0]).strip()))
            return [item for _, item in ordered if isinstance(item, dict)]
        return [data] if data else []
    return []


def photo_sequence_id(raw: Mapping[str, object]) -> str | None:
    """`sequenceId`, or `sequence.id` when a joined result leaves the former out."""
    sequence_id = parse_id(raw.get("sequenceId"))
    if sequence_id is None:
        joined = raw.get("sequence")
        if isinstance(joined, dict):
            sequence_id = parse_id(joined.get("id"))
    return sequence_id


def _usable_url(url: object) -> str | None:
    """An absolute http(s) URL without template markers; never request '{{sizeprefix}}'."""
    if not isinstance(url, str):
        return None
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc or "{{" in url or "}}" in url:
        return None
    return url


def _unique(urls: list[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(url for url in urls if url))


def _urls_for_size(raw: Mapping[str, object], size: str) -> tuple[str, ...]:
    """Candidate URLs for one size ('lth' or 'proc'), in the doc's order of preference."""
    cdn_field, direct_field, path_field = {
        "lth": ("imageLthUrl", "fileurlLTh", "filepathLTh"),
        "proc": ("imageProcUrl", "fileurlProc", "filepathProc"),
    }[size]
    prefix = size
    if size == "proc" and str(raw.get("projection") or "PLANE").strip().upper() != "PLANE":
        prefix = "wrapped_proc"  # 360° photos keep their full image under wrapped_proc
    template = raw.get("fileurl")
    templated = (
        template.replace("{{sizeprefix}}", prefix)
        if isinstance(template, str) and "{{sizeprefix}}" in template
        else None
    )
    direct = [_usable_url(raw.get(cdn_field)), _usable_url(raw.get(direct_field))]
    urls = _unique([*direct, _usable_url(templated)])
    if urls:
        return urls
    # Only when the response has no URL at all: build one from storage host and file path.
    storage, filepath = raw.get("storage"), raw.get(path_field)
    storage_ok = isinstance(storage, str) and re.fullmatch(r"storage\d{1,3}", storage.strip())
    if storage_ok and isinstance(filepath, str):
        base = f"https://{storage.strip()}.openstreetcam.org/files/photo/"
        return _unique([_usable_url(base + filepath.strip().lstrip("/"))])
    return ()


def _inside(bbox: BoundingBox, raw: Mapping[str, object]) -> bool:
    lat, lng = parse_float(raw.get("lat")), parse_float(raw.get("lng"))
    if lat is None or lng is None:
        return False
    return bbox.min_lat <= lat <= bbox.max_lat and bbox.min_lng <= lng <= bbox.max_lng


@dataclass(frozen=True)
class Photo:
    """One photo of a sequence, with everything needed to fetch and attribute it."""

    photo_id: str
    sequence_id: str
    sequence_index: int
    lat: float | None
    lng: float | None
    heading: float | None
    captured_at: datetime | None
    thumbnail_urls: tuple[str, ...]
    full_urls: tuple[str, ...]

    @property
    def details_url(self) -> str:
        return DETAILS_URL.format(sequence_id=self.sequence_id, sequence_index=self.sequence_index)

    def image_urls(self, image_size: ImageSize) -> tuple[str, ...]:
        """URLs to try in order: the large thumbnail falls back to the full image (lth 404s)."""
        if image_size == "thumbnail":
            return _unique([*self.thumbnail_urls, *self.full_urls])
        if image_size == "full":
            return self.full_urls
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size!r}")

    @classmethod
    def from_api(cls, raw: Mapping[str, object], sequence_id: str | None = None) -> Photo | None:
        """Parse a v2 photo object; None when it has no usable id or index."""
        photo_id = parse_id(raw.get("id"))
        index = parse_int(raw.get("sequenceIndex"))
        owner = photo_sequence_id(raw) or sequence_id
        if photo_id is None or index is None or index < 0 or owner is None:
            return None
        lat, lng = parse_float(raw.get("lat")), parse_float(raw.get("lng"))
        # Out of range, or the "0.000000" pair that means "no position".
        in_range = lat is not None and lng is not None and -90 <= lat <= 90 and -180 <= lng <= 180
        if not in_range or (lat == 0 and lng == 0):
            lat = lng = None
        return cls(
            photo_id=photo_id,
            sequence_id=owner,
            sequence_index=index,
            lat=lat,
            lng=lng,
            heading=parse_float(raw.get("heading")),
            captured_at=parse_datetime(raw.get("shotDate")),
            thumbnail_urls=_urls_for_size(raw, "lth"),
            full_urls=_urls_for_size(raw, "proc"),
        )


# --- the client ----------------------------------------------------------------------------


def _describe_exception(error: BaseException) -> str:
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return "read timeout"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "connection dropped mid-response"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "connection error"
    return type(error).__name__


class KartaViewClient:
    """One session against the KartaView API, shared safely by download threads.

    `sleep` is called for every wait (rate limit, backoff, Retry-After) and `clock` times the
    rate limit, so tests can record the delays instead of waiting for them.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        max_retries: int = 4,
        requests_per_second: float = 2.0,
        backoff_base_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_retry_after_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
    ) -> None:
        base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"KartaView base URL {base_url!r} must be an http(s) URL")
        if len(timeout) != 2 or min(timeout) <= 0:
            raise ValueError(f"timeout must be (connect, read) seconds > 0, got {timeout!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be > 0, got {requests_per_second}")
        if backoff_base_s < 0 or max_backoff_s < 0 or max_retry_after_s < 0:
            raise ValueError("backoff and Retry-After limits must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.max_retries = max_retries
        self.requests_per_second = float(requests_per_second)
        self.backoff_base_s = backoff_base_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._clock = clock
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._random = random.Random()
        self._throttle_lock = threading.Lock()
        self._next_request_at = 0.0

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> KartaViewClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- API calls --

    def nearby_sequences(
        self, lat: float, lng: float, radius_m: float, *, bbox: BoundingBox | None = None
    ) -> list[str]:
        """Ids of sequences with photos within radius_m of (lat, lng), sorted numerically.

        With `bbox`, only photos inside the box count (grid circles overhang the box edges).
        """
        if not (-90 <= lat <= 90 and -180 <= lng <= 180):
            raise ValueError(f"point ({lat}, {lng}) is not a valid lat/lng")
        if radius_m <= 0:
            raise ValueError(f"radius_m must be > 0, got {radius_m}")
        params = {"lat": f"{lat:.7f}", "lng": f"{lng:.7f}", "radius": f"{radius_m:g}"}
        found: set[str] = set()
        skipped = 0
        for items in self._pages("/2.0/photo/", {**params, "join": "sequence"}):
            for raw in items:
                sequence_id = photo_sequence_id(raw)
                if sequence_id is None:
                    skipped += 1
                elif bbox is None or _inside(bbox, raw):
                    found.add(sequence_id)
        if skipped:
            log.warning("%d photos near (%s, %s) had no usable sequence id", skipped, lat, lng)
        return sorted(found, key=int)

    def sequence_photos(self, sequence_id: str) -> list[Photo]:
        """All photos of a sequence, sorted by sequence index and de-duplicated by photo id."""
        if parse_id(sequence_id) is None:
            raise ValueError(f"KartaView sequence id must be digits, got {sequence_id!r}")
        photos: dict[str, Photo] = {}
        unusable = foreign = 0
        for items in self._pages("/2.0/photo/", {"sequenceId": sequence_id}):
            new_ids = 0
            for raw in items:
                photo = Photo.from_api(raw, sequence_id)
                if photo is None:
                    unusable += 1
                elif photo.sequence_id != sequence_id:
                    foreign += 1
                elif photo.photo_id not in photos:
                    photos[photo.photo_id] = photo
                    new_ids += 1
            if new_ids == 0:
                # A server that ignores `page` would otherwise send us round forever.
                log.warning("sequence %s: a page brought no new photos; stopping", sequence_id)
                break
        if unusable or foreign:
            log.warning(
                "sequence %s: skipped %d photos without usable id/index and %d of other sequences",
                sequence_id,
                unusable,
                foreign,
            )
        return sorted(photos.values(), key=lambda p: (p.sequence_index, int(p.photo_id)))

    def fetch_image(self, url: str, destination: Path, *, max_bytes: int) -> int:
        """Stream url into destination (overwritten); returns the bytes written.

        Raises KartaViewError for HTTP errors, for bodies over max_bytes, and when retries
        run out on connection problems.
        """
        if _usable_url(url) is None:
            raise KartaViewError(f"GET {url}", "not a usable image URL (template or scheme)")
        endpoint = f"GET {url}"

        def save(response: requests.Response) -> int:
            if response.status_code != 200:
                raise KartaViewError(endpoint, f"HTTP {response.status_code}", response.status_code)
            declared = parse_int(response.headers.get("Content-Length"))
            if declared is not None and declared > max_bytes:
                raise KartaViewError(endpoint, f"too large ({declared} bytes > {max_bytes})", 200)
            written = 0
            with open(destination, "wb") as handle:
                for chunk in response.iter_content(chunk_size=64 * 1024):
                    written += len(chunk)
                    if written > max_bytes:
                        raise KartaViewError(endpoint, f"too large (> {max_bytes} bytes)", 200)
                    handle.write(chunk)
            return written

        return self._request(endpoint, url, None, save, stream=True)

    # -- plumbing --

    def _pages(self, path: str, params: Mapping[str, str]) -> Iterator[list[dict]]:
        """Each page's items until hasMoreData is false, the page is empty, or apiCode 601."""
        for page in range(1, MAX_PAGES + 1):
            paging = {"page": str(page), "itemsPerPage": str(PAGE_SIZE)}
            result = self._get_json(path, {**params, **paging})
            if result is None:
                return
            items = result_items(result.get("data"))
            if not items:
                return
            yield items
            more = parse_bool(result.get("hasMoreData"))
            if more is False or (more is None and len(items) < PAGE_SIZE):
                return
        log.warning("%s %s: stopped after %d pages", path, dict(params), MAX_PAGES)

    def _get_json(self, path: str, params: Mapping[str, str]) -> dict | None:
        """`result` of a v2 envelope (None for apiCode 601); KartaViewError otherwise."""
        endpoint = f"GET {path}?{urlencode(params)}"
        return self._request(
            endpoint, self.base_url + path, params, lambda r: self._envelope(endpoint, r)
        )

    def _envelope(self, endpoint: str, response: requests.Response) -> dict | None:
        http = response.status_code
        # Retryable HTTP statuses never get here: _request retries them before reading.
        try:
            body = response.json()
        except ValueError:
            snippet = response.text[:80].strip()
            kind = response.headers.get("Content-Type", "no content type")
            raise KartaViewError(
                endpoint, f"HTTP {http} answered a non-JSON body ({kind}): {snippet!r}", http
            ) from None
        status = body.get("status") if isinstance(body, dict) else None
        api_code = parse_int(status.get("apiCode")) if isinstance(status, dict) else None
        if api_code is None:
            raise KartaViewError(
                endpoint, f"HTTP {http} answered JSON without status.apiCode", http
            )
        message = str(status.get("apiMessage") or "").strip()
        if api_code == API_OK and http == 200:
            result = body.get("result")
            return result if isinstance(result, dict) else {}
        if api_code == API_EMPTY and http == 200:
            return None
        # An HTTP 200 whose envelope says "busy" or "timeout" is as transient as a real 429.
        if api_code in RETRYABLE_STATUS or "too many requests" in message.lower():
            problem = f"apiCode {api_code} {message!r} (HTTP {http})"
            raise _Retry(problem, api_code, self._retry_after(response))
        raise KartaViewError(endpoint, f"apiCode {api_code} {message!r} (HTTP {http})", api_code)

    def _request(
        self,
        endpoint: str,
        url: str,
        params: Mapping[str, str] | None,
        handle: Callable[[requests.Response], T],
        *,
        stream: bool = False,
    ) -> T:
        """GET with throttle, timeouts and bounded retries; `handle` reads the response."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            self._throttle()
            try:
                with self._session.get(
                    url, params=params, timeout=self.timeout, stream=stream
                ) as response:
                    if response.status_code in RETRYABLE_STATUS:
                        raise _Retry(
                            f"HTTP {response.status_code}",
                            response.status_code,
                            self._retry_after(response),
                        )
                    return handle(response)
            except _Retry as retry:
                problem, code, delay = retry.problem, retry.code, retry.retry_after
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as error:
                problem, code, delay = _describe_exception(error), None, None
            except requests.exceptions.RequestException as error:
                raise KartaViewError(endpoint, f"request failed: {error}") from error
            if attempt + 1 == attempts:
                raise KartaViewError(endpoint, f"{problem} after {attempts} attempts", code)
            if delay is None:
                delay = self._backoff(attempt)
            log.info(
                "%s: %s; retry %d/%d in %.2fs", endpoint, problem, attempt + 1, attempts - 1, delay
            )
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, so parallel workers do not retry in lockstep."""
        ceiling = min(self.max_backoff_s, self.backoff_base_s * 2**attempt)
        return ceiling * self._random.uniform(0.5, 1.0)

    def _retry_after(self, response: requests.Response) -> float | None:
        """Retry-After in seconds (delta-seconds or HTTP date), capped; None when absent."""
        value = response.headers.get("Retry-After")
        if not value:
            return None
        seconds = parse_float(value)
        if seconds is None:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
        return min(max(seconds, 0.0), self.max_retry_after_s)

    def _throttle(self) -> None:
        """Space requests at most requests_per_second apart, across all threads."""
        with self._throttle_lock:
            now = self._clock()
            start = max(now, self._next_request_at)
            self._next_request_at = start + 1.0 / self.requests_per_second
        wait = start - now
        if wait > 0:
            self._sleep(wait)
