"""What every column of every asset means: the descriptions in each asset's column schema.

One description per column name, and per-asset ones where a name means something else there
(`score`, `path`, `status`, ...). A test checks that every column the pipeline writes is
described; an unknown column gets an empty description rather than failing a step.
"""

from __future__ import annotations

COLUMNS: dict[str, str] = {
    # identity and provenance
    "image_id": "The image's id: '<sequence>/<file stem>' (unique in the collection).",
    "sequence_id": "The capture run (sequence) the image belongs to.",
    "sequence_index": "Position of the image within its sequence (0-based, capture order).",
    "path": "The image file, relative to the collection's image folder.",
    "sha256": "SHA-256 of the file's bytes.",
    "bytes": "File size in bytes.",
    "width": "Image width in pixels.",
    "height": "Image height in pixels.",
    "captured_at": "Capture time (EXIF or sidecar; naive, UTC where the source says so).",
    "lat": "Latitude in degrees (EXIF GPS, sidecar or KartaView).",
    "lng": "Longitude in degrees (EXIF GPS, sidecar or KartaView).",
    "heading": "Camera heading in degrees from north (sidecar or KartaView).",
    "status": "ok, or why the image is left out of the ranking.",
    "reason": "Why: the rejection or failure reason, or the ranking's reason for the pick.",
    "error": "fastdup's error code for an image it could not embed ('' when ok).",
    # KartaView attribution
    "photo_id": "KartaView photo id.",
    "source_url": "Where the image file was downloaded from.",
    "details_url": "The image's KartaView page (link it wherever the image is shown).",
    "licence": "Licence of the imagery (KartaView: CC BY-SA 4.0).",
    "attribution": "Credit line required by the licence.",
    "partition_key": "The sequence partition key '<collection>.<sequence>'.",
    "discovered_at": "When this discovery ran (UTC).",
    # features
    "embedding": "fastdup's 576-d feature vector (float32; cosine similarity compares them).",
    "blur": "fastdup's sharpness (higher = sharper).",
    "brightness": "fastdup's mean pixel value (0-255).",
    "contrast": "fastdup's contrast statistic.",
    "min_value": "Darkest pixel value (0-255).",
    "max_value": "Brightest pixel value (0-255).",
    "std": "Standard deviation of pixel values.",
    # clusters and neighbours
    "cluster": "KMeans cluster (0 = the largest).",
    "centroid_distance": "Euclidean distance from the image to its cluster's centroid.",
    "silhouette": "The image's silhouette in its cluster (-1..1; higher = better placed).",
    "size": "Images in the cluster.",
    "labelled_count": "Labelled images in the cluster.",
    "labelled_fraction": "Share of the cluster that is labelled.",
    "priority_group": "1 = no labelled image in the cluster, 2 = few, 3 = some, 4 = well labelled.",
    "mean_silhouette": "Mean silhouette of the cluster's images.",
    "nearest_image_id": "The image nearest the cluster's centroid.",
    "from_id": "One image of a near-duplicate pair.",
    "to_id": "The other image of the pair.",
    "similarity": "Cosine similarity of the two images' features.",
    "neighbour_rows": "Rows (in this file) of the image's nearest neighbours, nearest first.",
    "neighbour_ids": "The same neighbours by image id.",
    "distances": "Effective distances to the neighbours (content mixed with place).",
    "content_distances": "Cosine distances of the features to the neighbours.",
    "nearest_rows": "Rows (in this file) of the image's nearest neighbours by features alone "
    "(no place mixing), nearest first: the study's similar pairs, outliers and uniqueness.",
    "nearest_similarities": "Cosine similarities of the features to those neighbours.",
    "method": "How the neighbours were found (exact, or an approximate index).",
    "x": "Horizontal position on the 2-D map of the embeddings (0..1).",
    "y": "Vertical position on the 2-D map of the embeddings (0..1).",
    # scores
    "uniqueness": "FiftyOne uniqueness within the cluster (0..1).",
    "uniqueness_punishment": "1, or the near-duplicate punishment for a later member of a group.",
    "duplicate_group": "Near-duplicate group within the cluster (-1: none).",
    "outlier_distance": "fastdup's outlier similarity within the cluster (0: not an outlier).",
    "similar_distance": "Highest similarity to a labelled image (0: none above the threshold).",
    "labelled": "The image is labelled.",
    "score": "The study's weighted score.",
    # labels
    "source_file": "The label file that names the image (relative to the labels path).",
    "line": "The line of that file.",
    "matched_by": "How the name matched the image: id, path or file_name.",
    "class": "The image's class from the label files (its most frequent one; '' when none).",
    "classes": "Every class the label files give the image.",
    # the ranking
    "rank": "Place in the 'label this first' list (1 = first).",
    "region": "Where the image sits: good/medium/bad (study), coverage/held back/defect "
    "(coverage).",
    "study_score": "The study's weighted score, for reference.",
    "covers": "Uncovered images this pick covered when it was picked (itself included).",
    "stage": "Coverage stage (0 = coarsest radius; -1 outside coverage).",
    "radius": "Coverage radius of the stage (cosine distance).",
    "typicality": "TypiClust's typicality: 1 / mean content distance to its neighbours.",
    "opens_unlabelled_cluster": "The first pick of a cluster that has no labels yet.",
    "nearest_chosen_id": "The nearest labelled or earlier-picked image among its neighbours.",
    "nearest_chosen_similarity": "Cosine similarity to that image.",
    "held_back_reason": "Why a held-back or defect row is there ('' for coverage picks).",
    # the focus (focus: in the collections file)
    "focus_weight": "What covering the image is worth in the coverage strategy (1 = no focus "
    "effect; 1 + the focus weight at an example).",
    "focus_example": "The focus example nearest the image, as the collections file names it.",
    "focus_similarity": "Cosine similarity of the image to that example.",
    "focus_near": "Whether the focus favoured the image (its weight raised by at least a tenth "
    "of the focus weight); its reason then names the example.",
    # views
    "kind": "What the file is: page, thumbnail, plot.",
    "sample_id": "The FiftyOne sample's id.",
    "filepath": "The image file the FiftyOne sample shows (absolute).",
}

# Where a name means something else in one asset.
ASSET_COLUMNS: dict[str, dict[str, str]] = {
    "raw_image_sequences": {"status": "ok, or rejected (the file does not decode or is unsafe)."},
    "image_features": {"status": "ok, or failed (fastdup could not embed the image)."},
    "collection_images": {
        "status": "ok, rejected (at ingestion) or not embedded (fastdup failed, or the "
        "sequence has no features yet).",
        "reason": "Why the image is left out ('' when ok).",
    },
    "image_base_scores": {
        "blur": "Sharpness, min-max normalised over the collection (0..1).",
        "brightness": "Brightness, min-max normalised over the collection (0..1).",
    },
    "image_scores": {
        "blur": "Sharpness, min-max normalised over the collection (0..1).",
        "brightness": "Brightness, min-max normalised over the collection (0..1).",
    },
    "labeling_priority": {
        "score": "The strategy's score: how much the pick adds (coverage: its covers relative "
        "to the first pick; study: the weighted score).",
        "blur": "Sharpness, min-max normalised over the collection (0..1).",
        "brightness": "Brightness, min-max normalised over the collection (0..1).",
        "reason": "Why the image is at this place, in words.",
    },
    "ranking_report": {
        "path": "A file of the report, relative to its folder.",
        "bytes": "Its size in bytes.",
    },
    "kartaview_sequences": {"sequence_id": "A KartaView sequence id found in the area."},
    "annotation_batch": {
        "rank": "The image's rank when it was sent.",
        "reason": "Why it was picked, as the task shows annotators.",
        "cluster": "Its cluster when it was sent.",
        "picked_as": "Which part of the batch picked it (top of the ranking, cluster without "
        "labels, ...).",
        "batch": "The batch it went in (1, 2, ...).",
        "sent_at": "When it was sent (UTC).",
        "tool": "The annotation tool: label-studio or cvat.",
        "task_id": "Its task in Label Studio (empty for a CVAT file).",
        "status": "Now: labelled, annotated, skipped, waiting, deleted, or sent (CVAT).",
    },
}


def describe(asset: str, column: str) -> str:
    """The description of one column of one asset ('' when nobody wrote one)."""
    return ASSET_COLUMNS.get(asset, {}).get(column) or COLUMNS.get(column, "")
