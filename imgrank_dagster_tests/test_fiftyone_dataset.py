"""The fiftyone_dataset asset against the bundled MongoDB (a private one, see conftest): every
sample and field, the saved views, an in-place update after a re-rank, and `cli app`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import psutil
import pytest
import requests

from imgrank_dagster.core.ranking.similar import find_similar
from imgrank_dagster.core.views.fiftyone_dataset import (
    LABEL_NEXT_VIEW,
    LABELLED_TAG,
    MAP_BRAIN_KEY,
    NEAR_DUPLICATES_VIEW,
    SIMILARITY_BRAIN_KEY,
    sample_table,
)
from imgrank_dagster.defs.labels.jobs import LABEL_DEPENDENT
from imgrank_dagster.lib.resources import build_resources

# Every test here syncs or reads a FiftyOne dataset: the private MongoDB of conftest.
pytestmark = pytest.mark.usefixtures("fiftyone_database")


@pytest.fixture(scope="module")
def fo(fiftyone_database: str) -> Any:
    import fiftyone

    return fiftyone


def materialize(pipeline, selection: Any, partition: str = "city") -> None:
    result = dg.materialize(
        list(pipeline.defs.assets),
        selection=selection,
        partition_key=partition,
        instance=pipeline.instance,
        resources=build_resources(data_dir=pipeline.data_dir, warehouse=str(pipeline.warehouse)),
    )
    assert result.success


def build_from_scratch(fo: Any, pipeline, name: str = "city") -> Any:
    """The dataset as the asset creates it (other tests may have synced one of that name)."""
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    materialize(pipeline, ["fiftyone_dataset"], name)
    return fo.load_dataset(name)


def dataset_frame(dataset: Any) -> pd.DataFrame:
    fields = ["image_id", "id", "filepath", "tags", "rank", "score", "study_score", "uniqueness"]
    fields += ["uniqueness_punishment", "outlier_distance", "similar_distance", "blur"]
    fields += ["brightness", "duplicate_group", "region", "reason", "cluster", "priority_group"]
    fields += ["sequence_id", "sequence_index", "captured_at", "location", "embedding"]
    fields += ["metadata"]
    return pd.DataFrame({field: dataset.values(field) for field in fields}).set_index("image_id")


def test_the_dataset_holds_every_sample_and_field(fo: Any, fresh_pipeline) -> None:
    pipeline = fresh_pipeline
    dataset = build_from_scratch(fo, pipeline)
    assert dataset.persistent
    features = pipeline.read("feature_matrix", "city").set_index("image_id")
    scores = pipeline.read("image_scores", "city").set_index("image_id")
    ranking = pipeline.read("labeling_priority", "city").set_index("image_id")
    metrics = pipeline.read("cluster_metrics", "city").set_index("cluster")
    labelled = set(pipeline.read("labeled_images", "city")["image_id"])
    samples = dataset_frame(dataset)
    assert len(dataset) == len(features) == len(scores)
    assert sorted(samples.index) == sorted(features.index)
    samples = samples.loc[features.index]
    root = pipeline.imgrank.collection("city").image_root.resolve()
    assert samples["filepath"].tolist() == [str(root / p) for p in features["path"]]
    assert all(Path(p).is_file() for p in samples["filepath"])

    # Labelled images: tag, no rank; every other image: its rank, region and reason.
    tagged = {i for i, tags in samples["tags"].items() if LABELLED_TAG in tags}
    assert labelled and tagged == labelled
    unlabelled = samples.drop(index=list(labelled))
    assert unlabelled["rank"].astype(int).tolist() == ranking.loc[unlabelled.index, "rank"].tolist()
    for column in ("region", "reason"):
        assert unlabelled[column].tolist() == ranking.loc[unlabelled.index, column].tolist()
    np.testing.assert_allclose(
        unlabelled["score"].astype(float), ranking.loc[unlabelled.index, "score"]
    )
    assert samples.loc[list(labelled), ["rank", "score", "region", "reason"]].isna().all().all()

    # Every score component (and the study's score), the cluster and its priority group.
    np.testing.assert_allclose(samples["study_score"], scores.loc[samples.index, "score"])
    for column in ("uniqueness", "uniqueness_punishment", "outlier_distance"):
        np.testing.assert_allclose(samples[column], scores.loc[samples.index, column])
    for column in ("similar_distance", "blur", "brightness"):
        np.testing.assert_allclose(samples[column], scores.loc[samples.index, column])
    for column in ("duplicate_group", "cluster"):
        assert samples[column].tolist() == scores.loc[samples.index, column].tolist()
    assert (
        samples["priority_group"].tolist()
        == metrics.loc[samples["cluster"], "priority_group"].tolist()
    )

    # Sequence, capture time, GPS (GeoLocation: [lng, lat]), embedding, size.
    assert samples["sequence_id"].tolist() == features["sequence_id"].tolist()
    assert samples["sequence_index"].tolist() == features["sequence_index"].tolist()
    captured = pd.to_datetime(samples["captured_at"]).dt.tz_localize(None).dt.floor("s")
    assert captured.tolist() == features["captured_at"].dt.floor("s").tolist()
    with_gps = features["lat"].notna()
    assert with_gps.sum() > len(features) / 2
    for image_id, row in features[with_gps].iterrows():
        point = samples.loc[image_id, "location"].point
        np.testing.assert_allclose(point, [row["lng"], row["lat"]])
    assert samples.loc[~with_gps, "location"].isna().all()
    for image_id, embedding in samples["embedding"].items():
        np.testing.assert_allclose(embedding, features.loc[image_id, "embedding"], rtol=1e-6)
    assert [m.width for m in samples["metadata"]] == features["width"].astype(int).tolist()

    # The embedding map as a visualization (precomputed points: no model).
    assert MAP_BRAIN_KEY in dataset.list_brain_runs()
    results = dataset.load_brain_results(MAP_BRAIN_KEY)
    points = pipeline.read("embedding_map", "city").set_index("image_id")
    by_sample = dict(zip(samples["id"], samples.index, strict=True))
    ids = [by_sample[sample_id] for sample_id in results.current_sample_ids]
    np.testing.assert_allclose(results.current_points, points.loc[ids, ["x", "y"]].to_numpy())

    # The similarity index over imgrank's embeddings: a sample's nearest are itself, then the
    # images core.ranking.similar finds (the same cosine similarity).
    assert SIMILARITY_BRAIN_KEY in dataset.list_brain_runs()
    info = dataset.get_brain_info(SIMILARITY_BRAIN_KEY)
    assert info.config.embeddings_field == "embedding" and info.config.model is None
    single = samples.index[samples["duplicate_group"] < 0]  # no pixel-identical ties
    query = single[len(single) // 2]
    nearest = dataset.sort_by_similarity(
        samples.loc[query, "id"], k=5, brain_key=SIMILARITY_BRAIN_KEY
    ).values("image_id")
    expected = find_similar(features.reset_index(), [query], k=5)["image_id"].tolist()
    assert nearest[0] == query and set(nearest) == set(expected)

    # The saved views.
    assert set(dataset.list_saved_views()) == {LABEL_NEXT_VIEW, NEAR_DUPLICATES_VIEW}
    label_next = dataset.load_saved_view(LABEL_NEXT_VIEW)
    assert label_next.values("image_id") == ranking.sort_values("rank").index.tolist()
    groups = {
        frozenset(group.values("image_id"))
        for group in dataset.load_saved_view(NEAR_DUPLICATES_VIEW).iter_dynamic_groups()
    }
    grouped = scores[scores["duplicate_group"] >= 0]
    expected = {frozenset(g.index) for _, g in grouped.groupby("duplicate_group")}
    assert expected and groups == expected

    # The asset's output: one row per sample with its id.
    output = pipeline.read("fiftyone_dataset", "city").set_index("image_id")
    assert output.loc[samples.index, "sample_id"].tolist() == samples["id"].tolist()


def test_a_rerank_updates_the_dataset_in_place(fo: Any, fresh_pipeline) -> None:
    pipeline = fresh_pipeline
    dataset = build_from_scratch(fo, pipeline)
    ids_before = dict(zip(dataset.values("image_id"), dataset.values("id"), strict=True))
    ranking = pipeline.read("labeling_priority", "city")
    newly_labelled = ranking["image_id"].head(3).tolist()
    # A tag people added in the App survives the update.
    dataset.select_by("image_id", [ranking["image_id"].iloc[5]]).tag_samples("checked")
    labels_file = pipeline.data_dir / "city" / "labels" / "labels.csv"
    labels = pd.read_csv(labels_file)["image_id"].tolist()
    pd.DataFrame({"image_id": sorted(labels + newly_labelled)}).to_csv(labels_file, index=False)

    materialize(pipeline, LABEL_DEPENDENT)  # what the labels sensor requests, then the views
    materialize(pipeline, ["ranking_report", "fiftyone_dataset"])
    dataset = fo.load_dataset("city")
    dataset.reload()
    assert dict(zip(dataset.values("image_id"), dataset.values("id"), strict=True)) == ids_before
    samples = dataset_frame(dataset)
    for image_id in newly_labelled:
        assert LABELLED_TAG in samples.loc[image_id, "tags"]
        assert pd.isna(samples.loc[image_id, "rank"])
    assert "checked" in samples.loc[ranking["image_id"].iloc[5], "tags"]
    new_ranking = pipeline.read("labeling_priority", "city")
    assert (
        dataset.load_saved_view(LABEL_NEXT_VIEW).values("image_id")
        == new_ranking["image_id"].tolist()
    )
    np.testing.assert_allclose(
        samples.loc[new_ranking["image_id"], "score"].astype(float), new_ranking["score"]
    )
    scores = pipeline.read("image_scores", "city").set_index("image_id")
    np.testing.assert_allclose(
        samples["similar_distance"], scores.loc[samples.index, "similar_distance"]
    )


def test_bad_input_is_named(ranked_pipeline) -> None:
    features = ranked_pipeline.read("feature_matrix", "city")
    scores = ranked_pipeline.read("image_scores", "city")
    ranking = ranked_pipeline.read("labeling_priority", "city")
    metrics = ranked_pipeline.read("cluster_metrics", "city")
    root = Path("/nonexistent")
    with pytest.raises(ValueError, match=r"features lacks column\(s\) \['lat'\]"):
        sample_table(features.drop(columns="lat"), scores, ranking, metrics, root)
    with pytest.raises(ValueError, match="features have no row for scored image"):
        sample_table(features.iloc[1:], scores, ranking, metrics, root)
    table = sample_table(features, scores, ranking, metrics, root)
    assert len(table) == len(scores) and table["x"].isna().all()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_app_command_serves_the_dataset_and_stops_without_leftovers(
    fo: Any, fresh_pipeline
) -> None:
    pipeline = fresh_pipeline
    materialize(pipeline, ["ranking_report", "fiftyone_dataset"])  # nothing left to build
    port = _free_port()
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(pipeline.data_dir.parent / "dagster_home"),
        "IMGRANK_DATA_DIR": str(pipeline.data_dir),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "imgrank_dagster.cli", "app", "--collection", "city"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    output: list[str] = []
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            output.append(line)
            if line.startswith(f"FiftyOne App: {url}"):
                break
        assert process.poll() is None, "".join(output)
        assert not any(line.startswith("materializing") for line in output), "".join(output)
        started = psutil.Process(process.pid).children(recursive=True)
        assert started  # the App server (and nothing of FiftyOne's database: ours is private)
        page = requests.get(url, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=90)
        output.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(output)
    assert "stopped" in "".join(output)
    _, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_sync_adds_new_images_and_removes_gone_ones(fo: Any, ranked_pipeline) -> None:
    from imgrank_dagster.core.views.fiftyone_dataset import sync_dataset

    pipeline = ranked_pipeline
    table = sample_table(
        pipeline.read("feature_matrix", "city"),
        pipeline.read("image_scores", "city"),
        pipeline.read("labeling_priority", "city"),
        pipeline.read("cluster_metrics", "city"),
        pipeline.imgrank.collection("city").image_root,
        pipeline.read("embedding_map", "city"),
    ).head(12)
    name = "imgrank-test-sync"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    first = sync_dataset(name, table.head(10))
    second = sync_dataset(name, table.tail(10))  # 2 images gone, 2 new
    dataset = fo.load_dataset(name)
    try:
        assert sorted(dataset.values("image_id")) == sorted(table.tail(10)["image_id"])
        kept = first.set_index("image_id").loc[table["image_id"].iloc[2:10], "sample_id"]
        assert second.set_index("image_id").loc[kept.index, "sample_id"].tolist() == kept.tolist()
        assert len(dataset.load_brain_results(MAP_BRAIN_KEY).current_sample_ids) == 10
    finally:
        dataset.delete()


def test_a_strategy_keeps_its_own_columns_as_fields(fo: Any, ranked_pipeline) -> None:
    from imgrank_dagster.core.views.fiftyone_dataset import sync_dataset

    pipeline = ranked_pipeline  # "town" is ranked with the coverage strategy
    inputs = [
        pipeline.read("feature_matrix", "town"),
        pipeline.read("image_scores", "town"),
        pipeline.read("labeling_priority", "town"),
        pipeline.read("cluster_metrics", "town"),
        pipeline.imgrank.collection("town").image_root,
    ]
    ranking = inputs[2]
    name = "imgrank-test-strategy"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    sync_dataset(name, sample_table(*inputs))
    dataset = fo.load_dataset(name)
    try:
        schema = dataset.get_field_schema()
        assert isinstance(schema["covers"], fo.IntField)
        assert isinstance(schema["opens_unlabelled_cluster"], fo.BooleanField)
        assert isinstance(schema["held_back_reason"], fo.StringField)
        stored = dict(zip(dataset.values("image_id"), dataset.values("covers"), strict=True))
        assert [stored[i] for i in ranking["image_id"]] == ranking["covers"].tolist()
        # Ranked by a strategy without those columns: the stale fields go.
        study_like = inputs[2].assign(covers=np.nan, opens_unlabelled_cluster=None)
        sync_dataset(name, sample_table(*inputs[:2], study_like, *inputs[3:]))
        schema = dataset.get_field_schema()
        assert "covers" not in schema and "opens_unlabelled_cluster" not in schema
        assert "held_back_reason" in schema
    finally:
        dataset.delete()
