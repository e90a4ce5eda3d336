"""Folder ingestion: every kind of bad file is a rejected row with its reason, never a crash."""

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgrank_dagster.core.config.keys import sanitize_sequence_id
from imgrank_dagster.core.sources.folder import (
    RAW_COLUMNS,
    SourceError,
    folder_sequences,
    ingest_folder_sequence,
)


def _jpeg(path: Path, seed: int, exif: Image.Exif | None = None) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90, exif=exif or Image.Exif())


def _gps_exif(lat: float, lng: float, when: str) -> Image.Exif:
    def dms(value: float) -> tuple[float, float, float]:
        value = abs(value)
        degrees = int(value)
        minutes = int((value - degrees) * 60)
        return (degrees, minutes, round(((value - degrees) * 60 - minutes) * 60, 4))

    exif = Image.Exif()
    exif[0x8769] = {0x9003: when}  # Exif IFD: DateTimeOriginal
    exif[0x8825] = {  # GPS IFD
        1: "N" if lat >= 0 else "S",
        2: dms(lat),
        3: "E" if lng >= 0 else "W",
        4: dms(lng),
    }
    return exif


@pytest.fixture
def collection_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    good = root / "run 1"
    good.mkdir(parents=True)
    _jpeg(good / "frame_2.jpg", 2, _gps_exif(52.5, -13.25, "2024:06:03 10:00:02"))
    _jpeg(good / "frame_10.jpg", 10)
    _jpeg(good / "frame_1.jpg", 1, _gps_exif(52.5, 13.4, "2024:06:03 10:00:01"))
    complete = (good / "frame_1.jpg").read_bytes()
    (good / "truncated.jpg").write_bytes(complete[: len(complete) // 2])
    (good / "notes.jpg").write_text("this is not a picture")
    (good / "empty.png").write_bytes(b"")
    Image.new("1", (12000, 12000)).save(good / "bomb.png")  # 144 Mpx in a few KB
    (good / ".hidden.jpg").write_bytes(complete)
    (root / "run 2").mkdir()
    _jpeg(root / "run 2" / "a.jpg", 3)
    _jpeg(root / "run 2" / "a.png", 4)  # same stem, different file
    (root / ".cache").mkdir()
    return root


RUN_1 = sanitize_sequence_id("run 1")  # "run-1-<hash of the name>": a space is not id-safe
RUN_2 = sanitize_sequence_id("run 2")


def test_sequences_are_sanitised_subfolders(collection_root: Path) -> None:
    assert list(folder_sequences(collection_root)) == [RUN_1, RUN_2]
    assert RUN_1.startswith("run-1-") and len(RUN_1) == len("run-1-") + 8


def test_bad_files_are_rejected_with_reasons(collection_root: Path) -> None:
    frame = ingest_folder_sequence(collection_root, RUN_1)
    assert list(frame.columns) == RAW_COLUMNS
    by_name = frame.set_index(frame["path"].str.split("/").str[-1])
    assert list(by_name.index) == [
        "bomb.png",
        "empty.png",
        "frame_1.jpg",
        "frame_2.jpg",
        "frame_10.jpg",
        "notes.jpg",
        "truncated.jpg",
    ]
    assert frame["sequence_index"].tolist() == list(range(7))
    assert by_name.loc["frame_1.jpg", "status"] == "ok"
    assert by_name.loc["frame_10.jpg", "status"] == "ok"
    assert "decompression bomb" in by_name.loc["bomb.png", "reason"]
    assert "empty file" in by_name.loc["empty.png", "reason"]
    assert "not an image" in by_name.loc["notes.jpg", "reason"]
    assert "decode" in by_name.loc["truncated.jpg", "reason"]
    assert (
        by_name.loc[["bomb.png", "notes.jpg", "truncated.jpg", "empty.png"], "status"] == "rejected"
    ).all()
    assert (frame.loc[frame["status"] == "ok", "reason"] == "").all()
    first = by_name.loc["frame_1.jpg"]
    assert first["image_id"] == f"{RUN_1}/frame_1"
    assert first["path"] == "run 1/frame_1.jpg"
    assert first["width"] == 64 and first["height"] == 48
    assert first["captured_at"] == datetime(2024, 6, 3, 10, 0, 1)
    assert first["lat"] == pytest.approx(52.5, abs=1e-4)
    assert by_name.loc["frame_2.jpg", "lng"] == pytest.approx(-13.25, abs=1e-4)
    assert len(first["sha256"]) == 64 and first["bytes"] > 0
    assert pd.isna(by_name.loc["frame_10.jpg", "lat"])
    assert pd.isna(by_name.loc["frame_10.jpg", "captured_at"])


def test_shared_stems_keep_distinct_ids(collection_root: Path) -> None:
    frame = ingest_folder_sequence(collection_root, RUN_2)
    assert sorted(frame["image_id"]) == [f"{RUN_2}/a.jpg", f"{RUN_2}/a.png"]


def test_unknown_sequence_and_missing_root(collection_root: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no folder for sequence 'run-9'"):
        ingest_folder_sequence(collection_root, "run-9")
    with pytest.raises(SourceError, match="does not exist"):
        folder_sequences(tmp_path / "absent")


# --- flat folders: capture-time runs, sidecars, folders without images ------------------------


def _flat_folder(root: Path) -> None:
    """Two capture runs 10 minutes apart (EXIF), and one image without a time."""
    root.mkdir(parents=True)
    for index, second in enumerate([0, 2, 4]):
        when = f"2024:06:03 10:00:{second:02d}"
        _jpeg(root / f"a{index}.jpg", index, _gps_exif(52.5 + index / 1000, 13.4, when))
    for index, second in enumerate([0, 3]):
        when = f"2024:06:03 10:10:{second:02d}"
        _jpeg(root / f"b{index}.jpg", 10 + index, _gps_exif(52.6, 13.5, when))
    _jpeg(root / "c.jpg", 20)
    (root / "README.txt").write_text("not an image: ignored directly in the folder")


def test_images_directly_in_the_folder_form_runs_by_capture_time(tmp_path: Path) -> None:
    root = tmp_path / "dashcam"
    _flat_folder(root)
    sequences = folder_sequences(root)
    assert {key: [p.name for p in files] for key, files in sequences.items()} == {
        "run-20240603-100000": ["a0.jpg", "a1.jpg", "a2.jpg"],
        "run-20240603-101000": ["b0.jpg", "b1.jpg"],
        "dashcam": ["c.jpg"],  # no capture time: a sequence named after the folder
    }
    # A gap longer than the 10 minutes joins the runs.
    assert list(folder_sequences(root, sequence_gap_s=3600)) == ["run-20240603-100000", "dashcam"]
    frame = ingest_folder_sequence(root, "run-20240603-101000")
    assert frame["image_id"].tolist() == ["run-20240603-101000/b0", "run-20240603-101000/b1"]
    assert frame["path"].tolist() == ["b0.jpg", "b1.jpg"]
    assert frame["captured_at"].tolist() == [
        datetime(2024, 6, 3, 10, 10, 0),
        datetime(2024, 6, 3, 10, 10, 3),
    ]
    assert frame["lat"].tolist() == pytest.approx([52.6, 52.6], abs=1e-4)


def test_a_csv_sidecar_gives_time_place_and_heading(tmp_path: Path) -> None:
    root = tmp_path / "export"
    (root / "images").mkdir(parents=True)
    for index in range(4):
        _jpeg(root / "images" / f"p{index}.jpg", index, _gps_exif(1.0, 1.0, "2020:01:01 00:00:00"))
    # Panoramax-style: paths relative to the sidecar, ISO times with a zone, a face heading.
    (root / "metadata.csv").write_text(
        "file,lat,lon,datetime,face_heading_deg\n"
        "images/p0.jpg,44.77,-1.12,2025-06-23T14:56:53+00:00,294\n"
        "images/p1.jpg,44.78,-1.13,2025-06-23T16:56:55+02:00,24\n"
        "images/p2.jpg,not-a-number,-1.14,2025-06-23T15:30:00Z,390\n"
        "images/p3.jpg,,,,\n"
    )
    sequences = folder_sequences(root / "images", sidecars=(root / "metadata.csv",))
    # p1 is 2 s after p0 in UTC; p2 half an hour later; p3 keeps its EXIF time (2020).
    assert {key: [p.name for p in files] for key, files in sequences.items()} == {
        "run-20200101-000000": ["p3.jpg"],
        "run-20250623-145653": ["p0.jpg", "p1.jpg"],
        "run-20250623-153000": ["p2.jpg"],
    }
    frame = ingest_folder_sequence(
        root / "images", "run-20250623-145653", sidecars=(root / "metadata.csv",)
    )
    assert frame["lat"].tolist() == pytest.approx([44.77, 44.78])
    assert frame["lng"].tolist() == pytest.approx([-1.12, -1.13])
    assert frame["heading"].tolist() == pytest.approx([294, 24])
    assert frame["captured_at"].tolist() == [
        datetime(2025, 6, 23, 14, 56, 53),
        datetime(2025, 6, 23, 14, 56, 55),
    ]
    # An unparseable latitude leaves the EXIF position; a heading of 390 is 30 degrees.
    odd = ingest_folder_sequence(
        root / "images", "run-20250623-153000", sidecars=(root / "metadata.csv",)
    )
    assert odd["lat"].tolist() == pytest.approx([1.0], abs=1e-4)
    assert odd["heading"].tolist() == pytest.approx([30])


def test_a_geojson_sidecar_in_the_folder_is_found_on_its_own(tmp_path: Path) -> None:
    root = tmp_path / "walk"
    root.mkdir()
    for index in range(2):
        _jpeg(root / f"f{index}.jpg", index)
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [13.19 + index / 100, 55.69]},
            "properties": {
                "filename": f"f{index}.jpg",
                "captured_at": 1718000000000 + index * 1000,
                "compass_angle": 90,
            },
        }
        for index in range(2)
    ]
    (root / "points.geojson").write_text(
        '{"type": "FeatureCollection", "features": ' + __import__("json").dumps(features) + "}"
    )
    (sequence,) = folder_sequences(root)
    frame = ingest_folder_sequence(root, sequence)
    assert frame["lng"].tolist() == pytest.approx([13.19, 13.20])
    assert frame["lat"].tolist() == pytest.approx([55.69, 55.69])
    assert frame["captured_at"].tolist() == [
        datetime(2024, 6, 10, 6, 13, 20),
        datetime(2024, 6, 10, 6, 13, 21),
    ]
    assert frame["heading"].tolist() == pytest.approx([90, 90])


def test_folders_without_images_are_reported_not_sequences(tmp_path: Path) -> None:
    from imgrank_dagster.core.sources.folder import scan_folder

    root = tmp_path / "images"
    (root / "empty").mkdir(parents=True)
    (root / "only-metadata").mkdir()
    (root / "only-metadata" / "gps.csv").write_text("file,lat,lon\n")
    scan = scan_folder(root)
    assert scan.sequences == {}
    assert any("empty: holds no image files" in note for note in scan.notes)
    assert any("only-metadata: holds no image files" in note for note in scan.notes)
    assert any(
        note.endswith("holds no image files (directly or in sub-folders)") for note in scan.notes
    )


def test_real_panoramax_views_get_their_sidecars_position_and_time() -> None:
    dataset = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "panoramax_capferret"
    if not (dataset / "metadata.csv").is_file():
        pytest.skip(f"{dataset} is absent (the shared real-photo datasets)")
    sidecar = (dataset / "metadata.csv",)
    sequences = folder_sequences(dataset / "images", sidecars=sidecar)
    assert sum(len(files) for files in sequences.values()) == 400
    assert all(key.startswith("run-") for key in sequences)  # every view has a time
    first = next(iter(sequences))
    frame = ingest_folder_sequence(dataset / "images", first, sidecars=sidecar)
    assert frame["lat"].between(44.5, 45.0).all() and frame["lng"].between(-1.3, -1.0).all()
    assert frame["captured_at"].notna().all() and frame["heading"].notna().all()
