"""PNG plots shared by the Dagster UI metadata and the HTML report."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; also safe in worker threads
import matplotlib.pyplot as plt


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def curve_png(
    values_by_k: Mapping[int, float],
    title: str,
    ylabel: str,
    chosen_k: int | None = None,
    marked_k: int | None = None,
    marked_label: str = "",
) -> bytes:
    """A per-k curve (elbow or silhouette) with the chosen k highlighted."""
    figure, axis = plt.subplots(figsize=(5.5, 3.2))
    ks = sorted(values_by_k)
    axis.plot(ks, [values_by_k[k] for k in ks], marker="o", color="#3060a0")
    if marked_k is not None and marked_k in values_by_k:
        axis.axvline(marked_k, color="#999999", linestyle="--", label=marked_label)
    if chosen_k is not None and chosen_k in values_by_k:
        axis.plot(
            [chosen_k],
            [values_by_k[chosen_k]],
            "o",
            color="#d04020",
            markersize=10,
            label=f"chosen k = {chosen_k}",
        )
    axis.set_xlabel("k (clusters)")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if chosen_k is not None or marked_k is not None:
        axis.legend(loc="best", fontsize=8)
    return _png(figure)


def bar_png(counts: Mapping[object, float], title: str, xlabel: str, ylabel: str) -> bytes:
    figure, axis = plt.subplots(figsize=(5.5, 3.2))
    labels = [str(k) for k in counts]
    axis.bar(labels, list(counts.values()), color="#3060a0")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    if len(labels) > 20:
        axis.set_xticks(axis.get_xticks()[:: max(1, len(labels) // 20)])
    return _png(figure)


# Captions of the clustering plots, in the order the report and the UI show them.
ELBOW_CAPTION = "Elbow: KMeans inertia per k"
SILHOUETTE_CAPTION = "Mean silhouette per k"
CLUSTER_SIZES_CAPTION = "Images per cluster"


def clustering_plots(
    diagnostics: Mapping[str, Any], cluster_sizes: Mapping[int, int]
) -> dict[str, bytes]:
    """caption -> PNG: the elbow and silhouette curves (when k was chosen) and cluster sizes.

    diagnostics: as ranking.clustering.clustering_diagnostics writes them (keys may be text
    after a JSON round trip).
    """
    inertia = {int(k): float(v) for k, v in diagnostics.get("inertia_by_k", {}).items()}
    silhouette = {int(k): float(v) for k, v in diagnostics.get("silhouette_by_k", {}).items()}
    chosen_k = diagnostics.get("k")
    elbow_k = diagnostics.get("elbow_k")
    plots: dict[str, bytes] = {}
    if inertia:
        plots[ELBOW_CAPTION] = curve_png(
            inertia,
            ELBOW_CAPTION,
            "inertia",
            chosen_k=chosen_k,
            marked_k=elbow_k,
            marked_label=f"elbow k = {elbow_k}",
        )
    if silhouette:
        plots[SILHOUETTE_CAPTION] = curve_png(
            silhouette, SILHOUETTE_CAPTION, "silhouette", chosen_k=chosen_k
        )
    plots[CLUSTER_SIZES_CAPTION] = bar_png(
        dict(sorted(cluster_sizes.items())), CLUSTER_SIZES_CAPTION, "cluster", "images"
    )
    return plots
