"""PNG plots shared by the Dagster UI metadata and the HTML report."""

from __future__ import annotations

import io
from collections.abc import Mapping

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
