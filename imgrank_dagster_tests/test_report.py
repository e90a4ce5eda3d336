"""The HTML report (core.views.report, the ranking_report asset) and the embedding map behind it."""

from __future__ import annotations

import os
import time
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgrank_dagster.core.views import report
from imgrank_dagster.core.views.embedding_map import embedding_map, embedding_map_frame
from imgrank_dagster.core.views.report import ReportData, write_report
from imgrank_dagster.lib.resources import build_resources


class Page(HTMLParser):
    """Every element's tag and attributes, and the text, of one HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, css_class: str | None = None) -> list[dict[str, str]]:
        return [
            attrs
            for name, attrs in self.elements
            if name == tag and (css_class is None or css_class in attrs.get("class", "").split())
        ]

    def with_id_prefix(self, prefix: str) -> list[str]:
        return [a["id"] for _, a in self.elements if a.get("id", "").startswith(prefix)]


def materialize(pipeline, *assets: str, partition: str = "city") -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(pipeline.defs.assets),
        selection=list(assets),
        partition_key=partition,
        instance=pipeline.instance,
        resources=build_resources(data_dir=pipeline.data_dir, warehouse=str(pipeline.warehouse)),
    )


def rejected_rows(pipeline, collection: str) -> pd.DataFrame:
    raw = pd.concat(
        pd.read_parquet(path)
        for path in (pipeline.warehouse / "raw_image_sequences").glob(f"{collection}.*.parquet")
    )
    return raw[raw["status"] != "ok"]


def report_data(pipeline, collection: str = "city") -> ReportData:
    """The report's inputs read from the ranked pipeline's files (as the asset reads them)."""
    rejected = rejected_rows(pipeline, collection)
    return ReportData(
        collection=collection,
        image_root=pipeline.imgrank.collection(collection).image_root,
        ranking=pipeline.read("labeling_priority", collection),
        scores=pipeline.read("image_scores", collection),
        cluster_metrics=pipeline.read("cluster_metrics", collection),
        images=pipeline.read("feature_matrix", collection)[["image_id", "path"]],
        rejected=rejected[["image_id", "path", "reason"]],
        embedding_map=pipeline.read("embedding_map", collection),
    )


# --- the asset, end to end -------------------------------------------------------------------


def test_ranking_report_asset_writes_a_complete_self_contained_report(fresh_pipeline) -> None:
    pipeline = fresh_pipeline
    assert materialize(pipeline, "ranking_report").success
    folder = pipeline.data_dir / "exports" / "city" / "report"
    text = (folder / "index.html").read_text(encoding="utf-8")
    page = Page(text)

    # Self-contained: every reference is a relative path to a file in the folder.
    references = [a["src"] for a in page.having("img")] + [
        a["href"] for a in page.having("link") + page.having("script") if "href" in a
    ]
    assert references
    for reference in references:
        assert "://" not in reference and not reference.startswith(("/", "data:")), reference
        assert (folder / reference).is_file(), reference
    assert not page.having("script") and "http" not in text.replace("http-equiv", "")

    ranking = pipeline.read("labeling_priority", "city")
    cards = page.having("figure", "card")
    assert len(cards) == min(100, len(ranking))
    for row in ranking.head(100).itertuples():
        assert f"#{row.rank}" in text and row.reason in text.replace("&#x27;", "'")

    metrics = pipeline.read("cluster_metrics", "city")
    assert sorted(page.with_id_prefix("cluster-")) == sorted(
        f"cluster-{c}" for c in metrics["cluster"]
    )
    for row in metrics.itertuples():
        assert f"{row.size} images, {row.labelled_count} labelled" in text
    scores = pipeline.read("image_scores", "city")
    groups = scores.loc[scores["duplicate_group"] >= 0, "duplicate_group"].nunique()
    assert groups >= 1 and len(page.having("div", "dupgroup")) == groups

    rejected = rejected_rows(pipeline, "city")
    assert len(rejected) >= 2  # the generator's truncated file and non-image
    for row in rejected.itertuples():
        assert row.image_id in text and row.reason.split(" (")[0] in text

    # The map: one thumbnail per accepted image (a small collection is not sampled).
    assert len(page.having("div", "dot")) == len(pipeline.read("feature_matrix", "city"))
    # The clustering plots come from cluster_assignments' materialization (no recomputation).
    plots = [a["src"] for a in page.having("img") if a["src"].startswith("plots/")]
    assert len(plots) == 3 and all((folder / p).read_bytes()[:4] == b"\x89PNG" for p in plots)

    # The asset's output: one row per file, with the report's location in its metadata.
    files = pipeline.read("ranking_report", "city")
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(files["path"]) == written
    assert set(files["kind"]) == {"html", "thumbnail", "plot"}
    record = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("ranking_report"), asset_partitions=["city"]), limit=1
    ).records[0]
    assert record.asset_materialization.metadata["report"].value == str(folder / "index.html")


def test_labeling_priority_preview_has_thumbnails(ranked_pipeline) -> None:
    record = ranked_pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("labeling_priority"), asset_partitions=["city"]),
        limit=1,
    ).records[0]
    metadata = record.asset_materialization.metadata
    top = metadata["top_20_thumbnails"].value
    assert top.count("data:image/jpeg;base64,") == 20
    assert len(top) < 150_000  # small inline thumbnails, not full images
    # The same top 20 as a typed table, in rank order, with what each column means.
    table = metadata["top_20"].value
    ranking = ranked_pipeline.read("labeling_priority", "city").head(20)
    assert [record.data["image_id"] for record in table.records] == ranking["image_id"].tolist()
    assert [record.data["rank"] for record in table.records] == list(range(1, 21))
    assert all(column.description for column in table.schema.columns)


# --- core.views.report -----------------------------------------------------------------------


def test_rewriting_swaps_the_folder_and_reuses_unchanged_thumbnails(
    ranked_pipeline, tmp_path: Path
) -> None:
    data = report_data(ranked_pipeline)
    target = tmp_path / "report"
    first = write_report(data, target)
    thumbnail = target / first.loc[first["kind"] == "thumbnail", "path"].iloc[0]
    inode = thumbnail.stat().st_ino
    second = write_report(data, target)
    assert second["path"].tolist() == first["path"].tolist()
    assert thumbnail.stat().st_ino == inode  # hard-linked from the previous report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no build or old folder


def test_a_failed_write_keeps_the_previous_report(
    ranked_pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = report_data(ranked_pipeline)
    target = tmp_path / "report"
    write_report(data, target)
    before = (target / "index.html").read_text()

    def broken(*args: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_page", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(data, target)
    assert (target / "index.html").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_an_interrupted_writes_leftovers_are_removed_once_old(
    ranked_pipeline, tmp_path: Path
) -> None:
    stale, recent = tmp_path / ".report.build-stale", tmp_path / ".report.old-recent"
    for folder in (stale, recent):
        (folder / "thumbs").mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    write_report(report_data(ranked_pipeline), tmp_path / "report")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.old-recent", "report"]


def test_large_collections_are_capped_and_unreadable_files_get_a_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "MAP_IMAGES", 30)
    monkeypatch.setattr(report, "TOP_IMAGES", 10)
    monkeypatch.setattr(report, "CLUSTER_THUMBNAILS", 5)
    root = tmp_path / "images"
    root.mkdir()
    n = 60
    ids = [f"s/{i:03d}" for i in range(n)]
    for i in range(n):
        Image.new("RGB", (64, 48), (i * 4, 80, 160)).save(root / f"{i:03d}.jpg")
    (root / "004.jpg").write_bytes(b"not an image")  # rank 1: on the contact sheet
    scores = pd.DataFrame(
        {
            "image_id": ids,
            "cluster": [i % 2 for i in range(n)],
            "labelled": [i < 4 for i in range(n)],
            "uniqueness_punishment": 1.0,
            "duplicate_group": -1,
        }
    )
    unlabelled = ids[4:]
    data = ReportData(
        collection="big",
        image_root=root,
        ranking=pd.DataFrame(
            {
                "rank": range(1, len(unlabelled) + 1),
                "image_id": unlabelled,
                "path": [f"{i.split('/')[1]}.jpg" for i in unlabelled],
                "score": 0.5,
                "cluster": [int(i[-3:]) % 2 for i in unlabelled],
                "priority_group": 1,
                "region": "medium",
                "reason": "because",
            }
        ),
        scores=scores,
        cluster_metrics=pd.DataFrame(
            {
                "cluster": [0, 1],
                "size": [30, 30],
                "labelled_count": [2, 2],
                "labelled_fraction": [2 / 30, 2 / 30],
                "priority_group": [2, 2],
                "mean_silhouette": [0.1, 0.2],
            }
        ),
        images=pd.DataFrame({"image_id": ids, "path": [f"{i:03d}.jpg" for i in range(n)]}),
        rejected=pd.DataFrame({"image_id": ["s/bad"], "path": ["nope.jpg"], "reason": "gone"}),
        embedding_map=pd.DataFrame({"image_id": ids, "x": np.linspace(0, 1, n), "y": 0.5}),
    )
    write_report(data, tmp_path / "report")
    page = Page((tmp_path / "report" / "index.html").read_text())
    assert len(page.having("figure", "card")) == 10
    dots = page.having("div", "dot")
    assert len(dots) == 30
    assert "30 of 60 images shown" in "".join(page.text)
    assert len(page.having("figure", "tile")) == 2 * 5
    assert "+ 25 more" in "".join(page.text)
    # The unreadable image and the missing rejected file: placeholders, never a broken <img>.
    assert len(page.having("div", "noimg")) >= 2
    for attrs in page.having("img"):
        assert (tmp_path / "report" / attrs["src"]).is_file()
    assert "no elbow or silhouette curve" in "".join(page.text)


def test_bad_input_is_named(ranked_pipeline, tmp_path: Path) -> None:
    data = report_data(ranked_pipeline)
    broken = ReportData(**{**data.__dict__, "scores": data.scores.drop(columns="labelled")})
    with pytest.raises(ValueError, match=r"scores lacks column\(s\) \['labelled'\]"):
        write_report(broken, tmp_path / "report")
    with pytest.raises(ValueError, match="not a PNG"):
        write_report(ReportData(**{**data.__dict__, "plots": {"x": b"GIF89a"}}), tmp_path / "r")
    assert not list(tmp_path.iterdir())


# --- core.views.embedding_map ----------------------------------------------------------------


def blobs(per_blob: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 64)) * 5
    labels = np.repeat(np.arange(3), per_blob)
    return (centres[labels] + rng.normal(size=(len(labels), 64))).astype(np.float32), labels


def test_the_map_is_seeded_in_the_unit_square_and_keeps_groups_together() -> None:
    matrix, labels = blobs()
    points, method = embedding_map(matrix, seed=1)
    again, _ = embedding_map(matrix, seed=1)
    assert method == "tsne"
    np.testing.assert_array_equal(points, again)
    assert points.shape == (60, 2) and points.min() >= 0 and points.max() <= 1 + 1e-9
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    same = labels[:, None] == labels[None]
    assert distances[same].mean() * 3 < distances[~same].mean()


def test_large_collections_get_the_pca_map_and_bad_input_is_refused() -> None:
    matrix, _ = blobs()
    points, method = embedding_map(matrix, tsne_max_images=10)
    assert method == "pca" and points.shape == (60, 2)
    frame, _ = embedding_map_frame([f"i{k}" for k in range(60)], matrix)
    assert frame.columns.tolist() == ["image_id", "x", "y"] and frame["image_id"].is_unique
    assert embedding_map(matrix[:1])[0].tolist() == [[0.5, 0.5]]
    with pytest.raises(ValueError, match="non-empty N x D"):
        embedding_map(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="NaN"):
        embedding_map(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="differ in length"):
        embedding_map_frame(["a"], matrix)


def test_the_ranking_group_computes_the_map_for_every_image(ranked_pipeline) -> None:
    points = ranked_pipeline.read("embedding_map", "city")
    features = ranked_pipeline.read("feature_matrix", "city")
    assert sorted(points["image_id"]) == sorted(features["image_id"])
    assert points[["x", "y"]].stack().between(0, 1).all()


def test_thumbnails_are_small_jpegs(ranked_pipeline) -> None:
    ranking = ranked_pipeline.read("labeling_priority", "city")
    source = ranked_pipeline.imgrank.collection("city").image_root / ranking["path"].iloc[0]
    data = report.thumbnail_jpeg(source, 40)
    assert data[:2] == b"\xff\xd8" and len(data) < os.path.getsize(source)
    assert report.thumbnail_data_uri(source.parent / "missing.jpg") is None
