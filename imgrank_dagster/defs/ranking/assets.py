"""The ranking, one asset per stage; every computation lives in imgrank_dagster.core.ranking.

Label-independent: cluster_assignments, neighbour_graph (the collection's one FAISS
nearest-neighbour search), similar_pairs and image_base_scores (both read the graph).
Label-dependent (re-run by the labels sensor): cluster_metrics, image_scores, labeling_priority.
"""

from pathlib import Path
from typing import Any

import dagster as dg

from imgrank_dagster.lib.assets import collection_asset
from imgrank_dagster.lib.frames import Frame
from imgrank_dagster.lib.io_manager import columns_of
from imgrank_dagster.lib.metadata import frame_output, frame_table, png_markdown
from imgrank_dagster.lib.names import LABELING_PRIORITY, RANKING_EXPORT_NAME, RANKING_GROUP
from imgrank_dagster.lib.resources import ImgrankConfig

TOP_THUMBNAIL_PX = 64  # inline JPEGs in the top-20 preview: about 3 KB each
# What the ranking needs from the feature matrix: everything but the embeddings.
FEATURE_CONTEXT_COLUMNS = [
    *["image_id", "sequence_id", "path", "captured_at", "lat", "lng"],
    *["blur", "brightness", "min_value", "max_value"],
]
# What a re-rank reads of the graph (the coverage rows), and what the study's stages read
# (the embedding-only neighbours): see core.ranking.neighbours.
NEIGHBOUR_GRAPH_COLUMNS = ["image_id", "neighbour_rows", "distances", "content_distances", "method"]
NEAREST_NEIGHBOUR_COLUMNS = ["image_id", "nearest_rows", "nearest_similarities", "method"]
# What the graph reads of the feature matrix: the embeddings and where each frame was taken.
GRAPH_FEATURE_COLUMNS = [
    *["image_id", "sequence_id", "sequence_index", "captured_at", "lat", "lng", "embedding"]
]
# The UI's metadata key for each clustering plot.
CLUSTERING_PLOT_KEYS = {
    "Elbow: KMeans inertia per k": "elbow_curve",
    "Mean silhouette per k": "silhouette_curve",
    "Images per cluster": "cluster_sizes",
}
RANKING_CHECKS = {
    "ranks_run_1_to_n": "Ranks run 1..N without gaps.",
    "every_unlabelled_image_once": "Every accepted unlabelled image appears exactly once.",
    "no_labelled_or_rejected_image": "No labelled or rejected image is ranked.",
    "all_scores_finite": "All scores are finite.",
}


def ranking_asset(description: str, code_version: str = "1", **kwargs: Any) -> Any:
    """A collection-partitioned asset of the ranking group."""
    return collection_asset(RANKING_GROUP, description, code_version, **kwargs)


@ranking_asset(
    "KMeans over the feature matrix; k fixed or chosen by elbow then silhouette over a range "
    "that grows with the collection (FAISS k-means for large ones). Per image: cluster, "
    "distance to its centroid, silhouette. How k was chosen (inertia and silhouette per k, "
    "notes) is stored with the file as its attrs['clustering'].",
    code_version="3",  # 3: the k range from the collection's size; FAISS k-means above 10,000
    ins={"feature_matrix": columns_of("feature_matrix", ["image_id", "embedding"])},
)
def cluster_assignments(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig, feature_matrix: Frame
) -> dg.Output[Frame]:
    from imgrank_dagster.core.features.embeddings import embedding_matrix
    from imgrank_dagster.core.ranking import study
    from imgrank_dagster.core.ranking.clustering import clustering_diagnostics
    from imgrank_dagster.core.views.plots import clustering_plots

    settings = imgrank.collection(context.partition_key).scoring
    frame, result = study.cluster(
        feature_matrix, embedding_matrix(feature_matrix), **settings.clustering_params
    )
    diagnostics = clustering_diagnostics(result)
    frame.attrs["clustering"] = diagnostics
    sizes = frame["cluster"].value_counts().sort_index().to_dict()
    plots = clustering_plots(diagnostics, sizes)
    return frame_output(
        frame,
        k=result.k,
        elbow_k=result.elbow_k if result.elbow_k is not None else -1,
        silhouette_method=str(result.silhouette_method),
        how_k_was_chosen=dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes)),
        **{CLUSTERING_PLOT_KEYS[caption]: png_markdown(png) for caption, png in plots.items()},
    )


@ranking_asset(
    "Near-duplicate pairs over the whole collection, with fastdup's definition (each image's "
    "2 nearest neighbours, similarity at or above the collection's threshold), read from the "
    "neighbour graph.",
    code_version="2",  # 2: from the neighbour graph instead of a fastdup run
    ins={"neighbour_graph": columns_of("neighbour_graph", NEAREST_NEIGHBOUR_COLUMNS, attrs=True)},
)
def similar_pairs(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig, neighbour_graph: Frame
) -> dg.Output[Frame]:
    from imgrank_dagster.core.ranking import study
    from imgrank_dagster.core.ranking.neighbours import nearest_from_frame

    settings = imgrank.collection(context.partition_key).scoring
    pairs = study.collection_similar_pairs(
        neighbour_graph["image_id"].tolist(),
        nearest_from_frame(neighbour_graph),
        **settings.similar_pairs_params,
    )
    return frame_output(
        pairs,
        threshold=settings.similarity_threshold,
        nearest_neighbors_k=settings.nearest_neighbors_k,
    )


@ranking_asset(
    "Label-independent score components: uniqueness within the cluster (FiftyOne's), "
    "near-duplicate punishment, outlier distance within the cluster (fastdup's definition, "
    "from the neighbour graph), normalised blur and brightness.",
    code_version="2",  # 2: outliers from the neighbour graph, uniqueness neighbours by FAISS
    ins={
        "feature_matrix": columns_of(
            "feature_matrix", ["image_id", "embedding", "blur", "brightness"]
        ),
        "neighbour_graph": columns_of("neighbour_graph", NEAREST_NEIGHBOUR_COLUMNS, attrs=True),
    },
)
def image_base_scores(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    feature_matrix: Frame,
    cluster_assignments: Frame,
    similar_pairs: Frame,
    neighbour_graph: Frame,
) -> dg.Output[Frame]:
    from imgrank_dagster.core.features.embeddings import embedding_matrix
    from imgrank_dagster.core.ranking import study
    from imgrank_dagster.core.ranking.neighbours import nearest_from_frame

    if not neighbour_graph["image_id"].equals(feature_matrix["image_id"]):
        raise dg.Failure(
            f"collection {context.partition_key!r}: the neighbour graph's rows are not the "
            "feature matrix's: materialize neighbour_graph again"
        )
    settings = imgrank.collection(context.partition_key).scoring
    base = study.base_scores(
        feature_matrix,
        embedding_matrix(feature_matrix),
        cluster_assignments,
        similar_pairs,
        neighbours=nearest_from_frame(neighbour_graph),
        seed=settings.seed,
        **settings.base_scores_params,
    )
    punished = int((base["uniqueness_punishment"] < 1).sum())
    return frame_output(
        base,
        duplicate_groups=int(base.loc[base["duplicate_group"] >= 0, "duplicate_group"].nunique()),
        punished_images=punished,
        outliers=int((base["outlier_distance"] > 0).sum()),
        uniqueness_search=dg.MetadataValue.json(base.attrs["uniqueness_search"]),
    )


@ranking_asset(
    "The collection's nearest-neighbour graph, searched once with FAISS (exact up to 20,000 "
    "images, an inverted-file index above, its recall against exact search measured on a "
    "sample): each image's k nearest images by embedding (what the study's similar pairs and "
    "outliers read) and the coverage strategy's rows, where frames of one sequence close in "
    "time and space count as near. Reused by every re-rank.",
    code_version="3",  # 3: FAISS; the embedding-only neighbours stored beside the coverage rows
    ins={"feature_matrix": columns_of("feature_matrix", GRAPH_FEATURE_COLUMNS)},
)
def neighbour_graph(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig, feature_matrix: Frame
) -> dg.Output[Frame]:
    from imgrank_dagster.core.features.embeddings import embedding_matrix
    from imgrank_dagster.core.ranking.index import DEFAULT_EXACT_LIMIT, faiss_threads
    from imgrank_dagster.core.ranking.neighbours import DEFAULT_K, build_neighbour_graph

    settings = imgrank.collection(context.partition_key).scoring
    graph = build_neighbour_graph(
        embedding_matrix(feature_matrix),
        k=max(DEFAULT_K, settings.nearest_neighbors_k),
        image_ids=feature_matrix["image_id"].tolist(),
        places=feature_matrix.drop(columns=["embedding"]),
        seed=settings.seed,
    )
    search = graph.nearest
    frame = graph.to_frame()
    frame.attrs["neighbours"] = {"recall": search.recall, "details": search.details}
    recall = dg.MetadataValue.float(search.recall) if search.recall is not None else "exact"
    return frame_output(
        frame,
        k=graph.k,
        method=graph.method,
        exact_limit=DEFAULT_EXACT_LIMIT,
        recall_at_k=recall,
        search=dg.MetadataValue.json(_rounded(search.details)),
        faiss_threads=faiss_threads(),
    )


def _rounded(value: Any) -> Any:
    """Floats rounded to 3 digits, for metadata people read."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


@ranking_asset(
    "The collection's focus (`focus:` in the collections file): per image, what covering it "
    "is worth to the coverage strategy, its nearest focus example and the similarity to it "
    "(core.ranking.focus). Examples given as files outside the collection are embedded with "
    "fastdup. No rows when the collection declares no focus.",
    ins={"feature_matrix": columns_of("feature_matrix", ["image_id", "path", "embedding"])},
)
def focus_weights(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig, feature_matrix: Frame
) -> dg.Output[Frame]:
    import pandas as pd

    from imgrank_dagster.core.features.embeddings import embedding_matrix
    from imgrank_dagster.core.ranking.focus import FOCUS_COLUMNS, focus_frame, focus_weights
    from imgrank_dagster.core.ranking.similar import resolve_queries

    collection = imgrank.collection(context.partition_key)
    focus = collection.focus
    if focus is None:
        empty = pd.DataFrame({column: [] for column in ["image_id", *FOCUS_COLUMNS]})
        return frame_output(empty.astype({"image_id": object}), examples=0)
    embeddings = embedding_matrix(feature_matrix)
    try:
        examples = resolve_queries(
            focus.examples,
            feature_matrix["image_id"].tolist(),
            feature_matrix["path"].tolist(),
            embeddings,
            image_root=collection.image_root,
            base_dir=collection.data_dir,
        )
    except ValueError as error:
        raise dg.Failure(f"collection {collection.name!r}: focus: {error}") from None
    result = focus_weights(embeddings, examples.vectors, **focus.focus_params)
    frame = focus_frame(feature_matrix["image_id"], result, examples.names)
    near = frame.loc[frame["focus_near"], "focus_example"].value_counts()
    return frame_output(
        frame,
        examples=len(examples.names),
        examples_outside_the_collection=sum(image_id is None for image_id in examples.image_ids),
        weight=focus.weight,
        neighbourhood=focus.neighbourhood,
        images_near_each_example=dg.MetadataValue.json(
            {name: int(near.get(name, 0)) for name in examples.names}
        ),
        bandwidths=dg.MetadataValue.json(
            dict(zip(examples.names, result.bandwidths.round(4).tolist(), strict=True))
        ),
    )


@ranking_asset(
    "Per cluster: size, labelled count and fraction, priority group (1 = no labelled "
    "image ... 4 = well covered), mean silhouette, the image nearest the centroid.",
)
def cluster_metrics(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    cluster_assignments: Frame,
    labeled_images: Frame,
) -> dg.Output[Frame]:
    from imgrank_dagster.core.ranking import scores

    settings = imgrank.collection(context.partition_key).scoring
    metrics = scores.cluster_metrics(
        cluster_assignments, set(labeled_images["image_id"]), **settings.priority_params
    )
    groups = metrics["priority_group"].value_counts().sort_index()
    return frame_output(
        metrics,
        clusters=len(metrics),
        clusters_without_labels=int((metrics["labelled_count"] == 0).sum()),
        cluster_table=frame_table(metrics, limit=100),
        # Counts, not a plot: label-dependent steps stay fast (no matplotlib on the hot path).
        clusters_per_priority_group=dg.MetadataValue.json(
            {str(group): int(count) for group, count in groups.items()}
        ),
    )


@ranking_asset(
    "Every score component for every accepted image (labelled ones too, for reference), the "
    "similarity-to-labelled penalty, and the weighted score.",
)
def image_scores(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    image_base_scores: Frame,
    similar_pairs: Frame,
    labeled_images: Frame,
) -> dg.Output[Frame]:
    from imgrank_dagster.core.ranking import study

    settings = imgrank.collection(context.partition_key).scoring
    scores = study.label_scores(
        image_base_scores,
        similar_pairs,
        set(labeled_images["image_id"]),
        **settings.label_scores_params,
    )
    return frame_output(
        scores,
        labelled=int(scores["labelled"].sum()),
        similar_to_labelled=int((scores["similar_distance"] > 0).sum()),
        score_quantiles=dg.MetadataValue.json(
            {
                f"{q:.0%}": round(float(v), 4)
                for q, v in scores["score"].quantile([0, 0.1, 0.5, 0.9, 1]).items()
            }
        ),
    )


TOP_COLUMNS = {  # column -> type in the UI's table
    "rank": "int",
    "image_id": "string",
    "score": "float",
    "region": "string",
    "priority_group": "int",
    "reason": "string",
}


def _top_table(ranking: Frame, count: int = 20) -> dg.MetadataValue:
    """The top of the ranking as a typed table (the UI sorts and shows it as a table)."""
    from imgrank_dagster.lib.columns import describe

    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(name, kind, description=describe("labeling_priority", name))
            for name, kind in TOP_COLUMNS.items()
        ]
    )
    records = []
    for row in ranking.head(count)[list(TOP_COLUMNS)].itertuples(index=False):
        records.append(
            dg.TableRecord(
                {
                    "rank": int(row.rank),
                    "image_id": str(row.image_id),
                    "score": round(float(row.score), 4),
                    "region": str(row.region),
                    "priority_group": int(row.priority_group),
                    "reason": str(row.reason),
                }
            )
        )
    return dg.MetadataValue.table(records, schema=schema)


def _top_with_thumbnails(ranking: Frame, image_root: Path, count: int = 20) -> str:
    """The top of the ranking as markdown, each row with a small inline thumbnail."""
    from imgrank_dagster.core.views.report import thumbnail_data_uri

    top = ranking.head(count)[["rank", "image_id", "score", "region", "priority_group", "reason"]]
    uris = [
        thumbnail_data_uri(image_root / path, TOP_THUMBNAIL_PX) if isinstance(path, str) else None
        for path in ranking["path"].head(count)
    ]
    top = top.round(3)
    top.insert(0, "thumbnail", [f"![]({uri})" if uri else "" for uri in uris])
    return top.to_markdown(index=False)


@ranking_asset(
    "The ranked 'label this first' list of accepted unlabelled images, with a readable reason: "
    "by score region, cluster priority group and score (strategy 'study'), or a greedy "
    "coverage order (strategy 'coverage': soft coverage, turned by a class probe when two or "
    "more classes are labelled). The score decreases strictly with rank. Also exported as CSV.",
    code_version="2",  # 2: soft coverage, class probe, a score that sorts like the rank
    ins={
        # The embeddings feed the class probe when two or more classes are labelled.
        "feature_matrix": columns_of("feature_matrix", [*FEATURE_CONTEXT_COLUMNS, "embedding"]),
        "neighbour_graph": columns_of("neighbour_graph", NEIGHBOUR_GRAPH_COLUMNS),
    },
    check_specs=[
        dg.AssetCheckSpec(name, asset=LABELING_PRIORITY, description=description)
        for name, description in RANKING_CHECKS.items()
    ],
)
def labeling_priority(
    context: dg.AssetExecutionContext,
    imgrank: ImgrankConfig,
    image_scores: Frame,
    cluster_metrics: Frame,
    labeled_images: Frame,
    feature_matrix: Frame,
    neighbour_graph: Frame,
    focus_weights: Frame,
):
    from imgrank_dagster.core.features.embeddings import embedding_matrix
    from imgrank_dagster.core.files import write_csv_atomically
    from imgrank_dagster.core.ranking import strategies
    from imgrank_dagster.core.ranking.checks import ranking_problems
    from imgrank_dagster.lib.leftovers import clean_after_killed_writes

    collection = imgrank.collection(context.partition_key)
    labelled = set(labeled_images["image_id"])
    focus = focus_weights if collection.focus is not None else None
    if focus is not None and focus.empty:
        context.log.warning(
            f"collection {collection.name!r} declares a focus that focus_weights does not hold "
            "yet: ranked without it (materialize focus_weights, or run rank_collection)"
        )
        focus = None
    ranking = strategies.rank(
        collection.strategy,
        image_scores,
        cluster_metrics,
        feature_matrix,
        labelled,
        neighbour_graph=neighbour_graph,
        focus=focus,
        **collection.scoring.region_params,
        objective=collection.coverage.objective,
        classes=labeled_images.set_index("image_id")["class"]
        if collection.coverage.use_classes
        else None,
        embeddings=embedding_matrix(feature_matrix) if collection.coverage.use_classes else None,
        seed=collection.scoring.seed,
    )
    probe = ranking.attrs.get("class_probe")
    problems = ranking_problems(ranking, set(feature_matrix["image_id"]), labelled)
    export = imgrank.exports_dir(collection.name) / RANKING_EXPORT_NAME
    if not any(problems.values()):
        # A ranking that breaks an invariant never replaces the spreadsheet people work from.
        write_csv_atomically(ranking, export)
        clean_after_killed_writes(context.instance, export.parent, context.log)
    regions = ranking["region"].value_counts()
    yield frame_output(
        ranking,
        export=dg.MetadataValue.path(str(export)),
        strategy=collection.strategy,
        coverage_objective=collection.coverage.objective,
        class_probe=dg.MetadataValue.json(probe or {"used": False}),
        class_probe_cv_accuracy=float("nan")
        if probe is None or probe["cv_accuracy"] is None
        else round(float(probe["cv_accuracy"]), 4),
        focus=dg.MetadataValue.json(
            {"examples": collection.focus.examples, "weight": collection.focus.weight}
            if focus is not None
            else None
        ),
        ranked_images=len(ranking),
        regions=dg.MetadataValue.json({k: int(v) for k, v in regions.items()}),
        top_20=_top_table(ranking),
        top_20_thumbnails=dg.MetadataValue.md(_top_with_thumbnails(ranking, collection.image_root)),
    )
    for name, found in problems.items():
        yield dg.AssetCheckResult(
            check_name=name,
            passed=not found,
            metadata={"problems": dg.MetadataValue.json(found)} if found else {},
        )
