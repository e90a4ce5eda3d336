"""Collections: bodies of images ranked together, declared in one YAML file.

A collection has a name, a source (a folder of sequences, or KartaView around places), where
its labels are, and its scoring settings. Everything here is plain pydantic: no Dagster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imgrank_dagster.core.config.keys import COLLECTION_NAME_PATTERN


class CollectionConfigError(ValueError):
    """The collections file cannot be used; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FolderSource(_Strict):
    """A directory of images; each sub-directory is one sequence (capture run)."""

    type: Literal["folder"]
    path: Path


class GeoPoint(_Strict):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    radius_m: float = Field(default=100.0, gt=0, le=5000)


class BoundingBox(_Strict):
    min_lat: float = Field(ge=-90, le=90)
    min_lng: float = Field(ge=-180, le=180)
    max_lat: float = Field(ge=-90, le=90)
    max_lng: float = Field(ge=-180, le=180)

    @model_validator(mode="after")
    def _ordered(self) -> BoundingBox:
        if self.min_lat >= self.max_lat or self.min_lng >= self.max_lng:
            raise ValueError("bounding box needs min_lat < max_lat and min_lng < max_lng")
        return self


class KartaViewSource(_Strict):
    """KartaView sequences near points and/or inside a bounding box."""

    type: Literal["kartaview"]
    points: list[GeoPoint] = Field(default_factory=list)
    bbox: BoundingBox | None = None
    image_size: Literal["thumbnail", "full"] = "thumbnail"
    # Where downloaded images go; relative paths are under the data directory.
    images_dir: Path | None = None
    max_sequences: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _has_area(self) -> KartaViewSource:
        if not self.points and self.bbox is None:
            raise ValueError("a kartaview source needs at least one point or a bbox")
        return self


Source = Annotated[FolderSource | KartaViewSource, Field(discriminator="type")]
# How a collection is ranked (imgrank_dagster.core.ranking.strategies).
Strategy = Literal["study", "coverage"]
STRATEGIES: tuple[Strategy, ...] = ("study", "coverage")


class ScoringSettings(_Strict):
    """Every constant of the study's method, with the study's values as defaults."""

    seed: int = 0
    # Clustering: a fixed k, or the elbow over [k_min, k_max] refined by silhouette; k_max
    # unset: derived from the collection's size, max(20, sqrt(N) / 2) (52 at 11,000 images).
    k: int | None = Field(default=None, ge=2)
    k_min: int = Field(default=2, ge=2)
    k_max: int | None = Field(default=None, ge=2)
    silhouette_window: int = Field(default=2, ge=0)
    # Computational limits, not from the study: choosing k scores the silhouette on a seeded
    # sample of this many images; per-image silhouettes are exact up to exact_silhouette_max
    # images and use the simplified (centroid) silhouette above (10,000: at 11,000 images the
    # exact ones alone took a third of the collection run's 8 s budget).
    silhouette_sample_size: int = Field(default=5000, ge=100)
    exact_silhouette_max: int = Field(default=10_000, ge=0)
    # Near-duplicates and outliers, with fastdup's definitions, from the neighbour graph.
    similarity_threshold: float = Field(default=0.9, gt=0, le=1)
    duplicate_punishment: float = Field(default=0.5, ge=0, le=1)
    outlier_percentile: float = Field(default=0.05, gt=0, lt=1)
    # fastdup's own default: neighbours searched per image for similar pairs and outliers.
    nearest_neighbors_k: int = Field(default=2, ge=1)
    # Weights of the score formula.
    w_outlier: float = -0.15
    w_similar: float = -1.0
    w_blur: float = 0.2
    w_brightness: float = 0.05
    # Cluster priority groups: 1 = no labelled image; 2 = fewer than priority_few_count
    # labelled and under priority_few_fraction; 3 = fewer than priority_some_count and under
    # priority_some_fraction; 4 = otherwise. Bounds are strict ("fewer than", "under").
    priority_few_count: int = Field(default=10, ge=1)
    priority_few_fraction: float = Field(default=0.03, gt=0, le=1)
    priority_some_count: int = Field(default=50, ge=1)
    priority_some_fraction: float = Field(default=0.30, gt=0, le=1)
    # Score regions.
    good_threshold: float = 0.8
    bad_threshold: float = 0.2

    # The settings as keyword parameters of the algorithm that uses them. The defaults above
    # are the study's and equal the algorithms' own (a test keeps them in step).
    @property
    def clustering_params(self) -> dict[str, Any]:
        """For ranking.clustering.choose_k_and_cluster (and ranking.study.cluster)."""
        names = ("k", "k_min", "k_max", "silhouette_window", "silhouette_sample_size")
        return self._params(*names, "exact_silhouette_max", "seed")

    @property
    def similar_pairs_params(self) -> dict[str, Any]:
        """For ranking.study.collection_similar_pairs."""
        return self._params("similarity_threshold", "nearest_neighbors_k")

    @property
    def base_scores_params(self) -> dict[str, Any]:
        """For ranking.study.base_scores."""
        names = ("similarity_threshold", "duplicate_punishment", "outlier_percentile")
        return self._params(*names, "nearest_neighbors_k")

    @property
    def score_weights(self) -> dict[str, Any]:
        """For ranking.scores.combine_score: the weights of the score formula."""
        return self._params("w_outlier", "w_similar", "w_blur", "w_brightness")

    @property
    def label_scores_params(self) -> dict[str, Any]:
        """For ranking.study.label_scores: the threshold and the score formula's weights."""
        return {**self._params("similarity_threshold"), **self.score_weights}

    @property
    def priority_params(self) -> dict[str, Any]:
        """For ranking.scores.cluster_metrics and priority_groups."""
        names = ("priority_few_count", "priority_few_fraction", "priority_some_count")
        return self._params(*names, "priority_some_fraction")

    @property
    def region_params(self) -> dict[str, Any]:
        """For ranking.scores.rank_images and ranking.strategies.rank."""
        return self._params("good_threshold", "bad_threshold")

    def _params(self, *names: str) -> dict[str, Any]:
        return {name: getattr(self, name) for name in names}

    @model_validator(mode="after")
    def _consistent(self) -> ScoringSettings:
        if self.k_max is not None and self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        if self.priority_few_count > self.priority_some_count:
            raise ValueError(
                f"priority_few_count ({self.priority_few_count}) must not exceed "
                f"priority_some_count ({self.priority_some_count})"
            )
        if self.priority_few_fraction > self.priority_some_fraction:
            raise ValueError(
                f"priority_few_fraction ({self.priority_few_fraction}) must not exceed "
                f"priority_some_fraction ({self.priority_some_fraction})"
            )
        if self.bad_threshold > self.good_threshold:
            raise ValueError(
                f"bad_threshold ({self.bad_threshold}) must not exceed "
                f"good_threshold ({self.good_threshold})"
            )
        return self


class Collection(_Strict):
    name: str
    source: Source
    labels: Path | None = None
    # "coverage" beat the study's formula on real images (README, benchmarks/ranking_quality.py).
    strategy: Strategy = "coverage"
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    # Directory that relative paths were resolved against (the collections file's folder).
    data_dir: Path

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not COLLECTION_NAME_PATTERN.match(name):
            raise ValueError(
                f"collection name {name!r} must be lower-case letters, digits, '-' or '_'"
            )
        return name

    @property
    def image_root(self) -> Path:
        """The folder that every image path of this collection is relative to."""
        if isinstance(self.source, FolderSource):
            return self.source.path
        return self.source.images_dir or self.data_dir / "images" / self.name


def _format_errors(path: Path, name: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "missing required key"
        lines.append(f"  collections.{name}.{where}: {message}")
    return f"{path}: collection {name!r} is invalid:\n" + "\n".join(lines)


def _resolve(data_dir: Path, value: Path | None) -> Path | None:
    if value is None:
        return None
    value = Path(value).expanduser()
    return value if value.is_absolute() else (data_dir / value).resolve()


def parse_collections(document: object, path: Path) -> dict[str, Collection]:
    """Validate a parsed collections document; relative paths are taken from path's folder."""
    if not isinstance(document, dict) or set(document) != {"collections"}:
        raise CollectionConfigError(f"{path}: expected one top-level key 'collections'")
    entries = document["collections"]
    if not isinstance(entries, dict) or not entries:
        raise CollectionConfigError(f"{path}: 'collections' must map names to collections")
    data_dir = path.parent.resolve()
    collections: dict[str, Collection] = {}
    for name, body in entries.items():
        if not isinstance(body, dict):
            raise CollectionConfigError(f"{path}: collection {name!r} must be a mapping")
        if "source" not in body:
            raise CollectionConfigError(f"{path}: collection {name!r} has no source")
        try:
            collection = Collection.model_validate({**body, "name": name, "data_dir": data_dir})
        except ValidationError as error:
            raise CollectionConfigError(_format_errors(path, str(name), error)) from None
        collection = _with_resolved_paths(collection, data_dir)
        _check_paths(path, collection)
        collections[name] = collection
    return collections


def _with_resolved_paths(collection: Collection, data_dir: Path) -> Collection:
    source = collection.source
    if isinstance(source, FolderSource):
        source = source.model_copy(update={"path": _resolve(data_dir, source.path)})
    elif source.images_dir is not None:
        source = source.model_copy(update={"images_dir": _resolve(data_dir, source.images_dir)})
    return collection.model_copy(
        update={"source": source, "labels": _resolve(data_dir, collection.labels)}
    )


def _check_paths(path: Path, collection: Collection) -> None:
    source = collection.source
    if isinstance(source, FolderSource) and not source.path.is_dir():
        raise CollectionConfigError(
            f"{path}: collection {collection.name!r}: source folder {source.path} does not exist"
        )
    labels = collection.labels
    # A labels path that does not exist yet means "nothing labelled yet" when its parent
    # exists; a missing parent is almost always a typo.
    if labels is not None and not labels.exists() and not labels.parent.is_dir():
        raise CollectionConfigError(
            f"{path}: collection {collection.name!r}: labels folder "
            f"{collection.labels.parent} does not exist"
        )


def load_collections(path: Path) -> dict[str, Collection]:
    """Read and validate the collections file."""
    path = Path(path)
    if not path.is_file():
        raise CollectionConfigError(f"{path}: collections file not found")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise CollectionConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_collections(document, path)
