"""Real fastdup on a few generated images: shape, dtype, statistics, failures."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from imgrank_dagster.core.features.catalog import NOT_EMBEDDED, image_catalog
from imgrank_dagster.core.features.embeddings import (
    EMBEDDING_DIM,
    FEATURE_COLUMNS,
    compute_features,
    embedding_matrix,
)


def _scene(path: Path, seed: int, brightness: int) -> None:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (160, 120), (brightness, brightness, brightness))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, 150), rng.integers(0, 110)
        draw.rectangle((x, y, x + 20, y + 15), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    image.save(path, quality=90)


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("feature-images")
    files = []
    for index in range(8):
        path = folder / f"f{index}.jpg"
        _scene(path, index, 40 + 25 * index)
        files.append(path)
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    files.append(broken)
    ids = [f"s/{p.stem}" for p in files]
    return compute_features(ids, files)


def test_every_image_has_a_row_in_order(features) -> None:
    assert list(features.columns) == FEATURE_COLUMNS
    assert features["image_id"].tolist() == [f"s/f{i}" for i in range(8)] + ["s/broken"]


def test_embeddings_are_finite_float32_576(features) -> None:
    ok = features[features["status"] == "ok"]
    assert len(ok) == 8
    matrix = embedding_matrix(ok)
    assert matrix.shape == (8, EMBEDDING_DIM)
    assert matrix.dtype == np.float32
    assert np.isfinite(matrix).all()
    assert np.linalg.norm(matrix, axis=1).min() > 0
    # distinct pictures give distinct embeddings
    assert len({row.tobytes() for row in matrix}) == 8


def test_statistics_columns(features) -> None:
    ok = features[features["status"] == "ok"]
    assert (ok["width"] == 160).all() and (ok["height"] == 120).all()
    assert ok["brightness"].is_monotonic_increasing  # backgrounds get brighter
    for column in ["blur", "contrast", "min_value", "max_value", "std"]:
        assert ok[column].notna().all(), column
    assert (ok["max_value"] >= ok["min_value"]).all()


def test_unreadable_file_is_failed_with_fastdup_code(features) -> None:
    broken = features.set_index("image_id").loc["s/broken"]
    assert broken["status"] == "failed"
    assert broken["error"].startswith("ERROR")
    assert broken["embedding"] is None


def test_empty_and_mismatched_input() -> None:
    assert compute_features([], []).empty
    with pytest.raises(ValueError, match="2 image ids but 1 files"):
        compute_features(["a", "b"], [Path("x.jpg")])


def test_image_catalog_gives_every_image_its_final_status() -> None:
    raw = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "path": ["s1/a.jpg", "s1/b.jpg", "s1/c.jpg", "s2/d.jpg"],
            "status": ["ok", "rejected", "ok", "ok"],
            "reason": ["", "truncated JPEG", "", ""],
            "details_url": ["u-a", "u-b", "u-c", "u-d"],  # a source's own column is kept
        },
        index=[7, 3, 9, 1],
    )
    # b was never given to fastdup, c failed, d's sequence has no features yet.
    features = pd.DataFrame(
        {"image_id": ["a", "c"], "status": ["ok", "failed"], "error": ["", "read error 3"]}
    )
    catalog = image_catalog(raw, features)
    assert catalog["image_id"].tolist() == ["a", "b", "c", "d"]
    assert catalog["status"].tolist() == ["ok", "rejected", NOT_EMBEDDED, NOT_EMBEDDED]
    assert catalog["reason"].tolist() == [
        "",
        "truncated JPEG",
        "fastdup could not embed it: read error 3",
        "no features yet: its sequence was not embedded",
    ]
    assert catalog["details_url"].tolist() == ["u-a", "u-b", "u-c", "u-d"]
    assert raw["status"].tolist() == ["ok", "rejected", "ok", "ok"]  # the input is untouched


def test_image_catalog_names_missing_columns() -> None:
    raw = pd.DataFrame({"image_id": ["a"], "status": ["ok"]})
    with pytest.raises(ValueError, match=r"reason.*features\.error"):
        image_catalog(raw, pd.DataFrame({"image_id": ["a"], "status": ["ok"]}))
