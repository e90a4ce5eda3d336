"""Downloading KartaView sequences against the fake KartaView server, fault by fault."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from imgrank_dagster.core.sources.kartaview import (
    ATTRIBUTION,
    KARTAVIEW_COLUMNS,
    LICENCE,
    KartaViewClient,
    KartaViewError,
    SequenceProgress,
    download_sequence,
    progress_logger,
)
from imgrank_dagster.devtools.kartaview_stand_in import FakeKartaView, Quirks

RAW_COLUMNS = [
    "image_id", "sequence_id", "sequence_index", "path", "sha256", "bytes", "width", "height",
    "captured_at", "lat", "lng", "status", "reason",
]  # fmt: skip


class RecordingSleep:
    """Stands in for time.sleep: remembers each requested delay without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeKartaView]:
    with FakeKartaView(sequences=1, photos=6) as server:
        yield server


def make_client(fake: FakeKartaView, sleep: RecordingSleep | None = None, **options: object):
    settings: dict[str, object] = {
        # A read timeout that a loaded machine never hits by accident; the test of a slow
        # response sets a short one.
        "timeout": (2.0, 5.0),
        "max_retries": 2,
        "requests_per_second": 1e6,  # 1 µs apart: never waits between real round trips
        "backoff_base_s": 0.01,
        "sleep": sleep or RecordingSleep(),
    }
    settings.update(options)
    return KartaViewClient(fake.base_url, **settings)  # type: ignore[arg-type]


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def photo_ids(fake: FakeKartaView) -> list[str]:
    (sequence,) = fake.sequence_ids()
    return [photo.photo_id for photo in fake.photos(sequence)]


# --- the normal case -----------------------------------------------------------------------------


def test_a_sequence_lands_once_with_schema_attribution_and_progress(
    fake: FakeKartaView, tmp_path: Path
) -> None:
    (sequence,) = fake.sequence_ids()
    updates: list[SequenceProgress] = []
    frame = download_sequence(make_client(fake), sequence, tmp_path, progress=updates.append)

    assert list(frame.columns) == KARTAVIEW_COLUMNS and KARTAVIEW_COLUMNS[:13] == RAW_COLUMNS
    assert frame["sequence_index"].dtype == "int64" and frame["bytes"].dtype == "int64"
    assert str(frame["width"].dtype) == "Int64" and str(frame["lat"].dtype) == "Float64"
    assert pd.api.types.is_datetime64_dtype(frame["captured_at"])
    photos = fake.photos(sequence)
    assert list(frame["photo_id"]) == [p.photo_id for p in photos]
    assert list(frame["sequence_index"]) == list(range(6))
    assert set(frame["status"]) == {"ok"} and set(frame["reason"]) == {""}
    assert set(frame["sequence_id"]) == {sequence}
    first, row = photos[0], frame.iloc[0]
    assert row["image_id"] == f"{sequence}/{first.photo_id}"
    assert row["path"] == f"{sequence}/{first.photo_id}.jpg"
    assert row["details_url"] == f"https://kartaview.org/details/{sequence}/0"
    assert row["licence"] == LICENCE == "CC BY-SA 4.0"
    assert row["attribution"] == ATTRIBUTION == "© Grab and KartaView Contributors"
    assert row["source_url"] == fake.base_url + fake.image_path(first.photo_id, "lth")
    assert (row["lat"], row["lng"], row["heading"]) == (first.lat, first.lng, first.heading)
    assert row["captured_at"] == pd.Timestamp(first.shot_date)
    assert (row["width"], row["height"]) == (160, 120)  # the large thumbnail

    assert files_under(tmp_path) == set(frame["path"])
    for record in frame.itertuples():
        data = (tmp_path / record.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.sha256 and len(data) == record.bytes
        assert fake.image_hits(record.photo_id) == 1

    assert [u.done for u in updates] == list(range(1, 7)) and {u.total for u in updates} == {6}
    assert updates[-1].ok == 6 and updates[-1].bytes_downloaded == frame["bytes"].sum()
    assert "6/6 images" in str(updates[-1])


def test_full_size_fetches_the_processed_image(fake: FakeKartaView, tmp_path: Path) -> None:
    (sequence,) = fake.sequence_ids()
    frame = download_sequence(make_client(fake), sequence, tmp_path, image_size="full")
    assert set(frame["status"]) == {"ok"} and set(frame["width"]) == {320}
    assert all("/proc/" in url for url in frame["source_url"])
    assert fake.hits("/files/photo") == 6


def test_an_empty_or_unknown_sequence_gives_an_empty_frame(tmp_path: Path) -> None:
    with FakeKartaView(sequences=0) as fake:
        frame = download_sequence(make_client(fake), "123", tmp_path)
    assert frame.empty and list(frame.columns) == KARTAVIEW_COLUMNS
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"image_size": "huge"}, "image_size"), ({"workers": 0}, "workers"),
     ({"sequence_id": "../x"}, "digits")],
)  # fmt: skip
def test_bad_arguments_are_named(fake: FakeKartaView, tmp_path: Path, arguments, message) -> None:
    call = {"sequence_id": fake.sequence_ids()[0], **arguments}
    with pytest.raises(ValueError, match=message):
        download_sequence(make_client(fake), images_dir=tmp_path, **call)
    assert fake.hits() == 0


# --- image faults --------------------------------------------------------------------------------


def test_missing_thumbnail_falls_back_to_the_full_image(fake: FakeKartaView, tmp_path) -> None:
    target = photo_ids(fake)[2]
    fake.add_fault(photo_id=target, sizes={"lth", "th"}, status=404)
    frame = download_sequence(make_client(fake), fake.sequence_ids()[0], tmp_path)
    row = frame.set_index("photo_id").loc[target]
    assert row["status"] == "ok" and "/proc/" in row["source_url"] and row["width"] == 320
    assert fake.image_hits(target, {"lth"}) == 1 and fake.image_hits(target, {"proc"}) == 1
    assert set(frame["status"]) == {"ok"}


def test_a_photo_missing_everywhere_is_rejected_and_the_sequence_completes(
    fake: FakeKartaView, tmp_path: Path
) -> None:
    gone = photo_ids(fake)[1]
    fake.add_fault(photo_id=gone, status=404)
    frame = download_sequence(make_client(fake), fake.sequence_ids()[0], tmp_path)
    row = frame.set_index("photo_id").loc[gone]
    assert row["status"] == "rejected"
    assert row["reason"] == "download failed: HTTP 404 on all sizes"
    assert row["sha256"] == "" and row["bytes"] == 0
    assert (frame["status"] == "ok").sum() == 5
    assert files_under(tmp_path) == set(frame.loc[frame["status"] == "ok", "path"])


def test_full_size_does_not_fall_back_to_thumbnails(fake: FakeKartaView, tmp_path: Path) -> None:
    gone = photo_ids(fake)[0]
    fake.add_fault(photo_id=gone, sizes={"proc"}, status=404)
    frame = download_sequence(make_client(fake), fake.sequence_ids()[0], tmp_path, "full")
    assert frame.set_index("photo_id").loc[gone, "reason"] == "download failed: HTTP 404"
    assert fake.image_hits(gone, {"lth", "th"}) == 0


def test_a_truncated_jpeg_is_rejected_and_leaves_no_file(fake: FakeKartaView, tmp_path) -> None:
    broken = photo_ids(fake)[3]
    fake.add_fault(photo_id=broken, truncate=True)
    frame = download_sequence(make_client(fake), fake.sequence_ids()[0], tmp_path)
    assert frame.set_index("photo_id").loc[broken, "reason"] == (
        "download failed: truncated JPEG on all sizes"
    )
    assert fake.image_hits(broken) == 2  # lth, then proc; a complete bad body is not retried
    assert files_under(tmp_path) == set(frame.loc[frame["status"] == "ok", "path"])


@pytest.mark.parametrize(
    "fault",
    [
        {"drop_connection": True},
        {"delay_s": 1.2},  # slower than the 0.5 s read timeout
        {"status": 500},
        {"status": 502},
        {"status": 408},
        {"status": 429},
    ],
    ids=["dropped-mid-download", "slow", "500", "502", "408", "429"],
)
def test_transient_image_failures_are_retried_and_land_once(
    fake: FakeKartaView, tmp_path: Path, fault: dict
) -> None:
    flaky = photo_ids(fake)[4]
    fake.add_fault(photo_id=flaky, times=1, **fault)
    client = make_client(fake, timeout=(2.0, 0.5)) if "delay_s" in fault else make_client(fake)
    frame = download_sequence(client, fake.sequence_ids()[0], tmp_path)
    assert set(frame["status"]) == {"ok"}
    assert fake.image_hits(flaky, {"lth"}) == 2 and fake.image_hits(flaky, {"proc"}) == 0
    path = tmp_path / frame.set_index("photo_id").loc[flaky, "path"]
    assert path.read_bytes() == fake.image_bytes(flaky, "lth")  # complete, not the half


def test_retry_after_on_an_image_is_honoured(fake: FakeKartaView, tmp_path: Path) -> None:
    flaky = photo_ids(fake)[0]
    fake.add_fault(photo_id=flaky, status=429, retry_after="7", times=1)
    sleep = RecordingSleep()
    frame = download_sequence(make_client(fake, sleep), fake.sequence_ids()[0], tmp_path)
    assert set(frame["status"]) == {"ok"} and sleep.delays == [7.0]


def test_image_retries_stop_at_their_bound(fake: FakeKartaView, tmp_path: Path) -> None:
    down = photo_ids(fake)[5]
    fake.add_fault(photo_id=down, status=503)
    frame = download_sequence(make_client(fake, max_retries=2), fake.sequence_ids()[0], tmp_path)
    assert frame.set_index("photo_id").loc[down, "reason"] == (
        "download failed: HTTP 503 after 3 attempts on all sizes"
    )
    assert fake.image_hits(down, {"lth"}) == 3 and fake.image_hits(down, {"proc"}) == 3


def test_images_over_the_size_limit_are_rejected(fake: FakeKartaView, tmp_path: Path) -> None:
    frame = download_sequence(make_client(fake), fake.sequence_ids()[0], tmp_path, max_bytes=500)
    assert set(frame["status"]) == {"rejected"}
    assert all("too large" in reason for reason in frame["reason"])
    assert files_under(tmp_path) == set()


def test_the_size_limit_holds_while_streaming_without_content_length(
    fake: FakeKartaView, tmp_path: Path
) -> None:
    big = photo_ids(fake)[0]
    fake.add_fault(photo_id=big, omit_length=True)  # the server does not say how big
    limit = len(fake.image_bytes(big, "lth")) - 1
    frame = download_sequence(
        make_client(fake), fake.sequence_ids()[0], tmp_path, image_size="thumbnail",
        max_bytes=limit,
    )  # fmt: skip
    reasons = frame.set_index("photo_id")["reason"]
    # "(> N bytes)", not "(M bytes > N)": the stream was cut, no header announced it.
    assert reasons[big] == f"download failed: too large (> {limit} bytes) on all sizes"
    # Other photos over the limit were refused on their Content-Length, before reading.
    refused = [reason for reason in reasons.drop(big) if reason]
    assert refused and all(f" bytes > {limit})" in reason for reason in refused)
    assert not (tmp_path / fake.sequence_ids()[0] / f"{big}.jpg").exists()


def test_a_failing_sequence_listing_raises_after_its_retries(fake, tmp_path: Path) -> None:
    fake.add_fault("/2.0/photo", status=502)
    with pytest.raises(KartaViewError, match="HTTP 502 after 3 attempts"):
        download_sequence(make_client(fake), fake.sequence_ids()[0], tmp_path)
    assert fake.hits("/2.0/photo") == 3 and fake.hits("/files") == 0


# --- hostile and odd API data ----------------------------------------------------------------


def test_hostile_names_cannot_write_outside_the_images_dir(tmp_path: Path) -> None:
    images = tmp_path / "data" / "images"
    with FakeKartaView(sequences=1, photos=4, quirks=Quirks(hostile_names=True)) as fake:
        (sequence,) = fake.sequence_ids()
        frame = download_sequence(make_client(fake), sequence, images)
        expected = {f"data/images/{sequence}/{p.photo_id}.jpg" for p in fake.photos(sequence)}
    assert set(frame["status"]) == {"ok"}
    assert files_under(tmp_path) == expected
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path.parent / "x.jpg").exists()


def test_template_urls_are_filled_in_and_never_requested_raw(tmp_path: Path) -> None:
    with FakeKartaView(sequences=1, photos=4, quirks=Quirks(template_urls_only=True)) as fake:
        frame = download_sequence(make_client(fake), fake.sequence_ids()[0], tmp_path)
        requested = fake.requested
    assert set(frame["status"]) == {"ok"}
    assert all("/lth/" in url for url in frame["source_url"])
    assert not any("{{" in target or "%7B%7B" in target.upper() for target in requested)


def test_quirky_listings_still_download_every_photo_once(tmp_path: Path) -> None:
    quirks = Quirks(out_of_order=True, repeat_across_pages=True, data_as_object=True,
                    odd_dates=True, sequence_id_in_join_only=True)  # fmt: skip
    with FakeKartaView(sequences=1, photos=12, quirks=quirks) as fake:
        (sequence,) = fake.sequence_ids()
        frame = download_sequence(make_client(fake), sequence, tmp_path)
        assert all(fake.image_hits(p.photo_id) == 1 for p in fake.photos(sequence))
    assert list(frame["sequence_index"]) == list(range(12)) and set(frame["status"]) == {"ok"}
    assert frame["captured_at"].isna().sum() == 4  # the "0000-00-00 00:00:00" ones


# --- resume --------------------------------------------------------------------------------------


class StopIngestion(Exception):
    pass


def test_stopping_midway_then_rerunning_fetches_nothing_twice(
    fake: FakeKartaView, tmp_path: Path
) -> None:
    (sequence,) = fake.sequence_ids()

    def stop_after_two(progress: SequenceProgress) -> None:
        if progress.done == 2:
            raise StopIngestion

    with pytest.raises(StopIngestion):
        download_sequence(make_client(fake), sequence, tmp_path, progress=stop_after_two, workers=2)
    landed = files_under(tmp_path)
    assert 2 <= len(landed) < 6

    updates: list[SequenceProgress] = []
    frame = download_sequence(make_client(fake), sequence, tmp_path, progress=updates.append)
    assert set(frame["status"]) == {"ok"} and files_under(tmp_path) == set(frame["path"])
    assert updates[-1].already_on_disk == len(landed)
    assert all(fake.image_hits(photo_id) == 1 for photo_id in photo_ids(fake))


def test_a_broken_file_from_an_older_run_is_fetched_again(fake, tmp_path: Path) -> None:
    (sequence,) = fake.sequence_ids()
    first = photo_ids(fake)[0]
    (tmp_path / sequence).mkdir()
    (tmp_path / sequence / f"{first}.jpg").write_bytes(b"\xff\xd8\xff\xe0 half a jpeg")
    (tmp_path / sequence / f".{first}.jpg.k1ll3d.tmp").write_bytes(b"stale")
    frame = download_sequence(make_client(fake), sequence, tmp_path)
    assert set(frame["status"]) == {"ok"} and files_under(tmp_path) == set(frame["path"])
    assert fake.image_hits(first) == 1


KILLABLE_DOWNLOAD = """
import sys
from pathlib import Path
from imgrank_dagster.core.sources.kartaview import KartaViewClient, download_sequence
client = KartaViewClient(sys.argv[1], requests_per_second=10)
download_sequence(client, sys.argv[2], Path(sys.argv[3]), workers=1)
"""


def test_a_killed_download_resumes_without_refetching_landed_images(tmp_path: Path) -> None:
    with FakeKartaView(sequences=1, photos=20) as fake:
        (sequence,) = fake.sequence_ids()
        command = [sys.executable, "-c", KILLABLE_DOWNLOAD, fake.base_url, sequence, str(tmp_path)]
        process = subprocess.Popen(command)
        deadline = time.monotonic() + 60
        try:
            while len(list((tmp_path / sequence).glob("*.jpg"))) < 3:
                assert process.poll() is None, "the download ended before it could be killed"
                assert time.monotonic() < deadline, "no images landed"
                time.sleep(0.01)
        finally:
            process.kill()  # SIGKILL: no cleanup, like a crash
            process.wait(timeout=10)
        landed = {path.stem for path in (tmp_path / sequence).glob("*.jpg")}
        assert 3 <= len(landed) < 20

        frame = download_sequence(make_client(fake), sequence, tmp_path)
        assert set(frame["status"]) == {"ok"} and files_under(tmp_path) == set(frame["path"])
        assert all(fake.image_hits(photo_id) == 1 for photo_id in landed)
        hits = [fake.image_hits(photo.photo_id) for photo in fake.photos(sequence)]
        assert sum(hits) <= 21  # at most the one in flight at the kill was fetched twice


def test_progress_logger_emits_rarely_but_always_the_end(fake, tmp_path: Path) -> None:
    lines: list[str] = []
    download_sequence(make_client(fake), fake.sequence_ids()[0], tmp_path,
                      progress=progress_logger(lines.append, every_s=3600))  # fmt: skip
    assert len(lines) == 2 and "1/6 images" in lines[0] and "6/6 images" in lines[1]
