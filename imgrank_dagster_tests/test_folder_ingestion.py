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
