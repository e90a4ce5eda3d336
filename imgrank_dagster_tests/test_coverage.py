"""The coverage strategy and its neighbour graph, on small embeddings with planted structure."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from upath import UPath

from imgrank_dagster.core.ranking.coverage import (
    COVERAGE_RANKING_COLUMNS,
    OBJECTIVES,
    coverage_radii,
    detect_defects,
    rank_by_coverage,
    strictly_decreasing,
)
from imgrank_dagster.core.ranking.neighbours import (
    NeighbourGraph,
    build_neighbour_graph,
    neighbour_recall,
)
from imgrank_dagster.lib.parquet import read_frame, write_frame


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _clusters(sizes: list[int], seed: int = 0, spread: float = 0.15, dims: int = 64):
    """Tight clusters around random centres; returns embeddings and the cluster of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dims))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    noise = rng.standard_normal((len(labels), dims)) * spread
    return _unit(centres[labels] + noise), labels


def _orthonormal(count: int, dims: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dims, count)))
    return q.T


def _ids(n: int, prefix: str = "img") -> list[str]:
    return [f"{prefix}/{row:04d}" for row in range(n)]


def _first_rank(ranking: pd.DataFrame, ids: set[str]) -> int:
    return int(ranking.loc[ranking["image_id"].isin(ids), "rank"].min())


# -- the neighbour graph -------------------------------------------------------------------


def test_exact_graph_matches_brute_force():
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((300, 32)).astype(np.float32) * 3.0
    graph = build_neighbour_graph(embeddings, k=7, image_ids=_ids(300))
    vectors = _unit(embeddings)
    distances = 1 - vectors @ vectors.T
    np.fill_diagonal(distances, np.inf)
    expected = np.argsort(distances, axis=1)[:, :7]
    assert graph.method == "exact"
    assert np.array_equal(graph.indices, expected)
    np.testing.assert_allclose(
        graph.distances, np.take_along_axis(distances, expected, axis=1), atol=1e-5
    )
    assert np.array_equal(graph.distances, graph.content_distances)


def test_approximate_graph_finds_most_true_neighbours():
    embeddings, _ = _clusters([150] * 20, seed=2, spread=0.4)
    graph = build_neighbour_graph(embeddings, k=10, exact_limit=0)
    assert graph.method == "ivf"
    assert neighbour_recall(embeddings, graph, sample=300) >= 0.95
    # The distances it reports are the true ones for the pairs it lists.
    vectors = _unit(embeddings)
    listed = 1 - np.einsum("id,ikd->ik", vectors, vectors[graph.indices])
    np.testing.assert_allclose(graph.distances, listed, atol=1e-5)
    assert (np.diff(graph.distances, axis=1) >= 0).all()


def test_graph_round_trips_through_parquet(tmp_path):
    """Through the IO manager's file format (lib.parquet), as the neighbour_graph asset."""
    embeddings, _ = _clusters([20, 20], seed=3)
    graph = build_neighbour_graph(embeddings, k=5, image_ids=_ids(40))
    path = UPath(tmp_path / "graph.parquet")
    write_frame(graph.to_frame(), path, lineage={})
    loaded = NeighbourGraph.from_frame(read_frame(path))
    assert loaded.image_ids.tolist() == graph.image_ids.tolist()
    assert np.array_equal(loaded.indices, graph.indices)
    assert np.array_equal(loaded.distances, graph.distances)
    assert loaded.method == "exact"
    # The embedding-only neighbours travel with it.
    assert np.array_equal(loaded.nearest.indices, graph.nearest.indices)
    assert np.array_equal(loaded.nearest.similarities, graph.nearest.similarities)


@pytest.mark.parametrize(
    ("embeddings", "kwargs", "message"),
    [
        (np.array([[1.0, np.nan], [1.0, 0.0]]), {}, "NaN"),
        (np.array([[0.0, 0.0], [1.0, 0.0]]), {}, "all zero"),
        (np.ones((1, 4)), {}, "at least 2"),
        (np.ones((3, 4)), {"image_ids": ["a", "b"]}, "image_ids has 2 entries"),
        (np.ones((3, 4)), {"alpha": 0.0}, "alpha"),
        (np.ones((3, 4)), {"k": 0}, "k must be"),
        (np.ones(4), {}, "2-d"),
    ],
)
def test_graph_rejects_bad_input(embeddings, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_neighbour_graph(embeddings, **kwargs)


# -- a collection with sequences: frames at moderate content distance, with time and GPS -----


def _street_collection(with_places: bool):
    """40 background pairs (no metadata) whose partner distances spread over 0.02-0.06, and 8
    sequences of 5 frames, every two frames of a sequence at content distance 0.06, with
    capture time 1 s and ~5.5 m apart. The median nearest-neighbour distance is ~0.05, so
    by content alone frames of a sequence are distinct images."""
    pairs, sequences, frames = 40, 8, 5
    basis = _orthonormal(pairs + 2 * pairs + sequences + sequences * frames, 200, seed=4)
    bases, noise = basis[:pairs], basis[pairs : 3 * pairs]
    sequence_bases = basis[3 * pairs : 3 * pairs + sequences]
    frame_noise = basis[3 * pairs + sequences :]
    spread = np.linspace(0.02, 0.06, pairs)
    rows, meta = [], []
    for pair in range(pairs):
        for side in range(2):
            t = spread[pair]
            rows.append(np.sqrt(1 - t) * bases[pair] + np.sqrt(t) * noise[2 * pair + side])
            meta.append(
                {
                    "image_id": f"bg-{pair:02d}/{side}",
                    "sequence_id": f"bg-{pair:02d}",
                    "sequence_index": side,
                    "captured_at": pd.NaT,
                    "lat": np.nan,
                    "lng": np.nan,
                }
            )
    start = pd.Timestamp("2024-05-01 10:00", tz="UTC")
    for sequence in range(sequences):
        for frame in range(frames):
            t = 0.06
            noise_row = frame_noise[sequence * frames + frame]
            rows.append(np.sqrt(1 - t) * sequence_bases[sequence] + np.sqrt(t) * noise_row)
            meta.append(
                {
                    "image_id": f"seq-{sequence}/frame_{frame}",
                    "sequence_id": f"seq-{sequence}",
                    "sequence_index": frame,
                    "captured_at": start + pd.Timedelta(hours=sequence, seconds=frame),
                    "lat": 52.5 + 0.01 * sequence + 0.00005 * frame,
                    "lng": 13.4,
                }
            )
    meta = pd.DataFrame(meta)
    graph = build_neighbour_graph(
        np.array(rows, dtype=np.float32),
        image_ids=meta["image_id"].tolist(),
        places=meta if with_places else None,
    )
    return graph, meta


def _coverage_frames_by_sequence(ranking: pd.DataFrame) -> dict[str, list[int]]:
    picked = ranking[(ranking["region"] == "coverage") & ranking["image_id"].str.startswith("seq")]
    frames: dict[str, list[int]] = {}
    for image_id in picked["image_id"]:
        sequence, frame = image_id.split("/frame_")
        frames.setdefault(sequence, []).append(int(frame))
    return frames


def test_place_mixing_joins_only_nearby_frames_of_one_sequence():
    graph, meta = _street_collection(with_places=True)
    position = {image_id: row for row, image_id in enumerate(graph.image_ids)}
    row = position["seq-2/frame_2"]
    by_neighbour = dict(zip(graph.indices[row], graph.distances[row], strict=True))
    content = dict(zip(graph.indices[row], graph.content_distances[row], strict=True))
    one_step, two_steps = position["seq-2/frame_1"], position["seq-2/frame_0"]
    assert by_neighbour[one_step] < by_neighbour[two_steps] < content[two_steps]
    background = [position[i] for i in meta["image_id"] if i.startswith("bg-")]
    assert np.array_equal(graph.distances[background], graph.content_distances[background])


def test_neighbouring_frames_of_a_sequence_count_as_one_place():
    graph, _ = _street_collection(with_places=True)
    ranking = rank_by_coverage(graph)
    for sequence, frames in _coverage_frames_by_sequence(ranking).items():
        frames = sorted(frames)
        assert all(b - a >= 3 for a, b in itertools.pairwise(frames)), sequence
    same_place = ranking[ranking["held_back_reason"].str.startswith("same place as seq-")]
    assert len(same_place) >= 8
    # Control: without the metadata the same frames are distinct images, all picked.
    plain = rank_by_coverage(_street_collection(with_places=False)[0])
    assert all(len(frames) == 5 for frames in _coverage_frames_by_sequence(plain).values())


# -- coverage order ---------------------------------------------------------------------------


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_greedy_order_covers_the_most_first_and_outliers_late(objective: str):
    embeddings, labels = _clusters([30, 12, 5], seed=5)
    outliers = _unit(np.random.default_rng(6).standard_normal((3, 64)))
    embeddings = np.vstack([embeddings, outliers])
    labels = np.concatenate([labels, [-1, -1, -1]])
    ids = np.array(_ids(len(labels)))
    graph = build_neighbour_graph(embeddings, image_ids=ids.tolist())
    ranking = rank_by_coverage(graph, objective=objective)
    cluster_of = dict(zip(ids, labels, strict=True))
    ranked_clusters = ranking["image_id"].map(cluster_of).to_numpy()
    assert ranked_clusters[0] == 0
    first = {cluster: int(np.argmax(ranked_clusters == cluster)) for cluster in (0, 1, 2, -1)}
    assert first[0] < first[1] < first[2] < first[-1]
    stage_one = ranking[ranking["stage"] == 0]
    if objective == "radius":  # the gain is the count of covered images
        assert (np.diff(stage_one["covers"].to_numpy()) <= 0).all()  # greedy: never grows
        assert stage_one["covers"].iloc[0] > stage_one["covers"].iloc[-1]
    assert ranking.attrs["coverage"]["objective"] == objective


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_score_decreases_strictly_with_rank(objective: str):
    """Sorting the export by score gives the ranking's order, held back and defects too."""
    embeddings, _ = _clusters([25, 25, 10], seed=21, spread=0.3)
    copies = np.repeat(embeddings[:5], 4, axis=0) + 1e-4  # near-copies: held back
    embeddings = _unit(np.vstack([embeddings, copies]))
    ids = _ids(len(embeddings))
    quality = pd.DataFrame(
        {"image_id": ids, "brightness": 120.0, "blur": 300.0, "min_value": 0.0, "max_value": 255.0}
    )
    quality.loc[3, ["brightness", "max_value"]] = [2.0, 8.0]  # a black frame: a defect
    graph = build_neighbour_graph(embeddings, image_ids=ids)
    ranking = rank_by_coverage(graph, ids[10:12], quality=quality, objective=objective)
    assert set(ranking["region"]) == {"coverage", "held back", "defect"}
    assert (np.diff(ranking["score"].to_numpy()) < 0).all()
    assert ranking["score"].iloc[0] == pytest.approx(1.0)
    assert (ranking["score"] > 0).all()
    resorted = ranking.sort_values("score", ascending=False, kind="stable")
    assert resorted["rank"].tolist() == ranking["rank"].tolist()


def test_strictly_decreasing_changes_only_ties_and_rises():
    values = np.array([5.0, 3.0, 3.0, 4.0, 1.0, 0.0, 0.0])
    result = strictly_decreasing(values)
    assert (np.diff(result) < 0).all()
    np.testing.assert_allclose(result[[0, 1, 4]], values[[0, 1, 4]])
    assert result[2] == pytest.approx(3.0, rel=1e-5) and result[3] < result[2]


def test_soft_coverage_counts_a_group_of_near_copies_about_as_one_image():
    """Twelve copies of one frame do not make its small cluster the densest region."""
    embeddings, labels = _clusters([25, 20, 10], seed=22, spread=0.3)
    plain = rank_by_coverage(build_neighbour_graph(embeddings, image_ids=_ids(len(labels))))
    plain_firsts = plain["image_id"].map(dict(zip(_ids(len(labels)), labels, strict=True)))
    rng = np.random.default_rng(22)
    source = int(np.flatnonzero(labels == 2)[0])
    copies = embeddings[source] + rng.standard_normal((12, embeddings.shape[1])) * 1e-3
    embeddings = _unit(np.vstack([embeddings, copies]))
    labels = np.concatenate([labels, np.full(12, 2)])
    ids = np.array(_ids(len(labels)))
    ranking = rank_by_coverage(build_neighbour_graph(embeddings, image_ids=ids.tolist()))
    cluster_of = dict(zip(ids, labels, strict=True))
    first_picks = ranking["image_id"].map(cluster_of).drop_duplicates().tolist()
    # Counted one by one, the copies would pull cluster 2 forward.
    assert first_picks.index(2) >= plain_firsts.drop_duplicates().tolist().index(2)
    assert first_picks[0] != 2
    copy_ids = set(ids[-12:]) | {ids[source]}
    ranked_copies = ranking[ranking["image_id"].isin(copy_ids)]
    assert (ranked_copies["region"] == "coverage").sum() == 1  # the rest are held back


def test_weights_turn_the_soft_ranking_and_say_why():
    embeddings, labels = _clusters([20, 20, 20], seed=23, spread=0.3)
    ids = np.array(_ids(60))
    graph = build_neighbour_graph(embeddings, image_ids=ids.tolist())
    plain = rank_by_coverage(graph)
    weights = pd.Series(np.where(labels == 2, 1.0, 0.05), index=ids)
    notes = pd.Series("near the example img/0050", index=ids[labels == 2])
    weighted = rank_by_coverage(graph, weights=weights, weight_reasons=notes)
    cluster_of = dict(zip(ids, labels, strict=True))
    assert cluster_of[weighted["image_id"].iloc[0]] == 2
    assert plain["image_id"].tolist() != weighted["image_id"].tolist()
    first = weighted.iloc[0]
    assert first["reason"].endswith("; near the example img/0050")
    # The weights re-order, never drop: the same images, each once.
    assert sorted(weighted["image_id"]) == sorted(plain["image_id"])
    with pytest.raises(ValueError, match=r"finite and not negative.*img/0001"):
        rank_by_coverage(graph, weights=pd.Series([-1.0], index=["img/0001"]))
    with pytest.raises(ValueError, match="objective"):
        rank_by_coverage(graph, objective="hard")


def test_images_near_labelled_ones_come_after_uncovered_ones():
    embeddings, labels = _clusters([20, 20], seed=7)
    ids = np.array(_ids(40))
    graph = build_neighbour_graph(embeddings, image_ids=ids.tolist())
    in_a, in_b = set(ids[labels == 0]), set(ids[labels == 1])
    ranking = rank_by_coverage(graph, labelled_ids=[ids[0], ids[1]])
    assert ranking["image_id"].iloc[0] in in_b
    assert _first_rank(ranking, in_b) < _first_rank(ranking, in_a - {ids[0], ids[1]})
    assert not ranking["image_id"].isin({ids[0], ids[1]}).any()
    # Labelling the other cluster flips it.
    flipped = rank_by_coverage(graph, labelled_ids=[ids[20], ids[21]])
    assert flipped["image_id"].iloc[0] in in_a
    # Labels naming images the collection no longer holds are ignored.
    unknown = rank_by_coverage(graph, labelled_ids=[ids[0], ids[1], "gone/0001"])
    assert unknown["image_id"].tolist() == ranking["image_id"].tolist()


def test_no_second_near_duplicate_before_every_group_had_its_first():
    rng = np.random.default_rng(8)
    distinct = rng.standard_normal((60, 128))
    groups = rng.standard_normal((8, 128))
    copies = np.repeat(groups, 3, axis=0) + rng.standard_normal((24, 128)) * 0.01
    embeddings = _unit(np.vstack([distinct, copies]))
    ids = [f"distinct/{row:02d}" for row in range(60)]
    ids += [f"group-{group}/copy-{copy}" for group in range(8) for copy in range(3)]
    ranking = rank_by_coverage(build_neighbour_graph(embeddings, image_ids=ids))
    grouped = ranking[ranking["image_id"].str.startswith("group-")].copy()
    grouped["group"] = grouped["image_id"].str.split("/").str[0]
    order_in_group = grouped.groupby("group").cumcount()
    firsts, seconds = grouped[order_in_group == 0], grouped[order_in_group >= 1]
    assert len(firsts) == 8
    assert firsts["rank"].max() < seconds["rank"].min()
    assert (seconds["region"] == "held back").all()
    for row in seconds.itertuples():
        assert row.held_back_reason.startswith(f"near-duplicate of {row.group}/")


def test_defects_go_last_in_their_own_region():
    embeddings, _ = _clusters([25, 25], seed=9)
    ids = _ids(50)
    rng = np.random.default_rng(10)
    quality = pd.DataFrame(
        {
            "image_id": ids,
            "blur": rng.lognormal(6, 0.3, 50),
            "brightness": rng.normal(120, 10, 50),
            "min_value": rng.integers(0, 20, 50),
            "max_value": rng.integers(220, 256, 50),
        }
    )
    planted = {
        ids[3]: {"brightness": 2.0, "max_value": 9},  # black
        ids[10]: {"brightness": 20.0},  # very dark for this collection
        ids[30]: {"brightness": 250.0, "min_value": 245},  # overexposed
        ids[40]: {"blur": 1.0},  # very blurred
    }
    for image_id, values in planted.items():
        for column, value in values.items():
            quality.loc[quality["image_id"] == image_id, column] = value
    graph = build_neighbour_graph(embeddings, image_ids=ids)
    ranking = rank_by_coverage(graph, quality=quality)
    assert ranking["image_id"].is_unique and len(ranking) == 50
    tail = ranking.tail(4)
    assert set(tail["image_id"]) == set(planted)
    assert (tail["region"] == "defect").all()
    assert (ranking["region"].iloc[:-4] != "defect").all()
    reasons = dict(zip(tail["image_id"], tail["held_back_reason"], strict=True))
    assert reasons[ids[3]].startswith("black frame")
    assert reasons[ids[10]].startswith("very dark")
    assert reasons[ids[30]].startswith("overexposed")
    assert reasons[ids[40]].startswith("very blurred")


def test_defect_limits_come_from_the_collection():
    rng = np.random.default_rng(11)
    night = pd.DataFrame(
        {
            "image_id": _ids(40),
            "blur": rng.lognormal(5, 0.3, 40),
            "brightness": rng.normal(30, 3, 40),  # a night collection: dark is normal here
            "min_value": rng.integers(0, 5, 40),
            "max_value": rng.integers(150, 256, 40),
        }
    )
    assert not detect_defects(night)["defect"].any()
    given = pd.DataFrame({"image_id": ["a", "b"], "defect": [True, False]})
    assert detect_defects(given)["defect"].tolist() == [True, False]
    with pytest.raises(ValueError, match="brightness"):
        detect_defects(pd.DataFrame({"image_id": ["a"], "blur": [1.0]}))


def test_radius_is_derived_from_the_data():
    embeddings, _ = _clusters([30, 20, 10, 5], seed=12, spread=0.3)
    graph = build_neighbour_graph(embeddings, image_ids=_ids(65))
    scaled = NeighbourGraph(
        graph.image_ids,
        graph.indices,
        graph.distances * 0.37,
        graph.content_distances * 0.37,
        graph.method,
    )
    np.testing.assert_allclose(coverage_radii(scaled), coverage_radii(graph) * 0.37, rtol=1e-5)
    labelled = _ids(65)[:3]
    original = rank_by_coverage(graph, labelled)
    rescaled = rank_by_coverage(scaled, labelled)
    assert rescaled["image_id"].tolist() == original["image_id"].tolist()
    assert rescaled["covers"].tolist() == original["covers"].tolist()


def test_ranking_is_deterministic():
    embeddings, _ = _clusters([30, 20, 10], seed=13, spread=0.3)
    ids = _ids(60)
    first = rank_by_coverage(build_neighbour_graph(embeddings, image_ids=ids), {ids[5], ids[40]})
    second = rank_by_coverage(build_neighbour_graph(embeddings, image_ids=ids), [ids[40], ids[5]])
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_row_says_why(objective: str):
    embeddings, labels = _clusters([20, 15, 10], seed=14, spread=0.3)
    ids = np.array(_ids(45))
    clusters = pd.DataFrame({"image_id": ids, "cluster": labels})
    graph = build_neighbour_graph(embeddings, image_ids=ids.tolist())
    subset = ids[:40].tolist()  # rank only some images
    ranking = rank_by_coverage(
        graph, [ids[0]], image_ids=subset, clusters=clusters, objective=objective
    )
    assert list(ranking.columns) == COVERAGE_RANKING_COLUMNS
    assert ranking["rank"].tolist() == list(range(1, 40))
    assert set(ranking["image_id"]) == set(subset) - {ids[0]}
    assert (ranking["reason"].str.len() > 0).all()
    coverage = ranking[ranking["region"] == "coverage"]
    assert (coverage["covers"] >= 1).all()
    said = {
        "radius": r"covers \d+ uncovered images? \(radius [\d.]+, stage \d+ of \d+\)",
        "soft": r"adds [\d.]+% of the first pick's coverage: brings \d+ images? close to a pick "
        r"\(radius [\d.]+, stage \d+ of \d+\)",
    }[objective]
    assert coverage["reason"].str.match(said).all()
    assert (ranking.loc[ranking["region"] != "coverage", "held_back_reason"] != "").all()
    # Clusters 1 and 2 have no labels: exactly their first ranked image opens them.
    opened = ranking[ranking["opens_unlabelled_cluster"]]
    assert sorted(opened["cluster"]) == [1, 2]
    for row in opened.itertuples():
        assert row.rank == ranking.loc[ranking["cluster"] == row.cluster, "rank"].min()
        assert f"opens cluster {row.cluster}" in row.reason


def test_rank_rejects_images_outside_the_graph():
    embeddings, _ = _clusters([10, 10], seed=15)
    graph = build_neighbour_graph(embeddings, image_ids=_ids(20))
    with pytest.raises(ValueError, match="image_ids: 1 image"):
        rank_by_coverage(graph, image_ids=[*_ids(20)[:5], "other/0001"])
    with pytest.raises(ValueError, match="clusters lacks"):
        rank_by_coverage(graph, clusters=pd.DataFrame({"image_id": _ids(20)}))
    everything = rank_by_coverage(graph, labelled_ids=_ids(20))
    assert everything.empty and list(everything.columns) == COVERAGE_RANKING_COLUMNS


def _random_graph(n: int, k: int, seed: int) -> NeighbourGraph:
    """Rows of distinct other images; distances on a coarse grid (ties), listed either way
    with unrelated distances, content distances unrelated to the effective ones."""
    rng = np.random.default_rng(seed)
    indices = np.array(
        [rng.choice(np.delete(np.arange(n), row), k, replace=False) for row in range(n)]
    ).astype(np.int32)
    distances = np.sort(rng.integers(1, 5, (n, k)) / 10, axis=1).astype(np.float32)
    content = rng.uniform(0.05, 0.9, (n, k)).astype(np.float32)
    return NeighbourGraph(np.array(_ids(n), dtype=object), indices, distances, content, "exact")


def test_nearest_chosen_is_the_nearest_earlier_neighbour_either_way():
    n, k = 40, 8
    graph = _random_graph(n, k, seed=16)
    ids = _ids(n)
    ranking = rank_by_coverage(graph, ids[:4])
    # Brute force: a pair listed both ways counts once, at its smaller distance (a tie keeps
    # the image's own listing); among equally near neighbours the lower row comes first.
    listed = {
        (row, int(graph.indices[row, position])): (
            float(graph.distances[row, position]),
            float(graph.content_distances[row, position]),
        )
        for row, position in itertools.product(range(n), range(k))
    }
    pairs = dict(listed)
    for (row, other), (distance, content) in listed.items():
        if (other, row) not in listed or distance < listed[other, row][0]:
            pairs[other, row] = (distance, content)
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    chosen = set(range(4))
    for pick in ranking.itertuples():
        image = row_of[pick.image_id]
        candidates = sorted(
            (distance, other, content)
            for (row, other), (distance, content) in pairs.items()
            if row == image and other in chosen
        )
        if candidates:
            _, nearest, content = candidates[0]
            assert pick.nearest_chosen_id == ids[nearest]
            assert pick.nearest_chosen_similarity == pytest.approx(1 - content)
        else:
            assert pick.nearest_chosen_id == "" and np.isnan(pick.nearest_chosen_similarity)
        chosen.add(image)


@pytest.mark.parametrize("listed", ["twice", "itself"])
def test_a_graph_row_must_list_distinct_other_images(listed: str):
    graph = _random_graph(20, 4, seed=17)
    indices = graph.indices.copy()
    indices[3, 1] = indices[3, 0] if listed == "twice" else 3
    with pytest.raises(ValueError, match="row 3 lists an image twice or itself"):
        NeighbourGraph(
            graph.image_ids, indices, graph.distances, graph.content_distances, graph.method
        )
