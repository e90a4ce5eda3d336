"""Assembles the project: every asset, check, job, sensor and schedule is one hop from here."""

import dagster as dg

from imgrank_dagster.defs.ingestion.assets import image_features, raw_image_sequences
from imgrank_dagster.defs.ingestion.jobs import ingest_sequences_job
from imgrank_dagster.defs.ingestion.sensors import collections_sensor
from imgrank_dagster.defs.kartaview.assets import discover_kartaview_job, kartaview_sequences
from imgrank_dagster.defs.kartaview.schedules import daily_refresh_schedule
from imgrank_dagster.defs.kartaview.sensors import kartaview_sequences_sensor
from imgrank_dagster.defs.labels.assets import labeled_images
from imgrank_dagster.defs.labels.jobs import apply_labels_job
from imgrank_dagster.defs.labels.sensors import labels_sensor
from imgrank_dagster.defs.ranking.assets import (
    cluster_assignments,
    cluster_metrics,
    image_base_scores,
    image_scores,
    labeling_priority,
    neighbour_graph,
    similar_pairs,
)
from imgrank_dagster.defs.ranking.features import collection_images, feature_matrix
from imgrank_dagster.defs.ranking.jobs import rank_collection_job
from imgrank_dagster.defs.ranking.sensors import rank_after_ingestion_sensor
from imgrank_dagster.defs.visualization.assets import (
    embedding_map,
    fiftyone_dataset,
    ranking_report,
)
from imgrank_dagster.defs.visualization.jobs import refresh_views_job
from imgrank_dagster.defs.visualization.sensors import visualization_automation_sensor
from imgrank_dagster.resources import build_resources


def build_definitions(resources: dict) -> dg.Definitions:
    """The project with the given resources (tests point them at temporary folders)."""
    return dg.Definitions(
        assets=[
            kartaview_sequences,
            raw_image_sequences,
            image_features,
            collection_images,
            feature_matrix,
            labeled_images,
            cluster_assignments,
            similar_pairs,
            neighbour_graph,
            image_base_scores,
            cluster_metrics,
            image_scores,
            labeling_priority,
            embedding_map,
            ranking_report,
            fiftyone_dataset,
        ],
        jobs=[
            discover_kartaview_job,
            ingest_sequences_job,
            rank_collection_job,
            apply_labels_job,
            refresh_views_job,
        ],
        sensors=[
            collections_sensor,
            kartaview_sequences_sensor,
            rank_after_ingestion_sensor,
            labels_sensor,
            visualization_automation_sensor,
        ],
        schedules=[daily_refresh_schedule],
        resources=resources,
    )


defs = build_definitions(build_resources())
