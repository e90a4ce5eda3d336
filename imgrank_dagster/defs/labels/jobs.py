"""The label-change run: only the label-dependent assets, in one process."""

import dagster as dg

from imgrank_dagster.defs.labels.assets import labeled_images
from imgrank_dagster.lib.names import APPLY_LABELS_JOB, LABELING_PRIORITY, LABELS_LANE, LANE_TAG
from imgrank_dagster.lib.partitions import collection_partitions

# From the labelled set to the ranking: by construction, the label-dependent work. Views of
# the ranking (report, FiftyOne) follow it on their own, outside this fast path.
LABEL_DEPENDENT = dg.AssetSelection.assets(labeled_images).downstream() & (
    dg.AssetSelection.assets(LABELING_PRIORITY).upstream()
)

apply_labels_job = dg.define_asset_job(
    APPLY_LABELS_JOB,
    selection=LABEL_DEPENDENT,
    tags={LANE_TAG: LABELS_LANE},
    partitions_def=collection_partitions,
    # Each step takes well under a second; a process per step would cost seconds each.
    executor_def=dg.in_process_executor,
    description="Re-rank one collection after its labels changed: the labelled set, the "
    "cluster metrics, the label-dependent scores and the ranking. Features, clusters and the "
    "label-independent scores are read, never recomputed.",
)
