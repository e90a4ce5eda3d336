"""A stand-in KartaView server on 127.0.0.1 for tests and offline demos.

Serves the v2 shapes of shared/docs/kartaview_api.md §10 - `/2.0/photo/` (lat/lng proximity or
sequenceId paging), `/2.0/sequence/{id}/photos`, `/2.0/sequence/{id}` - and generated JPEGs
under `/files/photo/...`, with the live API's quirks switchable (`Quirks`) and faults injected
on demand (`add_fault`). Every request is counted per path.

    with FakeKartaView(sequences=2, photos=10) as fake:
        fake.add_fault(fake.image_path(photo_id, "lth"), status=404)
        client = KartaViewClient(fake.base_url, ...)

Command line (runs until Ctrl-C):
    python -m imgrank_dagster.devtools.kartaview_stand_in --port 8765 --sequences 3 --photos 20
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image, ImageDraw

EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180
MAX_ITEMS_PER_PAGE = 100
DEFAULT_ITEMS_PER_PAGE = 40
DEFAULT_RADIUS_M = 50.0
# Pixel sizes per size prefix: small, so tests stay fast, yet distinct per photo.
IMAGE_SIZES = {"proc": (320, 240), "wrapped_proc": (320, 240), "lth": (160, 120), "th": (80, 60)}
_IMAGE_PATH = re.compile(r"^/files/photo/\d+/\d+/\d+/(?P<size>[a-z_]+)/(?P<name>[\w.-]+)$")
_SEQUENCE_PATH = re.compile(r"^/2\.0/sequence/(?P<id>[^/]+)(?P<photos>/photos)?/?$")
_HTTP_MESSAGES = {
    200: "Success",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_API_MESSAGES = {
    600: "The request has been processed without incidents",
    601: "The request has an empty response",
    400: "Restricted access!",
    404: "Not found",
    408: "Query timeout",
    429: "Too many requests",
}


@dataclass
class Quirks:
    """Live-API oddities; each one on makes the fake behave that way for every response."""

    numbers_as_strings: bool = True  # the real API sends ids, coordinates, counts as strings
    out_of_order: bool = False  # photos shuffled within and across pages
    repeat_across_pages: bool = False  # each page repeats a photo of the previous page
    data_as_object: bool = False  # result.data as {"<index>": photo, ...}
    sequence_id_in_join_only: bool = False  # no sequenceId, only sequence.id
    odd_dates: bool = False  # shotDate with ".000", and "0000-00-00 00:00:00"
    hostile_names: bool = False  # photo `name` is "../../x.jpg"
    template_urls_only: bool = False  # fileurlLTh/Proc hold "{{sizeprefix}}", only fileurl fills
    more_data_past_end: bool = False  # hasMoreData stays true; only 601 ends the paging


@dataclass(frozen=True)
class FakePhoto:
    photo_id: str
    sequence_id: str
    index: int
    lat: float
    lng: float
    heading: float
    shot_date: datetime
    file_hash: str

    @property
    def file_name(self) -> str:
        return f"{self.sequence_id}_{self.file_hash}.jpg"


@dataclass
class _Fault:
    path: str
    photo_id: str | None
    sizes: frozenset[str] | None
    query: dict[str, str]
    status: int | None
    retry_after: str | None
    body: bytes | None
    content_type: str | None
    delay_s: float
    drop_connection: bool
    truncate: bool
    omit_length: bool
    remaining: int | None

    def matches(
        self, path: str, query: Mapping[str, str], image: tuple[FakePhoto, str] | None
    ) -> bool:
        if self.remaining == 0:
            return False
        if any(query.get(key) != value for key, value in self.query.items()):
            return False
        if self.photo_id is not None:
            if image is None or image[0].photo_id != self.photo_id:
                return False
            return self.sizes is None or image[1] in self.sizes
        return path.startswith(self.path)


def _offset(lat: float, lng: float, north_m: float, east_m: float) -> tuple[float, float]:
    return (
        lat + north_m / METRES_PER_DEGREE,
        lng + east_m / (METRES_PER_DEGREE * math.cos(math.radians(lat))),
    )


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Haversine distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def render_jpeg(photo: FakePhoto, size: str) -> bytes:
    """A small JPEG that differs from every other photo's (colours and shapes from its id)."""
    width, height = IMAGE_SIZES[size]
    rng = random.Random(int(photo.photo_id))
    image = Image.new("RGB", (width, height), tuple(rng.randrange(40, 216) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(8, width // 2), y0 + rng.randrange(8, height // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    draw.text((4, 4), f"{photo.sequence_id}/{photo.index}", fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class FakeKartaView:
    """A threaded HTTP server on 127.0.0.1 that plays KartaView; see the module docstring."""

    def __init__(
        self,
        sequences: int = 3,
        photos: int = 20,
        *,
        origin: tuple[float, float] = (52.5200, 13.4050),
        sequence_gap_m: float = 60.0,
        photo_spacing_m: float = 5.0,
        quirks: Quirks | None = None,
        port: int = 0,
    ) -> None:
        if sequences < 0 or photos < 0:
            raise ValueError("sequences and photos must be >= 0")
        self.quirks = quirks or Quirks()
        self._port = port
        self._sequences: dict[str, list[FakePhoto]] = {}
        self._files: dict[str, FakePhoto] = {}
        self._faults: list[_Fault] = []
        self._hits: Counter[str] = Counter()
        self._requests: list[str] = []
        self._images: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for number in range(sequences):
            lat, lng = _offset(*origin, north_m=number * sequence_gap_m, east_m=0.0)
            self.add_sequence(lat, lng, photos, spacing_m=photo_spacing_m)

    # -- data --

    def add_sequence(
        self, lat: float, lng: float, photos: int, *, spacing_m: float = 5.0, heading: float = 90.0
    ) -> str:
        """A new sequence starting at (lat, lng), driving along `heading`; returns its id."""
        sequence_id = str(7_000_001 + len(self._sequences))
        start = datetime(2023, 4, 6, 3, 41, 1)
        members = []
        for index in range(photos):
            north = index * spacing_m * math.cos(math.radians(heading))
            east = index * spacing_m * math.sin(math.radians(heading))
            photo_lat, photo_lng = _offset(lat, lng, north, east)
            # Ids grow with the index but are not contiguous, as on the live API.
            photo_id = str(1_711_957_993 + len(self._sequences) * 100_000 + index * 16)
            members.append(
                FakePhoto(
                    photo_id=photo_id,
                    sequence_id=sequence_id,
                    index=index,
                    lat=round(photo_lat, 6),
                    lng=round(photo_lng, 6),
                    heading=heading,
                    shot_date=start + timedelta(seconds=2 * index),
                    file_hash=hashlib.md5(photo_id.encode()).hexdigest(),
                )
            )
        with self._lock:
            self._sequences[sequence_id] = members
            self._files.update({photo.file_name: photo for photo in members})
        return sequence_id

    def sequence_ids(self) -> list[str]:
        return list(self._sequences)

    def photos(self, sequence_id: str) -> list[FakePhoto]:
        return list(self._sequences[sequence_id])

    def image_path(self, photo_id: str, size: str = "lth") -> str:
        photo = self._photo(photo_id)
        return f"/files/photo/2023/4/6/{size}/{photo.file_name}"

    def image_bytes(self, photo_id: str, size: str = "lth") -> bytes:
        return self._image(self._photo(photo_id), size)

    def _photo(self, photo_id: str) -> FakePhoto:
        for members in list(self._sequences.values()):
            for photo in members:
                if photo.photo_id == photo_id:
                    return photo
        raise KeyError(f"fake KartaView has no photo {photo_id!r}")

    def _image(self, photo: FakePhoto, size: str) -> bytes:
        key = (photo.photo_id, size)
        with self._lock:
            cached = self._images.get(key)
        if cached is None:
            cached = render_jpeg(photo, size)
            with self._lock:
                self._images[key] = cached
        return cached

    # -- faults and counters --

    def add_fault(
        self,
        path: str = "",
        *,
        photo_id: str | None = None,
        sizes: Collection[str] | None = None,
        query: Mapping[str, str] | None = None,
        status: int | None = None,
        retry_after: str | None = None,
        body: bytes | str | None = None,
        content_type: str | None = None,
        delay_s: float = 0.0,
        drop_connection: bool = False,
        truncate: bool = False,
        omit_length: bool = False,
        times: int | None = None,
    ) -> None:
        """Misbehave on matching requests, for the first `times` of them (None: always).

        A request matches by path prefix (`path`), or by photo (`photo_id`, optionally only
        some `sizes` such as {"lth", "th"}), and only if its query has every `query` item.
        What happens: wait `delay_s` first; then either answer `status` (JSON error envelope
        on API paths unless `body` is given; `retry_after` sets that header), or serve the
        normal response with the connection dropped halfway (`drop_connection`) or its body
        cut in half with a matching Content-Length (`truncate`), or sent without any
        Content-Length, ended by closing the connection (`omit_length`). `body` alone
        replaces the normal body with HTTP 200 (e.g. a non-JSON page).
        """
        if not path and photo_id is None:
            raise ValueError("a fault needs a path prefix or a photo_id")
        if (
            status is None
            and body is None
            and not (delay_s or drop_connection or truncate or omit_length)
        ):
            raise ValueError("a fault must do something: status, body, delay, drop or truncate")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._faults.append(
                _Fault(
                    path=path,
                    photo_id=photo_id,
                    sizes=frozenset(sizes) if sizes is not None else None,
                    query=dict(query or {}),
                    status=status,
                    retry_after=retry_after,
                    body=body.encode() if isinstance(body, str) else body,
                    content_type=content_type,
                    delay_s=delay_s,
                    drop_connection=drop_connection,
                    truncate=truncate,
                    omit_length=omit_length,
                    remaining=times,
                )
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self._hits.clear()
            self._requests.clear()

    def hits(self, path_prefix: str = "/") -> int:
        """How many requests had a path starting with path_prefix."""
        with self._lock:
            return sum(n for path, n in self._hits.items() if path.startswith(path_prefix))

    def image_hits(self, photo_id: str, sizes: Collection[str] | None = None) -> int:
        """How many image requests were made for one photo (any size, or only `sizes`)."""
        photo = self._photo(photo_id)
        with self._lock:
            total = 0
            for path, count in self._hits.items():
                match = _IMAGE_PATH.match(path)
                same_photo = match is not None and match["name"] == photo.file_name
                if same_photo and (sizes is None or match["size"] in sizes):
                    total += count
            return total

    @property
    def requested(self) -> list[str]:
        """Every request target (path and query, as sent), in arrival order."""
        with self._lock:
            return list(self._requests)

    # -- lifecycle --

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("fake KartaView is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKartaView:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._server = _QuietServer(("127.0.0.1", self._port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # quick stop(); tests start many servers
            name="fake-kartaview",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeKartaView:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- request handling (called from handler threads) --

    def _record(self, target: str) -> None:
        with self._lock:
            self._hits[urlsplit(target).path] += 1
            self._requests.append(target)

    def _take_fault(
        self, path: str, query: Mapping[str, str], image: tuple[FakePhoto, str] | None
    ) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, query, image):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def _image_target(self, path: str) -> tuple[FakePhoto, str] | None:
        match = _IMAGE_PATH.match(path)
        if match is None or match["size"] not in IMAGE_SIZES:
            return None
        photo = self._files.get(match["name"])
        return (photo, match["size"]) if photo is not None else None

    def respond(self, path: str, query: Mapping[str, str]) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) of the fault-free answer."""
        if path.startswith("/files/"):
            image = self._image_target(path)
            if image is None:
                blob = b"<Error><Code>BlobNotFound</Code></Error>"
                return 404, "application/xml", blob
            return 200, "image/jpeg", self._image(*image)
        if path.rstrip("/") == "/2.0/photo":
            return self._photo_search(query)
        match = _SEQUENCE_PATH.match(path)
        if match:
            if match["photos"]:
                return self._photo_page(self._sequences.get(match["id"], []), query, None)
            return self._sequence_details(match["id"])
        return _envelope(404, 404, None)

    def _photo_search(self, query: Mapping[str, str]) -> tuple[int, str, bytes]:
        if "sequenceId" in query:
            return self._photo_page(self._sequences.get(query["sequenceId"], []), query, None)
        if "lat" in query and "lng" in query:
            try:
                lat, lng = float(query["lat"]), float(query["lng"])
                radius = float(query.get("radius", DEFAULT_RADIUS_M))
            except ValueError:
                return _envelope(400, 400, None, "Invalid lat, lng or radius")
            near = []
            for members in list(self._sequences.values()):
                for photo in members:
                    distance = distance_m(lat, lng, photo.lat, photo.lng)
                    if distance <= radius:
                        near.append((photo, distance))
            # The official clients ask for orderBy=id desc; answer in that order.
            near.sort(key=lambda item: int(item[0].photo_id), reverse=True)
            photos = [photo for photo, _ in near]
            distances = {photo.photo_id: d for photo, d in near}
            return self._photo_page(photos, query, distances)
        return _envelope(400, 400, None)  # "Restricted access!" without a filter

    def _photo_page(
        self,
        photos: list[FakePhoto],
        query: Mapping[str, str],
        distances: Mapping[str, float] | None,
    ) -> tuple[int, str, bytes]:
        try:
            page = int(query.get("page", "1"))
            per_page = int(query.get("itemsPerPage", str(DEFAULT_ITEMS_PER_PAGE)))
        except ValueError:
            return _envelope(400, 400, None, "Invalid page or itemsPerPage")
        if per_page > MAX_ITEMS_PER_PAGE or per_page < 1 or page < 1:
            return _envelope(400, 400, None, "Invalid page or itemsPerPage")
        quirks = self.quirks
        ordered = list(photos)
        if quirks.out_of_order:
            random.Random(len(ordered)).shuffle(ordered)  # same order on every request
        start = (page - 1) * per_page
        items = ordered[start : start + per_page]
        if not items:
            return _envelope(200, 601, None)  # a page past the end
        if quirks.out_of_order:
            items.reverse()
        if quirks.repeat_across_pages and start > 0:
            items.insert(0, ordered[start - 1])  # the previous page's last photo again
        more = quirks.more_data_past_end or start + per_page < len(ordered)
        join = query.get("join", "")
        rendered = [
            self._photo_json(photo, "sequence" in join, (distances or {}).get(photo.photo_id))
            for photo in items
        ]
        data: object = rendered
        if quirks.data_as_object:
            data = {str(photo.index): item for photo, item in zip(items, rendered, strict=True)}
        return _envelope(200, 600, {"data": data, "hasMoreData": more})

    def _sequence_details(self, sequence_id: str) -> tuple[int, str, bytes]:
        members = self._sequences.get(sequence_id)
        if not members:
            return _envelope(200, 601, None)
        first = members[0]
        data = {
            "id": sequence_id,
            "userId": "304",
            "currentLat": first.lat,
            "currentLng": first.lng,
            "countActivePhotos": len(members),
            "dateAdded": _date(first.shot_date),
            "sequenceType": "photo",
            "status": "active",
            "storage": "storage13",
        }
        return _envelope(200, 600, {"data": self._numbers(data)})

    def _photo_json(
        self, photo: FakePhoto, joined: bool, distance: float | None
    ) -> dict[str, object]:
        quirks = self.quirks
        base = f"{self.base_url}/files/photo/2023/4/6"
        name = photo.file_name
        shot_date = _date(photo.shot_date)
        if quirks.odd_dates and photo.index % 3 == 1:
            shot_date += ".000"
        if quirks.odd_dates and photo.index % 3 == 2:
            shot_date = "0000-00-00 00:00:00"
        item: dict[str, object] = {
            "id": int(photo.photo_id),
            "sequenceId": int(photo.sequence_id),
            "sequenceIndex": photo.index,
            "lat": photo.lat,
            "lng": photo.lng,
            "matchLat": 0.0,
            "matchLng": 0.0,
            "heading": photo.heading,
            "headers": 0.0,
            "distance": round(distance, 2) if distance is not None else 0.0,
            "shotDate": shot_date,
            "dateAdded": _date(photo.shot_date + timedelta(minutes=35)),
            "projection": "PLANE",
            "fieldOfView": 0,
            "width": IMAGE_SIZES["proc"][0],
            "height": IMAGE_SIZES["proc"][1],
            "status": "active",
            "visibility": "public",
            "autoImgProcessingResult": "BLURRED",
            "name": "../../x.jpg" if quirks.hostile_names else name,
            "fileurl": f"{base}/{{{{sizeprefix}}}}/{name}",
            "fileurlProc": f"{base}/proc/{name}",
            "fileurlLTh": f"{base}/lth/{name}",
            "fileurlTh": f"{base}/th/{name}",
        }
        if quirks.template_urls_only:
            for key in ("fileurlProc", "fileurlLTh", "fileurlTh"):
                item[key] = item["fileurl"]
        if joined or quirks.sequence_id_in_join_only:
            item["sequence"] = {"id": int(photo.sequence_id), "userId": 304, "storage": "storage13"}
        if quirks.sequence_id_in_join_only:
            del item["sequenceId"]
        return self._numbers(item)

    def _numbers(self, item: dict[str, object]) -> dict[str, object]:
        if not self.quirks.numbers_as_strings:
            return item
        return {key: _stringify(value) for key, value in item.items()}


def _stringify(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return f"{value:.6f}" if abs(value) < 1000 else f"{value:.2f}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return {key: _stringify(inner) for key, inner in value.items()}
    return value


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _envelope(
    http: int, api_code: int, result: object, message: str | None = None
) -> tuple[int, str, bytes]:
    body = {
        "status": {
            "apiCode": api_code,
            "apiMessage": message or _API_MESSAGES.get(api_code, "Error"),
            "httpCode": http,
            "httpMessage": _HTTP_MESSAGES.get(http, "Error"),
        },
        "result": result,
    }
    return http, "application/json;charset=UTF-8", json.dumps(body).encode()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that gave up (timeouts) leave broken pipes behind; that is expected here.
        pass


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKartaView
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its load balancer
    server_version = "FakeKartaView/1.0"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        try:
            self._serve()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _serve(self) -> None:
        fake = self.fake
        fake._record(self.path)
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        image = fake._image_target(parts.path)
        fault = fake._take_fault(parts.path, query, image)
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault is not None and fault.status is not None:
            if fault.body is not None:
                status, kind, body = fault.status, fault.content_type or "text/plain", fault.body
            elif parts.path.startswith("/2.0/"):
                status, kind, body = _envelope(fault.status, fault.status, None)
            else:
                status, kind, body = fault.status, "text/plain", f"HTTP {fault.status}".encode()
            self._send(status, kind, body, retry_after=fault.retry_after)
            return
        status, kind, body = fake.respond(parts.path, query)
        if fault is not None and fault.body is not None:
            status, kind, body = 200, fault.content_type or "text/html", fault.body
        if fault is not None and fault.truncate:
            body = body[: len(body) // 2]
        if fault is not None and fault.drop_connection:
            # Promise the whole body, send half, hang up.
            self._send(status, kind, body[: len(body) // 2], declared_length=len(body))
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.omit_length:
            self._send(status, kind, body, omit_length=True)
            self.close_connection = True
            return
        self._send(status, kind, body)

    def _send(
        self,
        status: int,
        content_type: str,
        body: bytes,
        *,
        retry_after: str | None = None,
        declared_length: int | None = None,
        omit_length: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if omit_length:  # the body ends when the connection closes
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(declared_length or len(body)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake KartaView API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--sequences", type=int, default=3)
    parser.add_argument("--photos", type=int, default=20, help="photos per sequence")
    parser.add_argument("--lat", type=float, default=52.5200)
    parser.add_argument("--lng", type=float, default=13.4050)
    quirk_names = [item.name for item in fields(Quirks)]
    parser.add_argument(
        "--quirk", action="append", default=[], choices=quirk_names, help="switch a quirk on"
    )
    args = parser.parse_args(argv)
    quirks = Quirks(**{name: True for name in args.quirk})
    fake = FakeKartaView(
        args.sequences, args.photos, origin=(args.lat, args.lng), quirks=quirks, port=args.port
    )
    with fake:
        print(f"fake KartaView serving at {fake.base_url}", flush=True)
        print(f"  export IMGRANK_KARTAVIEW_URL={fake.base_url}", flush=True)
        for sequence_id in fake.sequence_ids():
            first = fake.photos(sequence_id)[0] if fake.photos(sequence_id) else None
            where = f" starting at lat={first.lat}, lng={first.lng}" if first else ""
            print(f"  sequence {sequence_id}: {len(fake.photos(sequence_id))} photos{where}")
        print("Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped.")


if __name__ == "__main__":
    main()
