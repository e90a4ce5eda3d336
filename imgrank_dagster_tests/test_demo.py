"""The demo collection generator: determinism, layout, EXIF, defects, duplicates, labels."""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrank_dagster.core.sources.images import inspect_image
from imgrank_dagster.devtools import demo_collection as demo
from imgrank_dagster.devtools.demo_collection import (
    DEFECTS,
    LABELLED_SCENE_TYPE,
    MANIFEST_COLUMNS,
    SCENE_TYPES,
    DemoSummary,
    default_sequence_count,
    generate_demo_collection,
    main,
)

UNREADABLE = ("truncated", "not_an_image")
PIXEL_DEFECTS = ("blurred", "dark", "overexposed", "black")


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    root = tmp_path_factory.mktemp("demo") / "collection"
    return generate_demo_collection(
        root, n_images=72, n_sequences=12, seed=3, labelled_fraction=0.1
    )


@pytest.fixture(scope="module")
def manifest(collection: DemoSummary) -> list[dict[str, str]]:
    with open(collection.manifest_path, newline="") as handle:
        return list(csv.DictReader(handle))


def _pixels(collection: DemoSummary, row: dict[str, str]) -> np.ndarray:
    with Image.open(collection.images_dir / row["path"]) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def _previous(manifest: list[dict[str, str]], row: dict[str, str]) -> dict[str, str]:
    index = manifest.index(row)
    previous = manifest[index - 1]
    assert previous["sequence_id"] == row["sequence_id"]
    assert int(previous["frame_index"]) == int(row["frame_index"]) - 1
    return previous


def _laplacian_variance(pixels: np.ndarray) -> float:
    gray = pixels.mean(axis=2)
    laplacian = (
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    )
    return float(laplacian.var())


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _metres_between(a: dict[str, str], b: dict[str, str]) -> float:
    lat_a, lng_a = float(a["lat"]), float(a["lng"])
    lat_b, lng_b = float(b["lat"]), float(b["lng"])
    north = (lat_b - lat_a) * 111_320
    east = (lng_b - lng_a) * 111_320 * math.cos(math.radians(lat_a))
    return math.hypot(north, east)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = generate_demo_collection(tmp_path / "a", n_images=30, n_sequences=3, seed=11)
    second = generate_demo_collection(tmp_path / "b", n_images=30, n_sequences=3, seed=11)
    other = generate_demo_collection(tmp_path / "c", n_images=30, n_sequences=3, seed=12)
    hashes = _file_hashes(first.root)
    assert len(hashes) == 30 + 2  # images, manifest, labels
    assert _file_hashes(second.root) == hashes
    other_hashes = _file_hashes(other.root)
    assert other_hashes.keys() != hashes.keys() or other_hashes != hashes
    differing = [name for name in hashes if other_hashes.get(name) != hashes[name]]
    assert len(differing) > 20


def test_files_on_disk_match_the_manifest(
    collection: DemoSummary, manifest: list[dict[str, str]]
) -> None:
    files = sorted(
        str(path.relative_to(collection.images_dir))
        for path in collection.images_dir.rglob("*")
        if path.is_file()
    )
    assert len(files) == collection.n_images == 72
    assert sorted(row["path"] for row in manifest) == files
    with open(collection.manifest_path, newline="") as handle:
        assert tuple(next(csv.reader(handle))) == MANIFEST_COLUMNS
    sequences = {row["sequence_id"] for row in manifest}
    assert len(sequences) == collection.n_sequences == 12
    assert {row["scene_type"] for row in manifest} == set(SCENE_TYPES)
    for row in manifest:
        sequence_id, file_name = row["path"].split("/")
        assert sequence_id == row["sequence_id"]
        assert "." not in sequence_id
        assert file_name.endswith(".jpg")
        assert row["image_id"] == f"{sequence_id}/{Path(file_name).stem}"
        assert row["defect"] in ("", *DEFECTS)
    assert len({row["image_id"] for row in manifest}) == len(manifest)
    counts = {name: sum(row["defect"] == name for row in manifest) for name in DEFECTS}
    assert counts == collection.defect_counts
    assert counts["truncated"] == counts["not_an_image"] == 1
    assert all(counts[name] >= 1 for name in PIXEL_DEFECTS)


def test_exif_capture_time_and_gps_read_back(
    collection: DemoSummary, manifest: list[dict[str, str]]
) -> None:
    readable = [row for row in manifest if row["defect"] not in UNREADABLE]
    for row in readable:
        inspection = inspect_image(collection.images_dir / row["path"])
        assert inspection.ok, (row["path"], inspection.reason)
        assert (inspection.width, inspection.height) == (demo.IMAGE_WIDTH, demo.IMAGE_HEIGHT)
        assert inspection.captured_at == datetime.fromisoformat(row["captured_at"])
        assert inspection.lat == pytest.approx(float(row["lat"]), abs=1e-6)
        assert inspection.lng == pytest.approx(float(row["lng"]), abs=1e-6)
        assert 52.3 < inspection.lat < 52.7 and 13.0 < inspection.lng < 13.8  # Berlin


def test_sequences_move_forward_in_time_and_space(manifest: list[dict[str, str]]) -> None:
    readable = [row for row in manifest if row["defect"] not in UNREADABLE]
    pairs = [
        (a, b)
        for a, b in itertools.pairwise(readable)
        if a["sequence_id"] == b["sequence_id"]
        and int(b["frame_index"]) == int(a["frame_index"]) + 1
    ]
    assert len(pairs) > 40
    for a, b in pairs:
        started, ended = (datetime.fromisoformat(row["captured_at"]) for row in (a, b))
        assert ended - started == timedelta(seconds=1)
        metres = _metres_between(a, b)
        standing = a["duplicate_group"] != "-1" and a["duplicate_group"] == b["duplicate_group"]
        if standing:
            assert metres == pytest.approx(0, abs=0.01)
        else:
            assert 1 < metres < 25, (a["image_id"], metres)
    starts = [row for row in manifest if row["frame_index"] == "0"]
    assert min(_metres_between(a, b) for a in starts for b in starts if a is not b) > 1


def test_truncated_and_non_image_files_are_rejected(
    collection: DemoSummary, manifest: list[dict[str, str]]
) -> None:
    for defect in UNREADABLE:
        (row,) = [row for row in manifest if row["defect"] == defect]
        assert row["path"].endswith(".jpg")  # so only the content gives it away
        inspection = inspect_image(collection.images_dir / row["path"])
        assert not inspection.ok
        assert inspection.reason
    (text_row,) = [row for row in manifest if row["defect"] == "not_an_image"]
    assert "not an image" in inspect_image(collection.images_dir / text_row["path"]).reason


def test_labels_are_good_images_mostly_from_one_area(
    collection: DemoSummary, manifest: list[dict[str, str]]
) -> None:
    lines = collection.labels_path.read_text().splitlines()
    assert lines[0] == "image_id"
    labelled = lines[1:]
    assert len(labelled) == collection.n_labelled == round(0.1 * 72)
    assert len(set(labelled)) == len(labelled)
    by_id = {row["image_id"]: row for row in manifest}
    for image_id in labelled:
        assert by_id[image_id]["defect"] == "", image_id
        assert (collection.images_dir / by_id[image_id]["path"]).is_file()
    from_focus = sum(by_id[image_id]["scene_type"] == LABELLED_SCENE_TYPE for image_id in labelled)
    assert from_focus / len(labelled) >= 0.6


def test_default_label_share_is_about_five_percent(tmp_path: Path) -> None:
    summary = generate_demo_collection(tmp_path / "c", n_images=100, n_sequences=6, seed=1)
    assert summary.n_labelled == 5
    assert len(summary.labels_path.read_text().splitlines()) == 1 + 5


def test_still_sequences_form_duplicate_groups(
    collection: DemoSummary, manifest: list[dict[str, str]]
) -> None:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in manifest:
        if row["duplicate_group"] != "-1":
            groups.setdefault(row["duplicate_group"], []).append(row)
    assert len(groups) == collection.n_duplicate_groups >= 1
    whole_sequences = 0
    for rows in groups.values():
        assert len(rows) >= 2
        assert len({row["sequence_id"] for row in rows}) == 1
        assert len({(row["lat"], row["lng"]) for row in rows}) == 1
        assert all(row["defect"] == "" for row in rows)
        sequence_length = sum(row["sequence_id"] == rows[0]["sequence_id"] for row in manifest)
        whole_sequences += len(rows) == sequence_length
        first = _pixels(collection, rows[0])
        for row in rows[1:]:
            assert np.abs(_pixels(collection, row) - first).mean() < 3.5, row["image_id"]
    assert whole_sequences >= 1  # at least one sequence stands still from start to end


def test_moving_frames_are_similar_but_not_identical(
    collection: DemoSummary, manifest: list[dict[str, str]]
) -> None:
    moving = [row for row in manifest if row["defect"] == "" and row["duplicate_group"] == "-1"]
    neighbour_differences, stranger_differences = [], []
    for a, b in itertools.pairwise(moving):
        if a["sequence_id"] != b["sequence_id"]:
            continue
        pixels = _pixels(collection, a)
        neighbour_differences.append(np.abs(_pixels(collection, b) - pixels).mean())
        stranger = next(row for row in moving if row["scene_type"] != a["scene_type"])
        stranger_differences.append(np.abs(_pixels(collection, stranger) - pixels).mean())
    assert len(neighbour_differences) > 20
    assert min(neighbour_differences) > 3.5  # more than noise: the camera moved
    assert np.median(neighbour_differences) < 0.5 * np.median(stranger_differences)


def test_scene_types_are_told_apart_by_their_look(
    collection: DemoSummary, manifest: list[dict[str, str]]
) -> None:
    """The nearest frame from another sequence is mostly of the same scene type."""
    good = [row for row in manifest if row["defect"] == ""]
    thumbnails = []
    for row in good:
        with Image.open(collection.images_dir / row["path"]) as image:
            small = image.convert("RGB").resize((24, 18), Image.Resampling.BOX)
        thumbnails.append(np.asarray(small, dtype=np.float32).ravel())
    features = np.stack(thumbnails)
    distances = ((features[:, None] - features[None]) ** 2).sum(axis=-1)
    sequences = np.array([row["sequence_id"] for row in good])
    distances[sequences[:, None] == sequences[None]] = np.inf
    scenes = np.array([row["scene_type"] for row in good])
    assert (scenes[distances.argmin(axis=1)] == scenes).mean() >= 0.6


def test_dark_black_and_overexposed_frames_have_the_brightness_they_claim(
    collection: DemoSummary, manifest: list[dict[str, str]]
) -> None:
    for row in manifest:
        if row["defect"] not in ("dark", "black", "overexposed"):
            continue
        brightness = _pixels(collection, row).mean()
        neighbour = _pixels(collection, _previous(manifest, row)).mean()
        if row["defect"] == "dark":
            assert brightness < 40 and brightness < 0.4 * neighbour
        elif row["defect"] == "black":
            assert brightness < 12
        else:
            assert brightness > 200 and brightness > neighbour + 60


def test_blurred_frames_lose_high_frequencies(
    collection: DemoSummary, manifest: list[dict[str, str]]
) -> None:
    blurred = [row for row in manifest if row["defect"] == "blurred"]
    assert blurred
    for row in blurred:
        sharpness = _laplacian_variance(_pixels(collection, row))
        neighbour = _laplacian_variance(_pixels(collection, _previous(manifest, row)))
        assert sharpness < 0.1 * neighbour, (row["image_id"], sharpness, neighbour)


def test_regenerating_replaces_the_collection_whole(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    generate_demo_collection(root, n_images=40, n_sequences=4, seed=0)
    assert (root / "images" / "seq-003").is_dir()
    summary = generate_demo_collection(root, n_images=30, n_sequences=2, seed=5)
    assert sorted(path.name for path in (root / "images").iterdir()) == ["seq-000", "seq-001"]
    assert len(list((root / "images").rglob("*.jpg"))) == summary.n_images == 30
    assert [path.name for path in tmp_path.iterdir()] == ["demo"]  # no staging left behind


def test_a_failed_generation_leaves_the_previous_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "demo"
    generate_demo_collection(root, n_images=30, n_sequences=2, seed=0)
    before = _file_hashes(root)

    def fail(path: Path, image_ids: list[str]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(demo, "_write_labels", fail)
    with pytest.raises(OSError, match="disk full"):
        generate_demo_collection(root, n_images=40, n_sequences=4, seed=9)
    assert _file_hashes(root) == before
    assert [path.name for path in tmp_path.iterdir()] == ["demo"]


def test_refuses_to_replace_a_folder_that_is_not_a_demo_collection(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    (root / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ValueError, match=r"photos.*holiday\.jpg.*refusing"):
        generate_demo_collection(root, n_images=30, n_sequences=2)
    assert (root / "holiday.jpg").read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_images": 10}, "n_images must be an integer >= 30"),
        ({"n_images": 40, "n_sequences": 9}, "n_sequences=9 needs at least 45 images"),
        ({"n_images": 40, "n_sequences": 0}, "n_sequences must be a positive integer"),
        ({"n_images": 40, "labelled_fraction": 1.5}, "labelled_fraction must be in"),
        ({"n_images": 40, "seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_parameters_are_named(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_demo_collection(tmp_path / "demo", **arguments)
    assert not (tmp_path / "demo").exists()


def test_sequence_count_scales_with_image_count() -> None:
    assert default_sequence_count(600) == 24
    assert default_sequence_count(2_000) == 80
    assert default_sequence_count(11_000) == 440
    assert default_sequence_count(30) == 1


def test_command_line_prints_one_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--root", str(tmp_path / "demo"), "--images", "30", "--sequences", "3", "--seed", "2"])
    output = capsys.readouterr().out.strip()
    assert len(output.splitlines()) == 1
    assert output.startswith("wrote 30 images in 3 sequences")
    assert len(list((tmp_path / "demo" / "images").rglob("*.jpg"))) == 30
