"""Collections file validation: every problem named with the file, the collection and the key."""

from pathlib import Path

import pytest
import yaml

from imgrank_dagster.core.config import (
    CollectionConfigError,
    FolderSource,
    KartaViewSource,
    load_collections,
)
from imgrank_dagster.core.config.keys import sequence_key, split_sequence_key


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "collections.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    (tmp_path / "imgs" / "seq-1").mkdir(parents=True)
    return tmp_path / "imgs"


def test_valid_file_resolves_relative_paths(tmp_path: Path, images_dir: Path) -> None:
    path = write(
        tmp_path,
        {
            "collections": {
                "city": {
                    "source": {"type": "folder", "path": "imgs"},
                    "labels": "labels.csv",
                    "scoring": {"k": 5, "w_blur": 0.3},
                },
                "berlin": {
                    "source": {
                        "type": "kartaview",
                        "points": [{"lat": 52.52, "lng": 13.40, "radius_m": 300}],
                    }
                },
            }
        },
    )
    collections = load_collections(path)
    city = collections["city"]
    assert isinstance(city.source, FolderSource)
    assert city.image_root == images_dir.resolve()
    assert city.labels == (tmp_path / "labels.csv").resolve()
    assert city.scoring.k == 5 and city.scoring.w_blur == 0.3
    assert city.scoring.w_similar == -1.0  # the study's default stays
    berlin = collections["berlin"]
    assert isinstance(berlin.source, KartaViewSource)
    assert berlin.image_root == (tmp_path / "images" / "berlin").resolve()
    assert sequence_key(city.name, "seq-1") == "city.seq-1"
    assert split_sequence_key("city.seq-1") == ("city", "seq-1")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"source": {"type": "folder", "path": "imgs"}, "colour": 1}, "colour: unknown key"),
        ({"labels": "x.csv"}, "has no source"),
        ({"source": {"type": "folder", "path": "nope"}}, "source folder"),
        (
            {"source": {"type": "kartaview", "points": [{"lat": 95, "lng": 13}]}},
            "source.kartaview.points.0.lat",
        ),
        (
            {"source": {"type": "kartaview", "points": [{"lat": 52, "lng": 200}]}},
            "lng",
        ),
        (
            {
                "source": {
                    "type": "kartaview",
                    "bbox": {"min_lat": 53, "min_lng": 13, "max_lat": 52, "max_lng": 14},
                }
            },
            "min_lat < max_lat",
        ),
        ({"source": {"type": "kartaview"}}, "at least one point or a bbox"),
        ({"source": {"type": "ftp"}}, "source"),
        ({"source": {"type": "folder", "path": "imgs"}, "labels": "no/such/dir/l.csv"}, "labels"),
        (
            {"source": {"type": "folder", "path": "imgs"}, "scoring": {"k_min": 9, "k_max": 3}},
            "k_min",
        ),
        ({"source": {"type": "folder", "path": "imgs"}, "strategy": "magic"}, "strategy"),
    ],
)
def test_invalid_collections_name_the_problem(
    tmp_path: Path, images_dir: Path, body: dict, expected: str
) -> None:
    path = write(tmp_path, {"collections": {"city": body}})
    with pytest.raises(CollectionConfigError) as error:
        load_collections(path)
    message = str(error.value)
    assert str(path) in message
    assert "city" in message
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("collections: [", "not valid YAML"),
        ("other: {}", "one top-level key 'collections'"),
        ("collections: {}", "must map names"),
    ],
)
def test_malformed_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "collections.yaml"
    path.write_text(text)
    with pytest.raises(CollectionConfigError, match=expected):
        load_collections(path)


def test_bad_collection_name(tmp_path: Path, images_dir: Path) -> None:
    path = write(
        tmp_path, {"collections": {"Bad.Name": {"source": {"type": "folder", "path": "imgs"}}}}
    )
    with pytest.raises(CollectionConfigError, match="lower-case"):
        load_collections(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CollectionConfigError, match="not found"):
        load_collections(tmp_path / "absent.yaml")


def test_shipped_collections_file_is_valid_once_demo_exists(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[1] / "data" / "collections.yaml"
    copy = tmp_path / "collections.yaml"
    copy.write_text(shipped.read_text())
    (tmp_path / "demo" / "images").mkdir(parents=True)
    assert "demo" in load_collections(copy)
