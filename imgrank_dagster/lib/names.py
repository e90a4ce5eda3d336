"""Names that the Dagster layer, the CLI, the benchmarks and the tests share: one spelling each.

Asset keys are the asset functions' names; a test checks that every key here is an asset.
"""

import dagster as dg

# Asset groups, one per folder of imgrank_dagster/defs/.
KARTAVIEW_GROUP = "kartaview"
INGESTION_GROUP = "ingestion"
FEATURES_GROUP = "features"
LABELS_GROUP = "labels"
RANKING_GROUP = "ranking"
VIEWS_GROUP = "views"
ANNOTATION_GROUP = "annotation"

# Asset keys, in pipeline order.
KARTAVIEW_SEQUENCES = dg.AssetKey("kartaview_sequences")
RAW_IMAGE_SEQUENCES = dg.AssetKey("raw_image_sequences")
IMAGE_FEATURES = dg.AssetKey("image_features")
COLLECTION_IMAGES = dg.AssetKey("collection_images")
FEATURE_MATRIX = dg.AssetKey("feature_matrix")
LABELED_IMAGES = dg.AssetKey("labeled_images")
CLUSTER_ASSIGNMENTS = dg.AssetKey("cluster_assignments")
SIMILAR_PAIRS = dg.AssetKey("similar_pairs")
NEIGHBOUR_GRAPH = dg.AssetKey("neighbour_graph")
FOCUS_WEIGHTS = dg.AssetKey("focus_weights")
IMAGE_BASE_SCORES = dg.AssetKey("image_base_scores")
CLUSTER_METRICS = dg.AssetKey("cluster_metrics")
IMAGE_SCORES = dg.AssetKey("image_scores")
LABELING_PRIORITY = dg.AssetKey("labeling_priority")
EMBEDDING_MAP = dg.AssetKey("embedding_map")
RANKING_REPORT = dg.AssetKey("ranking_report")
FIFTYONE_DATASET = dg.AssetKey("fiftyone_dataset")
ANNOTATION_BATCH = dg.AssetKey("annotation_batch")

# Jobs.
DISCOVER_KARTAVIEW_JOB = "discover_kartaview"
INGEST_SEQUENCES_JOB = "ingest_sequences"
RANK_COLLECTION_JOB = "rank_collection"
APPLY_LABELS_JOB = "apply_labels"
REFRESH_VIEWS_JOB = "refresh_views"
SEND_ANNOTATION_BATCH_JOB = "send_annotation_batch"

# Concurrency pools (limits are the instance's: `concurrency.pools` in dagster.yaml, or
# `dagster instance concurrency set POOL N`); they hold across runs, processes and workers.
# The steps that run fastdup (one at a time per machine: it uses every core).
FASTDUP_POOL = "fastdup"
# The steps that call the KartaView API: discovery and raw_image_sequences (which downloads a
# KartaView sequence's photos). The client's rate limit is per process, so the pool keeps the
# whole deployment within it however many workers run.
KARTAVIEW_POOL = "kartaview"

# Run tags: imgrank's own, and the Dagster run tags imgrank reads or sets.
TRIGGER_TAG = "imgrank/trigger"  # which sensor or schedule requested the run
COLLECTION_TAG = "imgrank/collection"
LABELLED_SET_TAG = "imgrank/labelled_set"  # hash of the labelled set a label run applies
# The sequences an ingestion run could not ingest (a JSON list of partition keys).
FAILED_SEQUENCES_TAG = "imgrank/failed_sequences"
PARTITION_TAG = "dagster/partition"
# Run lanes (dagster.yaml limits each to one run at a time): a label change never waits
# behind a view refresh or a ranking.
LANE_TAG = "imgrank/lane"
PIPELINE_LANE = "pipeline"  # discovery, ingestion, ranking
LABELS_LANE = "labels"
VIEWS_LANE = "views"
ANNOTATION_LANE = "annotation"  # sending a batch to the annotation tool (no limit)
# Dagster's run retries (dagster.yaml run_retries): a failed run that Dagster will retry, and
# the retry it launched.
WILL_RETRY_TAG = "dagster/will_retry"
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"
RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"
# A step's priority in its run (an op tag): of the steps ready together, higher runs first.
STEP_PRIORITY_TAG = "dagster/priority"
# A run over a range of partitions (what a single-run backfill launches).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"

# Files under <data dir>/exports/<collection>/.
RANKING_EXPORT_NAME = "all_score_after_rank.csv"  # the study's file name
REPORT_DIR = "report"
REPORT_INDEX = "index.html"
# Label Studio started by `make label-studio`, under the data folder: its database, the demo
# account's token.
LABEL_STUDIO_DIR = "label-studio"
# FiftyOne's database under the data folder, unless FIFTYONE_DATABASE_DIR says otherwise.
FIFTYONE_DB_DIR = "fiftyone/db"
