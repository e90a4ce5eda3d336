"""A collection's image catalog: every image with its final status and reason."""

from __future__ import annotations

import numpy as np
import pandas as pd

NOT_EMBEDDED = "not embedded"


def image_catalog(raw: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Every image of a collection with its final status: the raw rows, where an accepted
    image fastdup could not embed (or whose sequence has no features yet) becomes
    "not embedded", with the reason. Statuses: "ok", "rejected" (at ingestion), "not embedded".

    raw: raw_image_sequences rows (any extra source columns are kept); features: image_id,
    status, error of image_features.
    """
    missing = [c for c in ("image_id", "status", "reason") if c not in raw]
    missing += [f"features.{c}" for c in ("image_id", "status", "error") if c not in features]
    if missing:
        raise ValueError(f"image catalog: missing column(s) {missing}")
    by_id = features.drop_duplicates("image_id").set_index("image_id")
    embedded = raw["image_id"].map(by_id["status"])
    failed = ((raw["status"] == "ok") & (embedded != "ok")).to_numpy()
    error = raw["image_id"].map(by_id["error"]).fillna("").astype(str)
    reason = np.where(
        embedded.isna(),
        "no features yet: its sequence was not embedded",
        "fastdup could not embed it: " + error,
    )
    catalog = raw.reset_index(drop=True).copy()
    catalog.loc[failed, "status"] = NOT_EMBEDDED
    catalog.loc[failed, "reason"] = reason[failed]
    return catalog
