"""Find more like this: query by example (core.ranking.similar, `imgrank similar`) and the focused
ranking (`focus:`, core.ranking.focus through the coverage strategy).

Real parts: the session's ranked pipeline (generated JPEGs, real fastdup, real Parquet, a real
Dagster instance), real fastdup for outside query files, real GTSRB tracks when
../shared/datasets is here.
"""

import inspect
import os
import shutil
import subprocess
import sys

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageOps
from shared_data import shared_datasets

from imgrank_dagster.core.config import FocusSettings
from imgrank_dagster.core.features.embeddings import compute_features, embedding_matrix
from imgrank_dagster.core.ranking import strategies
from imgrank_dagster.core.ranking.coverage import coverage_radii, rank_by_coverage
from imgrank_dagster.core.ranking.focus import FOCUS_COLUMNS, focus_frame, focus_weights
from imgrank_dagster.core.ranking.neighbours import NeighbourGraph
from imgrank_dagster.core.ranking.similar import find_similar, most_similar, unit_vectors
from imgrank_dagster.lib.similar import load_searchable, similar_in_collection

TUNNEL = "tunnel"


def manifest(pipeline, name: str) -> pd.DataFrame:
    return pd.read_csv(pipeline.demos[name].manifest_path)


def features(pipeline, name: str) -> pd.DataFrame:
    return pipeline.read("feature_matrix", name)


# --- the search itself (no files) ------------------------------------------------------------


def test_exact_search_matches_brute_force_and_combines_queries() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((3000, 32)).astype(np.float32)
    unit = unit_vectors(matrix)
    queries = unit[[5, 900]]
    rows, similarities, nearest = most_similar(matrix, queries, k=7)
    mean = unit_vectors(queries.mean(axis=0, keepdims=True))[0]
    expected = np.argsort(-(unit @ mean), kind="stable")[:7]
    assert rows.tolist() == expected.tolist()
    assert np.allclose(similarities, unit[expected] @ mean, atol=1e-5)
    rows, similarities, nearest = most_similar(matrix, queries, k=4, combine="best")
    assert set(rows[:2].tolist()) == {5, 900}  # each query is its own best match
    assert np.allclose(similarities[:2], 1.0, atol=1e-5)
    assert nearest[rows.tolist().index(900)] == 1
    best = np.max(unit @ queries.T, axis=1)
    assert rows.tolist() == np.argsort(-best, kind="stable")[:4].tolist()
    with pytest.raises(ValueError, match="combine"):
        most_similar(matrix, queries, combine="max")
    with pytest.raises(ValueError, match="dimensions"):
        most_similar(matrix, np.ones((1, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="zero"):
        most_similar(matrix, np.zeros((1, 32), dtype=np.float32))


def test_identical_copies_put_the_query_first() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((50, 16)).astype(np.float32)
    matrix[10:15] = matrix[12]  # pixel-identical copies: equal similarities
    rows, _, _ = most_similar(matrix, matrix[[13]], k=5, query_rows=[13])
    assert rows[0] == 13
    assert sorted(rows.tolist()) == [10, 11, 12, 13, 14]


def test_focus_weights_follow_the_examples_neighbourhood() -> None:
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((2, 24)).astype(np.float32) * 4
    matrix = np.vstack(
        [centres[0] + rng.standard_normal((30, 24)), centres[1] + rng.standard_normal((70, 24))]
    ).astype(np.float32)
    focus = focus_weights(matrix, matrix[[3]], weight=4.0, neighbourhood=10)
    assert focus.weights.max() == pytest.approx(5.0)  # the example itself
    assert focus.weights.min() >= 1.0
    assert focus.near[:30].sum() >= 9 and not focus.near[30:].any()
    assert focus.weights[:30].mean() > 2 * focus.weights[30:].mean()
    frame = focus_frame([f"i{n}" for n in range(100)], focus, ["example"])
    assert list(frame.columns) == ["image_id", *FOCUS_COLUMNS]
    with pytest.raises(ValueError, match="weight"):
        focus_weights(matrix, matrix[[3]], weight=0)
    with pytest.raises(ValueError, match="dimensions"):
        focus_weights(matrix, np.ones((1, 3)))


# --- on the ranked demo collections ----------------------------------------------------------


@pytest.mark.parametrize("name", ["city", "town"])
def test_a_collection_image_finds_itself_then_its_near_copies(ranked_pipeline, name) -> None:
    truth = manifest(ranked_pipeline, name)
    frame = features(ranked_pipeline, name)
    accepted = truth[truth["image_id"].isin(frame["image_id"])]
    groups = accepted[accepted["duplicate_group"] >= 0].groupby("duplicate_group")["image_id"]
    still = [sorted(members) for _, members in groups if len(members) >= 3]
    assert still, "the demo collection has standing-still sequences"
    for members in still:
        query = members[len(members) // 2]
        found = find_similar(frame, [query], k=len(members) + 3)
        assert found["image_id"].iloc[0] == query
        assert found["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
        assert set(found["image_id"].iloc[: len(members)]) == set(members)
        assert found["similarity"].is_monotonic_decreasing


def test_the_answer_says_where_each_image_stands(ranked_pipeline) -> None:
    searchable = load_searchable("town", ranked_pipeline.data_dir, str(ranked_pipeline.warehouse))
    query = searchable.features["image_id"].iloc[0]
    found = similar_in_collection(searchable, [query], k=len(searchable.features))
    assert len(found) == len(searchable.features)
    ranking = ranked_pipeline.read("labeling_priority", "town").set_index("image_id")["rank"]
    labelled = set(ranked_pipeline.read("labeled_images", "town")["image_id"])
    for row in found.itertuples():
        assert row.labelled == (row.image_id in labelled)
        assert (pd.isna(row.rank) and row.image_id not in ranking) or row.rank == ranking[
            row.image_id
        ]
    with pytest.raises(ValueError, match="neither an image id"):
        similar_in_collection(searchable, ["no/such-image"])


@pytest.mark.slow
def test_an_outside_file_is_embedded_and_finds_its_scene(ranked_pipeline, tmp_path) -> None:
    truth = manifest(ranked_pipeline, "city")
    frame = features(ranked_pipeline, "city")
    tunnel = truth[(truth["scene_type"] == TUNNEL) & truth["image_id"].isin(frame["image_id"])]
    source = ranked_pipeline.demos["city"].images_dir / tunnel["path"].iloc[len(tunnel) // 2]
    outside = tmp_path / "elsewhere" / "my tunnel.png"  # another folder, name and format
    outside.parent.mkdir()
    ImageOps.mirror(Image.open(source)).save(outside)
    found = find_similar(frame, [str(outside)], k=5)
    scenes = truth.set_index("image_id").loc[found["image_id"], "scene_type"]
    assert (scenes == TUNNEL).all(), found
    assert found["nearest_query"].eq(str(outside)).all()
    # The same through the command line, as a user runs it.
    env = {**os.environ, "IMGRANK_DATA_DIR": str(ranked_pipeline.data_dir)}
    env["IMGRANK_WAREHOUSE"] = str(ranked_pipeline.warehouse)
    first = found["image_id"].iloc[0]
    command = [sys.executable, "-m", "imgrank_dagster.cli", "similar", "city", str(outside)]
    result = subprocess.run(
        [*command, first, "--k", "3", "--combine", "best"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert first in result.stdout and "nearest query" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "imgrank_dagster.cli", "similar", "city", "nowhere.jpg"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 1 and "'nowhere.jpg' is neither" in missing.stderr


@pytest.mark.slow
def test_gtsrb_tracks_find_their_own_frames(tmp_path) -> None:
    """Real traffic-sign photos: 30 frames per track; a frame's top 10 come from its track."""
    root = shared_datasets()
    if root is None or not (root / "gtsrb" / "labels.csv").is_file():
        pytest.skip("../shared/datasets/gtsrb is not here")
    labels = pd.read_csv(root / "gtsrb" / "labels.csv")
    tracks = labels["track_id"].drop_duplicates().sample(12, random_state=1)
    chosen = labels[labels["track_id"].isin(tracks)].reset_index(drop=True)
    files = [root / "gtsrb" / path for path in chosen["path"]]
    embedded = compute_features(chosen["path"].tolist(), files)
    assert (embedded["status"] == "ok").all()
    frame = pd.DataFrame(
        {"image_id": chosen["path"], "path": chosen["path"], "embedding": embedded["embedding"]}
    )
    track_of = dict(zip(chosen["path"], chosen["track_id"], strict=True))
    shares = []
    for _, members in chosen.groupby("track_id")["path"]:
        query = sorted(members)[len(members) // 2]
        found = find_similar(frame, [query], k=10)
        assert found["image_id"].iloc[0] == query
        shares.append(np.mean([track_of[image] == track_of[query] for image in found["image_id"]]))
    assert np.mean(shares) >= 0.9, shares


# --- the focused ranking ---------------------------------------------------------------------


def _coverage_inputs(pipeline, name: str) -> dict[str, object]:
    return {
        "image_scores": pipeline.read("image_scores", name),
        "cluster_metrics": pipeline.read("cluster_metrics", name),
        "features": pipeline.read("feature_matrix", name),
        "labelled_ids": set(pipeline.read("labeled_images", name)["image_id"]),
        "neighbour_graph": pipeline.read("neighbour_graph", name),
    }


def _tunnel_ranks(ranking: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    scenes = ranking["image_id"].map(truth.set_index("image_id")["scene_type"])
    return ranking.loc[scenes == TUNNEL, "rank"]


@pytest.mark.parametrize("name", ["city", "town"])
def test_a_tunnel_example_moves_tunnel_images_to_the_top(ranked_pipeline, name) -> None:
    inputs = _coverage_inputs(ranked_pipeline, name)
    truth = manifest(ranked_pipeline, name)
    frame = inputs["features"]
    plain = strategies.rank("coverage", **inputs)
    tunnel = truth[(truth["scene_type"] == TUNNEL) & truth["image_id"].isin(plain["image_id"])]
    example = tunnel["image_id"].iloc[0]
    focus = focus_weights(
        embedding_matrix(frame), embedding_matrix(frame)[frame.index[frame["image_id"] == example]]
    )
    focused = strategies.rank(
        "coverage", **inputs, focus=focus_frame(frame["image_id"], focus, [example])
    )
    assert set(focused["image_id"]) == set(plain["image_id"])
    assert focused["rank"].tolist() == list(range(1, len(focused) + 1))
    before, after = _tunnel_ranks(plain, truth), _tunnel_ranks(focused, truth)
    # The first pick is a tunnel frame, and the second tunnel pick comes earlier than before.
    first_two, before_two = sorted(after)[:2], sorted(before)[:2]
    assert first_two[0] == 1 and first_two[1] < before_two[1], (first_two, before_two)
    picks = focused[(focused["region"] == "coverage") & focused["focus_near"]]
    assert len(picks) and picks["reason"].str.contains(f"near focus example {example}").all()
    # The quality gate holds: the same images are defects, last, in the same order.
    assert (
        focused.loc[focused["region"] == "defect", "image_id"].tolist()
        == plain.loc[plain["region"] == "defect", "image_id"].tolist()
    )
    # Near-duplicates of a pick stay held back: no coverage pick is within the near-duplicate
    # distance of an earlier pick.
    coverage = focused[focused["region"] == "coverage"]
    graph = NeighbourGraph.from_frame(inputs["neighbour_graph"])
    near_duplicate = coverage_radii(graph)[-1]
    assert (1 - coverage["nearest_chosen_similarity"].dropna() > near_duplicate - 1e-6).all()


def test_the_focus_settings_defaults_are_the_algorithms() -> None:
    settings = FocusSettings(examples=["seq-000/frame_0000"])
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(focus_weights).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    assert settings.focus_params == {name: defaults[name] for name in settings.focus_params}


def test_without_focus_nothing_changes(ranked_pipeline) -> None:
    inputs = _coverage_inputs(ranked_pipeline, "town")
    stored = ranked_pipeline.read("labeling_priority", "town")
    again = strategies.rank("coverage", **inputs)
    pd.testing.assert_frame_equal(again, stored[again.columns.tolist()], check_dtype=False)
    assert not set(FOCUS_COLUMNS) & set(stored.columns)
    # Weights of one each are the unweighted ranking, rank for rank and reason for reason.
    graph = NeighbourGraph.from_frame(inputs["neighbour_graph"])
    unweighted = rank_by_coverage(graph, inputs["labelled_ids"])
    one_each = pd.Series(1.0, index=graph.image_ids)
    ones = rank_by_coverage(graph, inputs["labelled_ids"], weights=one_each, reach=one_each)
    pd.testing.assert_frame_equal(unweighted, ones)
    with pytest.raises(ValueError, match="not negative"):
        rank_by_coverage(graph, weights=-one_each)


def test_focus_in_the_collections_file_reaches_the_ranking(fresh_pipeline, tmp_path) -> None:
    """focus: with an image id and an outside file, through a real rank_collection run."""
    truth = manifest(fresh_pipeline, "town")
    frame = features(fresh_pipeline, "town")
    tunnel = truth[(truth["scene_type"] == TUNNEL) & truth["image_id"].isin(frame["image_id"])]
    outside = tmp_path / "tunnel-elsewhere.jpg"
    shutil.copyfile(fresh_pipeline.demos["town"].images_dir / tunnel["path"].iloc[-1], outside)
    path = fresh_pipeline.data_dir / "collections.yaml"
    document = yaml.safe_load(path.read_text())
    town = document["collections"]["town"]
    town["focus"] = {"examples": [tunnel["image_id"].iloc[0], str(outside)], "weight": 6}
    path.write_text(yaml.safe_dump(document))
    before = fresh_pipeline.read("labeling_priority", "town")
    assert fresh_pipeline.run_job("rank_collection", "town").success
    weights = fresh_pipeline.read("focus_weights", "town")
    assert set(weights["focus_example"]) <= set(town["focus"]["examples"])
    ranking = fresh_pipeline.read("labeling_priority", "town")
    assert set(FOCUS_COLUMNS) <= set(ranking.columns)
    first_two = sorted(_tunnel_ranks(ranking, truth))[:2]
    assert first_two[0] == 1 and first_two[1] < sorted(_tunnel_ranks(before, truth))[1]
    assert ranking.loc[ranking["focus_near"], "reason"].str.contains("near focus example").all()
    # The report: one section per example, with its nearest unlabelled images.
    assert dg.materialize(
        list(fresh_pipeline.defs.assets),
        selection=["ranking_report"],
        partition_key="town",
        instance=fresh_pipeline.instance,
        resources=fresh_pipeline.defs.resources,
    ).success
    page = (fresh_pipeline.data_dir / "exports" / "town" / "report" / "index.html").read_text()
    focus_section = page[page.index('<section id="focus">') :]
    focus_section = focus_section[: focus_section.index("</section>")]
    for example in town["focus"]["examples"]:
        assert f"Example <code>{example}</code>" in focus_section
    shown = weights.sort_values("focus_similarity", ascending=False)
    shown = shown[
        ~shown["image_id"].isin(fresh_pipeline.read("labeled_images", "town")["image_id"])
    ]
    assert f"<code>{shown['image_id'].iloc[0]}</code>" in focus_section
    # focus: removed again: the ranking is the plain one once more.
    del town["focus"]
    path.write_text(yaml.safe_dump(document))
    assert fresh_pipeline.run_job("rank_collection", "town").success
    plain = fresh_pipeline.read("labeling_priority", "town")
    pd.testing.assert_frame_equal(plain, before)
