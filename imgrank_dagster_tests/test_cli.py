"""The first hour: `imgrank add` on flat folders of one's own, `imgrank rank`, `imgrank status`.

The commands run as a user runs them, as processes, on a data folder and a Dagster instance of
their own; the ranking they write is read back and checked against what the images carry.
"""

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from imgrank_dagster.core.config import CollectionConfigError, load_collections
from imgrank_dagster.core.config.collections import add_collection


def _scene(path: Path, seed: int, exif: Image.Exif | None = None) -> None:
    """A small street-like picture: sky, road, and a few seeded blocks (fastdup embeds it)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((96, 128, 3), dtype=np.uint8)
    pixels[:40] = rng.integers(120, 220, 3)
    pixels[40:] = rng.integers(40, 110, 3)
    for _ in range(6):
        x, y = int(rng.integers(0, 110)), int(rng.integers(10, 80))
        pixels[y : y + 14, x : x + 18] = rng.integers(0, 255, 3)
    Image.fromarray(pixels).save(path, quality=90, exif=exif or Image.Exif())


def _exif(when: str, lat: float, lng: float) -> Image.Exif:
    def dms(value: float) -> tuple[float, float, float]:
        degrees = int(value)
        minutes = int((value - degrees) * 60)
        return (degrees, minutes, round(((value - degrees) * 60 - minutes) * 60, 4))

    exif = Image.Exif()
    exif[0x8769] = {0x9003: when}
    exif[0x8825] = {1: "N", 2: dms(lat), 3: "E", 4: dms(lng)}
    return exif


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "data"
    data.mkdir()
    return {
        **os.environ,
        "IMGRANK_DATA_DIR": str(data),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "FIFTYONE_DATABASE_DIR": str(tmp_path / "fiftyone"),
    }


def imgrank(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imgrank_dagster.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_add_and_rank_flat_folders_with_exif_and_with_a_sidecar(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # A dashcam folder: two capture runs 20 minutes apart, time and GPS in EXIF.
    dashcam = tmp_path / "dashcam"
    dashcam.mkdir()
    for index in range(12):
        minute = 0 if index < 7 else 20
        when = f"2024:06:03 10:{minute:02d}:{index:02d}"
        _scene(dashcam / f"img_{index:02d}.jpg", index, _exif(when, 52.5 + index / 1000, 13.4))
    # Views without EXIF, with a CSV sidecar (file, lat, lon, datetime, heading) beside them.
    views = tmp_path / "views"
    views.mkdir()
    rows = []
    for index in range(10):
        _scene(views / f"view_{index}.jpg", 100 + index)
        rows.append(
            {
                "file": f"view_{index}.jpg",
                "lat": 44.77 + index / 1000,
                "lon": -1.12,
                "datetime": f"2025-06-23T14:56:{index:02d}+00:00",
                "heading": 90 * (index % 4),
            }
        )
    pd.DataFrame(rows).to_csv(views / "metadata.csv", index=False)

    added = imgrank(env, "add", "dashcam", str(dashcam))
    assert added.returncode == 0, added.stderr
    assert "2 sequence(s)" in added.stdout
    assert imgrank(env, "add", "views", str(views), "--strategy", "study").returncode == 0
    again = imgrank(env, "add", "views", str(views))
    assert again.returncode == 1 and "exists already" in again.stderr

    for name, count in (("dashcam", 12), ("views", 10)):
        ranked = imgrank(env, "rank", name, "--top", "3")
        assert ranked.returncode == 0, ranked.stderr
        assert f"of {count} images to label next" in ranked.stdout
        assert "HTML report:" in ranked.stdout

    data = Path(env["IMGRANK_DATA_DIR"])
    dashcam_ranking = pd.read_csv(data / "exports" / "dashcam" / "all_score_after_rank.csv")
    assert len(dashcam_ranking) == 12
    assert set(dashcam_ranking["sequence_id"]) == {"run-20240603-100000", "run-20240603-102007"}
    by_id = dashcam_ranking.set_index("image_id")
    first = by_id.loc["run-20240603-100000/img_03"]
    assert first["lat"] == pytest.approx(52.503, abs=1e-4)
    assert first["lng"] == pytest.approx(13.4, abs=1e-4)
    assert pd.Timestamp(first["captured_at"]) == pd.Timestamp(datetime(2024, 6, 3, 10, 0, 3))

    views_ranking = pd.read_csv(data / "exports" / "views" / "all_score_after_rank.csv")
    assert len(views_ranking) == 10
    assert views_ranking["sequence_id"].unique().tolist() == ["run-20250623-145600"]
    view = views_ranking.set_index("image_id").loc["run-20250623-145600/view_4"]
    assert view["lat"] == pytest.approx(44.774) and view["lng"] == pytest.approx(-1.12)
    assert pd.Timestamp(view["captured_at"]) == pd.Timestamp(datetime(2025, 6, 23, 14, 56, 4))
    assert (data / "exports" / "views" / "report" / "index.html").is_file()

    status = imgrank(env, "status")
    assert status.returncode == 0, status.stderr
    assert "dashcam (folder, strategy coverage)" in status.stdout
    assert "views (folder, strategy study)" in status.stdout
    assert "2 registered, 2 embedded" in status.stdout
    assert "12 ok" in status.stdout and "10 ok" in status.stdout


def test_status_of_an_unknown_collection_names_the_known_ones(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    _scene(folder / "one.jpg", 1)
    assert imgrank(env, "add", "pictures", str(folder)).returncode == 0
    result = imgrank(env, "status", "pictures-typo")
    assert result.returncode == 1
    assert "no collection named 'pictures-typo' (known: pictures)" in result.stderr


def test_adding_a_folder_keeps_the_file_and_rejects_bad_entries(tmp_path: Path) -> None:
    collections_file = tmp_path / "collections.yaml"
    first = tmp_path / "first"
    first.mkdir()
    text = "# my collections\ncollections:\n  old:\n    source: {type: folder, path: first}\n"
    collections_file.write_text(text)
    second = tmp_path / "second"
    second.mkdir()
    entry = {"source": {"type": "folder", "path": str(second), "sequence_gap_s": 60}}
    added = add_collection(collections_file, "new-one", entry)
    assert added.source.sequence_gap_s == 60
    assert collections_file.read_text().startswith(text)  # comments and layout kept
    assert set(load_collections(collections_file)) == {"old", "new-one"}
    before = collections_file.read_text()
    with pytest.raises(CollectionConfigError, match="exists already"):
        add_collection(collections_file, "old", entry)
    with pytest.raises(CollectionConfigError, match="must be lower-case"):
        add_collection(collections_file, "Bad Name", entry)
    missing = {"source": {"type": "folder", "path": str(tmp_path / "absent")}}
    with pytest.raises(CollectionConfigError, match="does not exist"):
        add_collection(collections_file, "absent", missing)
    sidecar = {"source": {"type": "folder", "path": str(second), "sidecars": ["nope.csv"]}}
    with pytest.raises(CollectionConfigError, match=r"sidecar .* does not exist"):
        add_collection(collections_file, "with-sidecar", sidecar)
    assert collections_file.read_text() == before  # nothing written by a refused entry
    # A new file is created with its header.
    fresh = tmp_path / "fresh" / "collections.yaml"
    add_collection(fresh, "first", {"source": {"type": "folder", "path": str(first)}})
    assert yaml.safe_load(fresh.read_text())["collections"]["first"]["source"]["type"] == "folder"
