"""The whole study pipeline on a generated collection, in a real Dagster instance."""

import dagster as dg
import numpy as np
import pandas as pd

from imgrank_dagster.defs.ranking.assets import RANKING_CHECKS, RANKING_EXPORT_NAME
from imgrank_dagster.lib.parquet import read_lineage

COLLECTION_ASSETS = [
    "collection_images",
    "feature_matrix",
    "labeled_images",
    "cluster_assignments",
    "similar_pairs",
    "image_base_scores",
    "cluster_metrics",
    "image_scores",
    "labeling_priority",
]


def test_every_asset_materialized(ranked_pipeline) -> None:
    pipeline = ranked_pipeline
    for asset in COLLECTION_ASSETS:
        assert pipeline.materialization_count(asset, "city") == 1, asset
        assert (pipeline.warehouse / asset / "city.parquet").is_file(), asset
    sequences = [
        k for k in pipeline.instance.get_dynamic_partitions("sequences") if k.startswith("city.")
    ]
    assert len(sequences) == 8
    for asset in ["raw_image_sequences", "image_features"]:
        done = pipeline.instance.get_materialized_partitions(dg.AssetKey(asset))
        assert set(sequences) <= done


def test_ranking_checks_passed(ranked_pipeline) -> None:
    for name in RANKING_CHECKS:
        evaluation = (
            ranked_pipeline.instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [dg.AssetCheckKey(dg.AssetKey("labeling_priority"), name)]
            )
        )
        record = evaluation[dg.AssetCheckKey(dg.AssetKey("labeling_priority"), name)]
        assert record.status.value == "SUCCEEDED", name
        assert record.event.dagster_event.event_specific_data.passed, name


def test_ranking_content(ranked_pipeline) -> None:
    pipeline = ranked_pipeline
    ranking = pipeline.read("labeling_priority", "city")
    raw = pd.concat(
        pd.read_parquet(p)
        for p in (pipeline.warehouse / "raw_image_sequences").glob("city.*.parquet")
    )
    labelled = set(pipeline.read("labeled_images", "city")["image_id"])
    manifest = pd.read_csv(pipeline.data_dir / "city" / "manifest.csv")
    # The generator's defective files are rejected at ingestion, never ranked.
    unreadable = manifest.loc[manifest["defect"].isin(["truncated", "not_an_image"]), "image_id"]
    assert set(unreadable) <= set(raw.loc[raw["status"] == "rejected", "image_id"])
    assert not set(unreadable) & set(ranking["image_id"])
    assert labelled and not labelled & set(ranking["image_id"])
    accepted = set(raw.loc[raw["status"] == "ok", "image_id"])
    assert set(ranking["image_id"]) == accepted - labelled
    assert ranking["rank"].tolist() == list(range(1, len(ranking) + 1))
    region_order = ranking["region"].map({"good": 0, "medium": 1, "bad": 2})
    order = list(zip(region_order, ranking["priority_group"], -ranking["score"], strict=True))
    assert order == sorted(order)
    assert ranking["reason"].str.len().min() > 0
    for column in ["path", "sequence_id", "captured_at", "lat", "lng", "cluster", "uniqueness"]:
        assert column in ranking, column
    export = pd.read_csv(pipeline.data_dir / "exports" / "city" / RANKING_EXPORT_NAME)
    assert export["image_id"].tolist() == ranking["image_id"].tolist()


def test_collection_images_lists_every_file_with_its_status(ranked_pipeline) -> None:
    pipeline = ranked_pipeline
    catalog = pipeline.read("collection_images", "city")
    manifest = pd.read_csv(pipeline.data_dir / "city" / "manifest.csv")
    assert sorted(catalog["image_id"]) == sorted(manifest["image_id"])
    unreadable = manifest.loc[manifest["defect"].isin(["truncated", "not_an_image"]), "image_id"]
    left_out = catalog.set_index("image_id").loc[unreadable]
    assert (left_out["status"] == "rejected").all()
    assert (left_out["reason"].str.len() > 0).all()
    accepted = set(catalog.loc[catalog["status"] == "ok", "image_id"])
    assert accepted == set(pipeline.read("feature_matrix", "city")["image_id"])


def test_labelled_set_matches_the_labels_file(ranked_pipeline) -> None:
    labels = pd.read_csv(ranked_pipeline.data_dir / "city" / "labels" / "labels.csv")
    labelled = ranked_pipeline.read("labeled_images", "city")
    assert sorted(labelled["image_id"]) == sorted(labels["image_id"])


def test_still_sequences_keep_one_unpunished_image_per_duplicate_group(ranked_pipeline) -> None:
    manifest = pd.read_csv(ranked_pipeline.data_dir / "city" / "manifest.csv")
    base = ranked_pipeline.read("image_base_scores", "city").set_index("image_id")
    grouped = manifest[(manifest["duplicate_group"] >= 0) & manifest["image_id"].isin(base.index)]
    assert grouped["duplicate_group"].nunique() >= 1, (
        "the generated collection has a still sequence"
    )
    for (sequence, group), members in grouped.groupby(["sequence_id", "duplicate_group"]):
        punishment = base.loc[members["image_id"], "uniqueness_punishment"]
        assert (punishment == 1.0).sum() == 1, (sequence, group, punishment.to_dict())
        assert (punishment[punishment < 1.0] == 0.5).all()


def test_clustering_metadata_and_determinism(ranked_pipeline) -> None:
    assignments = ranked_pipeline.read("cluster_assignments", "city")
    metrics = ranked_pipeline.read("cluster_metrics", "city")
    assert set(metrics["cluster"]) == set(assignments["cluster"])
    assert metrics["size"].sum() == len(assignments)
    assert set(metrics["priority_group"]) <= {1, 2, 3, 4}
    records = ranked_pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("cluster_assignments"), asset_partitions=["city"]),
        limit=1,
    ).records
    metadata = records[0].asset_materialization.metadata
    assert metadata["k"].value == assignments["cluster"].nunique()
    assert "data:image/png;base64," in metadata["elbow_curve"].value
    assert "data:image/png;base64," in metadata["silhouette_curve"].value


def test_lineage_links_each_file_to_its_inputs(ranked_pipeline) -> None:
    lineage = read_lineage(ranked_pipeline.warehouse / "labeling_priority" / "city.parquet")
    upstream = {item["asset_key"] for item in lineage["upstream"]}
    assert upstream == {
        "image_scores",
        "cluster_metrics",
        "labeled_images",
        "feature_matrix",
        "neighbour_graph",
        "focus_weights",
    }
    scores = read_lineage(ranked_pipeline.warehouse / "image_scores" / "city.parquet")
    versions = {item["asset_key"]: item["data_version"] for item in lineage["upstream"]}
    assert versions["image_scores"] == scores["data_version"]
    features = read_lineage(ranked_pipeline.warehouse / "feature_matrix" / "city.parquet")
    assert sorted(
        item["partition"] for item in features["upstream"] if item["asset_key"] == "image_features"
    ) == [f"city.seq-{i:03d}" for i in range(8)]


def test_scores_finite_and_components_in_range(ranked_pipeline) -> None:
    scores = ranked_pipeline.read("image_scores", "city")
    assert np.isfinite(scores["score"]).all()
    for column in ["uniqueness", "blur", "brightness"]:
        assert scores[column].between(0, 1).all(), column
    assert set(scores["uniqueness_punishment"]) <= {0.5, 1.0}


def test_coverage_strategy_ranks_the_same_images_with_its_own_order(ranked_pipeline) -> None:
    ranking = ranked_pipeline.read("labeling_priority", "town")
    scores = ranked_pipeline.read("image_scores", "town")
    unlabelled = set(scores.loc[~scores["labelled"], "image_id"])
    assert set(ranking["image_id"]) == unlabelled
    assert ranking["rank"].tolist() == list(range(1, len(ranking) + 1))
    assert set(ranking["region"]) <= {"coverage", "held back", "defect"}
    region_order = ranking["region"].map({"coverage": 0, "held back": 1, "defect": 2})
    assert region_order.is_monotonic_increasing
    covered = ranking[ranking["region"] == "coverage"]
    assert len(covered) and (covered["covers"] >= 1).all()
    # The study's components ride along; the coverage score is its own.
    assert ranking["study_score"].notna().all() and ranking["uniqueness"].notna().all()
    assert ranking["reason"].str.len().min() > 0
    manifest = pd.read_csv(ranked_pipeline.data_dir / "town" / "manifest.csv")
    black = set(manifest.loc[manifest["defect"] == "black", "image_id"]) & set(ranking["image_id"])
    assert (ranking.set_index("image_id").loc[sorted(black), "region"] == "defect").all()
    for name in RANKING_CHECKS:
        key = dg.AssetCheckKey(dg.AssetKey("labeling_priority"), name)
        storage = ranked_pipeline.instance.event_log_storage
        record = storage.get_latest_asset_check_execution_by_key([key])[key]
        assert record.status.value == "SUCCEEDED", name


def test_every_column_of_every_asset_is_described(ranked_pipeline) -> None:
    """The UI's column schema says what each column means, for every asset the pipeline wrote."""
    graph = ranked_pipeline.defs.resolve_asset_graph()
    seen = 0
    for key in graph.get_all_asset_keys():
        partitions = ["city"] if graph.get(key).partitions_def.name == "collections" else None
        records = ranked_pipeline.instance.fetch_materializations(
            dg.AssetRecordsFilter(key, asset_partitions=partitions), limit=1
        ).records
        if not records:
            continue  # views and KartaView discovery are not built by this pipeline
        schema = records[0].asset_materialization.metadata["dagster/column_schema"].value
        undescribed = [column.name for column in schema.columns if not column.description]
        assert not undescribed, f"{key.to_user_string()}: {undescribed}"
        seen += 1
    assert seen >= 12
