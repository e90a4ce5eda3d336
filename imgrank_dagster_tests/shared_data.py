"""Where the real photos of ../shared/datasets are, for the tests that use them."""

import os
from pathlib import Path


def shared_datasets() -> Path | None:
    """../shared/datasets from the repository or any folder above it (IMGRANK_SHARED_DATASETS
    overrides), so it is found from a checkout and from a worktree elsewhere alike; None when
    absent (the tests that need it skip)."""
    configured = os.environ.get("IMGRANK_SHARED_DATASETS")
    if configured:
        return Path(configured) if Path(configured).is_dir() else None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None
