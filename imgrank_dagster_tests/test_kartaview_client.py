"""KartaView client and discovery against the fake KartaView server on 127.0.0.1."""

from __future__ import annotations

import email.utils
import math
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
import requests

from imgrank_dagster.core.config import BoundingBox, GeoPoint, KartaViewSource
from imgrank_dagster.core.sources.kartaview import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    KartaViewClient,
    KartaViewError,
    Photo,
    discover_sequences,
    grid_points,
)
from imgrank_dagster.core.sources.kartaview.client import (
    parse_datetime,
    parse_float,
    parse_id,
    parse_int,
    result_items,
)
from imgrank_dagster.devtools.kartaview_stand_in import FakeKartaView, Quirks, distance_m


class RecordingSleep:
    """Stands in for time.sleep: remembers each requested delay, advances a fake clock."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.now = 0.0

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeKartaView]:
    with FakeKartaView(sequences=2, photos=6) as server:
        yield server


def make_client(
    fake: FakeKartaView, sleep: RecordingSleep | None = None, **options: object
) -> KartaViewClient:
    settings: dict[str, object] = {
        "timeout": (2.0, 0.5),
        "max_retries": 3,
        "requests_per_second": 1e6,  # 1 µs apart: never waits between real round trips
        "backoff_base_s": 0.01,
        "sleep": sleep or RecordingSleep(),
    }
    settings.update(options)
    return KartaViewClient(fake.base_url, **settings)  # type: ignore[arg-type]


# --- configuration -----------------------------------------------------------------------------


def test_base_url_comes_from_the_environment_then_the_default(monkeypatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/")
    assert KartaViewClient().base_url == "http://127.0.0.1:9"
    monkeypatch.delenv(BASE_URL_ENV)
    assert KartaViewClient().base_url == DEFAULT_BASE_URL == "https://api.openstreetcam.org"
    assert KartaViewClient("http://127.0.0.1:10").base_url == "http://127.0.0.1:10"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_url": "ftp://example"}, "http"),
        ({"requests_per_second": 0}, "requests_per_second"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": (0, 1)}, "timeout"),
    ],
)
def test_bad_client_settings_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KartaViewClient(**options)


# --- defensive parsing -------------------------------------------------------------------------


def test_scalars_are_parsed_from_strings_numbers_and_junk() -> None:
    assert parse_int("12") == parse_int(12) == parse_int(" 12.0 ") == 12
    assert parse_int("1.5") is None and parse_int(True) is None and parse_int("x") is None
    assert parse_float("-38.023705") == -38.023705 and parse_float("nan") is None
    assert parse_id("1711957993") == "1711957993" and parse_id(7068281) == "7068281"
    assert parse_id("../../x") is None and parse_id(-1) is None and parse_id("") is None
    assert parse_datetime("2023-04-06 03:41:01") == datetime(2023, 4, 6, 3, 41, 1)
    assert parse_datetime("2023-03-06 02:29:12.000") == datetime(2023, 3, 6, 2, 29, 12)
    assert parse_datetime("2023-03-06 02:29:12.250") == datetime(2023, 3, 6, 2, 29, 12, 250000)
    assert parse_datetime("0000-00-00 00:00:00") is None
    assert parse_datetime("2023-13-45 00:00:00") is None and parse_datetime(None) is None


def test_result_data_is_accepted_as_list_or_object_keyed_by_index() -> None:
    first, second = {"id": "1"}, {"id": "2"}
    assert result_items([first, "junk", second]) == [first, second]
    assert result_items({"483": second, "0": first}) == [first, second]
    assert result_items({"id": "9"}) == [{"id": "9"}]  # a /{id} endpoint's single object
    assert result_items(None) == [] and result_items("x") == []


def test_photo_parsing_falls_back_and_never_keeps_template_urls() -> None:
    base = "https://storage13.openstreetcam.org/files/photo/2023/4/6"
    raw = {
        "id": "1711957993",
        "sequence": {"id": "7068281"},  # no sequenceId: take sequence.id
        "sequenceIndex": "4",
        "lat": "-38.023705",
        "lng": "144.409032",
        "heading": "168.86",
        "shotDate": "2023-04-06 03:41:01.000",
        "projection": "SPHERE",
        "fileurl": f"{base}/{{{{sizeprefix}}}}/a.jpg",
        "fileurlLTh": f"{base}/{{{{sizeprefix}}}}/a.jpg",
    }
    photo = Photo.from_api(raw)
    assert photo is not None
    assert (photo.photo_id, photo.sequence_id, photo.sequence_index) == ("1711957993", "7068281", 4)
    assert (photo.lat, photo.lng, photo.heading) == (-38.023705, 144.409032, 168.86)
    assert photo.captured_at == datetime(2023, 4, 6, 3, 41, 1)
    assert photo.thumbnail_urls == (f"{base}/lth/a.jpg",)
    assert photo.full_urls == (f"{base}/wrapped_proc/a.jpg",)  # 360° photo
    assert photo.details_url == "https://kartaview.org/details/7068281/4"
    assert not any("{{" in url for url in photo.image_urls("thumbnail"))

    # No URL at all: built from storage host and file path, as newer Rapid does.
    parts = {"id": 5, "sequenceId": 9, "sequenceIndex": 0, "storage": "storage13",
             "filepathLTh": "2023/4/6/lth/b.jpg", "shotDate": "0000-00-00 00:00:00",
             "lat": "0.000000", "lng": "0.000000"}  # fmt: skip
    photo = Photo.from_api(parts)
    assert photo is not None and photo.captured_at is None and photo.lat is None
    assert photo.thumbnail_urls == (
        "https://storage13.openstreetcam.org/files/photo/2023/4/6/lth/b.jpg",
    )
    assert photo.image_urls("full") == ()

    for broken in ({**parts, "id": "../../x"}, {**parts, "sequenceIndex": None}):
        assert Photo.from_api(broken) is None


# --- proximity search and discovery ------------------------------------------------------------


def test_nearby_sequences_follows_the_radius(fake: FakeKartaView) -> None:
    first, second = fake.sequence_ids()
    start = fake.photos(first)[0]
    client = make_client(fake)
    assert client.nearby_sequences(start.lat, start.lng, 20) == [first]
    assert client.nearby_sequences(start.lat, start.lng, 200) == [first, second]
    assert client.nearby_sequences(0.0, 0.0, 100) == []  # 601 "empty response"
    assert "join=sequence" in fake.requested[0]


def test_grid_circles_cover_the_whole_box() -> None:
    bbox = BoundingBox(min_lat=52.50, min_lng=13.40, max_lat=52.51, max_lng=13.42)
    radius = 150.0
    centres = grid_points(bbox, radius)
    rng = random.Random(0)
    for _ in range(2000):
        lat = rng.uniform(bbox.min_lat, bbox.max_lat)
        lng = rng.uniform(bbox.min_lng, bbox.max_lng)
        assert min(distance_m(lat, lng, *centre) for centre in centres) <= radius
    # Not wastefully dense: about box area / inscribed-square area.
    box_m2 = (0.01 * 111_195) * (0.02 * 111_195 * math.cos(math.radians(52.5)))
    assert len(centres) <= 1.3 * box_m2 / (2 * radius**2) + 10


def test_bbox_discovery_deduplicates_sequences_and_ignores_ones_outside(
    fake: FakeKartaView,
) -> None:
    first, second = fake.sequence_ids()
    start = fake.photos(first)[0]
    outside = fake.add_sequence(start.lat - 0.00027, start.lng, photos=3)  # 8 m south of box
    box = BoundingBox(
        min_lat=start.lat - 0.0002,
        min_lng=start.lng - 0.0002,
        max_lat=start.lat + 0.0008,
        max_lng=start.lng + 0.0006,
    )
    source = KartaViewSource(type="kartaview", bbox=box)
    client = make_client(fake)
    found = discover_sequences(client, source, bbox_radius_m=25)
    queries = len(grid_points(box, 25))
    assert queries > 4
    assert fake.hits("/2.0/photo") == queries  # one page per grid cell
    assert found == [first, second]  # each seen by several cells, listed once
    assert outside not in found
    # ... although its photos are inside some grid circles: the box filter left it out.
    grid = grid_points(box, 25)
    assert any(outside in client.nearby_sequences(lat, lng, 25) for lat, lng in grid)

    near_outside = GeoPoint(lat=start.lat - 0.00027, lng=start.lng, radius_m=10)
    with_point = source.model_copy(update={"points": [near_outside]})
    assert discover_sequences(client, with_point, bbox_radius_m=25) == [first, second, outside]
    capped = with_point.model_copy(update={"max_sequences": 2})
    assert discover_sequences(client, capped, bbox_radius_m=25) == [first, second]


def test_a_box_too_big_for_its_radius_is_refused_before_any_request(fake: FakeKartaView) -> None:
    box = BoundingBox(min_lat=52.0, min_lng=13.0, max_lat=53.0, max_lng=14.0)
    source = KartaViewSource(type="kartaview", bbox=box)
    with pytest.raises(ValueError, match="proximity queries"):
        discover_sequences(make_client(fake), source, bbox_radius_m=50)
    assert fake.hits() == 0


# --- paging --------------------------------------------------------------------------------------


def test_paging_stops_when_has_more_data_is_false() -> None:
    with FakeKartaView(sequences=1, photos=250) as fake:
        (sequence,) = fake.sequence_ids()
        photos = make_client(fake).sequence_photos(sequence)
        assert [p.sequence_index for p in photos] == list(range(250))
        assert fake.hits("/2.0/photo") == 3
        assert all("itemsPerPage=100" in target for target in fake.requested)


def test_a_failing_middle_page_is_retried_alone() -> None:
    with FakeKartaView(sequences=1, photos=250) as fake:
        (sequence,) = fake.sequence_ids()
        fake.add_fault("/2.0/photo", query={"page": "2"}, status=500, times=1)
        assert len(make_client(fake).sequence_photos(sequence)) == 250
        pages = [target.split("page=")[1].split("&")[0] for target in fake.requested]
        assert pages == ["1", "2", "2", "3"]


def test_paging_stops_on_601_past_the_end() -> None:
    with FakeKartaView(sequences=1, photos=200, quirks=Quirks(more_data_past_end=True)) as fake:
        (sequence,) = fake.sequence_ids()
        photos = make_client(fake).sequence_photos(sequence)
        assert len(photos) == 200
        assert fake.hits("/2.0/photo") == 3  # the third page answers 601
        assert fake.requested[-1].endswith("page=3&itemsPerPage=100")


def test_photos_out_of_order_repeated_and_keyed_by_index_come_back_sorted_and_unique() -> None:
    quirks = Quirks(out_of_order=True, repeat_across_pages=True, data_as_object=True)
    with FakeKartaView(sequences=1, photos=230, quirks=quirks) as fake:
        (sequence,) = fake.sequence_ids()
        photos = make_client(fake).sequence_photos(sequence)
        expected = [(p.photo_id, p.index) for p in fake.photos(sequence)]
        assert [(p.photo_id, p.sequence_index) for p in photos] == expected


def test_string_numbers_odd_dates_and_missing_sequence_id_parse_like_plain_ones() -> None:
    plain = Quirks(numbers_as_strings=False)
    odd = Quirks(numbers_as_strings=True, odd_dates=True, sequence_id_in_join_only=True)
    results = []
    for quirks in (plain, odd):
        with FakeKartaView(sequences=1, photos=6, quirks=quirks) as fake:
            (sequence,) = fake.sequence_ids()
            photos = make_client(fake).sequence_photos(sequence)
            results.append([(p.photo_id, p.sequence_id, p.sequence_index, p.lat, p.lng,
                             p.heading, p.captured_at) for p in photos])  # fmt: skip
            assert {p.sequence_id for p in photos} == {sequence}
    plain_rows, odd_rows = results
    for index, (a, b) in enumerate(zip(plain_rows, odd_rows, strict=True)):
        if index % 3 == 2:  # "0000-00-00 00:00:00": unknown
            assert b[:6] == a[:6] and b[6] is None
        else:  # ".000" suffix parses to the same second
            assert b == a and a[6] is not None


# --- errors --------------------------------------------------------------------------------------


def test_non_json_body_is_a_clear_error_naming_endpoint_and_code(fake: FakeKartaView) -> None:
    fake.add_fault("/2.0/photo", body="<html>maintenance</html>", content_type="text/html")
    with pytest.raises(KartaViewError) as caught:
        make_client(fake).sequence_photos(fake.sequence_ids()[0])
    error = caught.value
    assert error.code == 200 and "/2.0/photo/" in error.endpoint
    assert "non-JSON" in str(error) and "HTTP 200" in str(error) and "/2.0/photo/" in str(error)
    assert fake.hits("/2.0/photo") == 1  # not retried


@pytest.mark.parametrize(
    ("status", "body", "code", "text"),
    [
        (400, None, 400, "Restricted access!"),
        (200, '{"status": {"apiCode": "401", "apiMessage": " You have to be authenticated ",'
              ' "httpCode": 200}, "result": null}', 401, "authenticated"),
    ],
)  # fmt: skip
def test_error_envelopes_are_clear_errors(
    fake: FakeKartaView, status: int, body: str | None, code: int, text: str
) -> None:
    fake.add_fault("/2.0/photo", status=status, body=body, content_type="application/json")
    with pytest.raises(KartaViewError) as caught:
        make_client(fake).nearby_sequences(52.52, 13.405, 50)
    assert caught.value.code == code
    assert f"apiCode {code}" in str(caught.value) and text in str(caught.value)
    assert "GET /2.0/photo/?lat=" in str(caught.value)
    assert fake.hits("/2.0/photo") == 1


def test_restricted_access_without_filters_is_reproduced(fake: FakeKartaView) -> None:
    answer = requests.get(f"{fake.base_url}/2.0/photo/", timeout=5)
    assert answer.status_code == 400
    assert answer.json()["status"]["apiMessage"] == "Restricted access!"


# --- retries, Retry-After, timeouts, rate limit -----------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_transient_statuses_are_retried_until_success(fake: FakeKartaView, status: int) -> None:
    fake.add_fault("/2.0/photo", status=status, times=2)
    sleep = RecordingSleep()
    photos = make_client(fake, sleep).sequence_photos(fake.sequence_ids()[0])
    assert len(photos) == 6
    assert fake.hits("/2.0/photo") == 3
    assert len(sleep.delays) == 2


def test_rate_limit_envelope_inside_http_200_is_retried(fake: FakeKartaView) -> None:
    busy = ('{"status": {"apiCode": 429, "apiMessage": "Too many requests", "httpCode": 429},'
            ' "result": null}')  # fmt: skip
    fake.add_fault("/2.0/photo", status=200, body=busy, times=2)
    assert len(make_client(fake).sequence_photos(fake.sequence_ids()[0])) == 6
    assert fake.hits("/2.0/photo") == 3


def test_retries_stop_at_their_bound_with_growing_jittered_backoff(fake: FakeKartaView) -> None:
    fake.add_fault("/2.0/photo", status=500)
    sleep = RecordingSleep()
    client = make_client(fake, sleep, max_retries=4, backoff_base_s=1.0, max_backoff_s=5.0)
    with pytest.raises(KartaViewError) as caught:
        client.sequence_photos(fake.sequence_ids()[0])
    assert caught.value.code == 500 and "after 5 attempts" in str(caught.value)
    assert fake.hits("/2.0/photo") == 5
    ceilings = [1.0, 2.0, 4.0, 5.0]  # doubling, capped at max_backoff_s
    assert len(sleep.delays) == 4
    for delay, ceiling in zip(sleep.delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_retry_after_seconds_and_http_date_are_honoured_and_capped(fake: FakeKartaView) -> None:
    in_five_s = email.utils.formatdate(time.time() + 5, usegmt=True)
    fake.add_fault("/2.0/photo", status=429, retry_after="7", times=1)
    fake.add_fault("/2.0/photo", status=503, retry_after=in_five_s, times=1)
    fake.add_fault("/2.0/photo", status=429, retry_after="100000", times=1)
    sleep = RecordingSleep()
    client = make_client(fake, sleep, max_retry_after_s=30.0)
    assert len(client.sequence_photos(fake.sequence_ids()[0])) == 6
    assert fake.hits("/2.0/photo") == 4
    seven, dated, capped = sleep.delays
    assert seven == 7.0
    assert 3.0 <= dated <= 5.0
    assert capped == 30.0


def test_a_response_slower_than_the_read_timeout_is_retried(fake: FakeKartaView) -> None:
    fake.add_fault("/2.0/photo", delay_s=1.5, times=1)
    client = make_client(fake, timeout=(2.0, 0.3))
    assert len(client.sequence_photos(fake.sequence_ids()[0])) == 6
    assert fake.hits("/2.0/photo") == 2


def test_an_unreachable_server_fails_after_bounded_attempts() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    sleep = RecordingSleep()
    client = KartaViewClient(f"http://127.0.0.1:{port}", max_retries=2, sleep=sleep,
                             requests_per_second=1e6, backoff_base_s=0.01)  # fmt: skip
    with pytest.raises(KartaViewError, match="connection error after 3 attempts"):
        client.nearby_sequences(52.52, 13.405, 50)
    assert len(sleep.delays) == 2


def test_rate_limit_spaces_requests(fake: FakeKartaView) -> None:
    sleep = RecordingSleep()
    client = make_client(fake, sleep, requests_per_second=4.0, clock=sleep.clock)
    for _ in range(5):
        client.nearby_sequences(52.52, 13.405, 50)
    assert fake.hits("/2.0/photo") == 5
    assert sleep.delays == pytest.approx([0.25] * 4)


def test_fake_sequence_endpoints_agree(fake: FakeKartaView) -> None:
    sequence = fake.sequence_ids()[0]
    page = {"page": "1", "itemsPerPage": "4"}
    by_path = requests.get(f"{fake.base_url}/2.0/sequence/{sequence}/photos", params=page,
                           timeout=5).json()["result"]  # fmt: skip
    by_query = requests.get(f"{fake.base_url}/2.0/photo", params={**page, "sequenceId": sequence},
                            timeout=5).json()["result"]  # fmt: skip
    assert by_path == by_query and by_path["hasMoreData"] is True
    assert [item["sequenceIndex"] for item in by_path["data"]] == ["0", "1", "2", "3"]
    too_big = requests.get(f"{fake.base_url}/2.0/photo", timeout=5,
                           params={"sequenceId": sequence, "itemsPerPage": "101"})  # fmt: skip
    assert too_big.status_code == 400
    details = requests.get(f"{fake.base_url}/2.0/sequence/{sequence}", timeout=5).json()
    assert details["result"]["data"]["id"] == sequence
    unknown = requests.get(f"{fake.base_url}/2.0/sequence/1", timeout=5).json()
    assert unknown["status"]["apiCode"] == 601 and unknown["result"] is None


# --- the fake server as a command ------------------------------------------------------------


def test_fake_server_runs_as_a_command_until_interrupted() -> None:
    command = [sys.executable, "-m", "imgrank_dagster.devtools.kartaview_stand_in",
               "--port", "0", "--sequences", "1", "--photos", "3"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        base_url = first_line.split("serving at ")[1].strip()
        assert base_url.startswith("http://127.0.0.1:")
        answer = requests.get(f"{base_url}/2.0/sequence/7000001", timeout=5).json()
        assert answer["result"]["data"]["countActivePhotos"] == "3"
    finally:
        process.send_signal(2)  # Ctrl-C
        process.wait(timeout=10)
    assert process.returncode == 0
