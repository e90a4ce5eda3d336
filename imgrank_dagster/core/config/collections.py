"""Collections: bodies of images ranked together, declared in one YAML file.

A collection has a name, a source (a folder of sequences, or KartaView around places), where
its labels are, and its scoring settings. Everything here is plain pydantic: no Dagster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imgrank_dagster.core.config.keys import COLLECTION_NAME_PATTERN
from imgrank_dagster.core.config.yaml_file import YamlFileError, read_yaml_document


class CollectionConfigError(ValueError):
    """The collections file cannot be used; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FolderSource(_Strict):
    """A directory of images: each sub-directory is one sequence (capture run); images
    directly in it form sequences by capture-time gaps (core/sources/folder.py)."""

    type: Literal["folder"]
    path: Path
    # Images directly in the folder: a new sequence after a capture-time gap this long.
    sequence_gap_s: float = Field(default=300.0, gt=0)
    # Sidecar files (CSV or GeoJSON naming the images) beyond those found in the folder.
    sidecars: list[Path] = Field(default_factory=list)


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


class FocusSettings(_Strict):
    """What the team needs more of: example images whose neighbourhood the coverage strategy
    favours (core/ranking/focus.py). Each example is an image id of the collection, a path
    relative to its image folder, or an image file anywhere (embedded with the same fastdup
    model; relative paths are taken from the collections file's folder)."""

    examples: list[str] = Field(min_length=1)
    # Covering an image at the example itself is worth 1 + weight; half that extra at the
    # distance of the example's `neighbourhood`-th nearest image (core.ranking.focus).
    weight: float = Field(default=10.0, gt=0, le=1000)
    neighbourhood: int = Field(default=10, ge=1)

    @field_validator("examples")
    @classmethod
    def _named_examples(cls, examples: list[str]) -> list[str]:
        stripped = [str(example).strip() for example in examples]
        if any(not example for example in stripped):
            raise ValueError("focus examples must not be empty")
        return stripped

    @property
    def focus_params(self) -> dict[str, Any]:
        """For ranking.focus.focus_weights."""
        return {"weight": self.weight, "neighbourhood": self.neighbourhood}


# Annotation tools a collection can send its next batch to (imgrank_dagster.core.annotation).
AnnotationTool = Literal["label-studio", "cvat"]
# The labelling interface: one class per image, or boxes with a class each.
AnnotationTask = Literal["classification", "boxes"]


class AnnotationSettings(_Strict):
    """Where a collection's next batch is labelled, with which classes and how many at once."""

    tool: AnnotationTool = "label-studio"
    task: AnnotationTask = "classification"
    classes: list[str] = Field(min_length=1)
    # The next batch_size unlabelled images of the ranking, plus up to per_cluster images of
    # every cluster without a labelled image (batch_size: 0 sends per cluster only).
    batch_size: int = Field(default=20, ge=0, le=10_000)
    per_cluster: int | None = Field(default=None, ge=1, le=1_000)
    # The Label Studio project's title; the collection's name when not given.
    project: str | None = Field(default=None, min_length=1, max_length=50)

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, classes: list[str]) -> list[str]:
        stripped = [name.strip() for name in classes]
        if any(not name for name in stripped):
            raise ValueError("class names must not be empty")
        duplicated = sorted({name for name in stripped if stripped.count(name) > 1})
        if duplicated:
            raise ValueError(f"class names must be distinct; repeated: {duplicated}")
        return stripped

    @model_validator(mode="after")
    def _sends_something(self) -> AnnotationSettings:
        if self.batch_size == 0 and self.per_cluster is None:
            raise ValueError("batch_size 0 needs per_cluster (otherwise nothing is ever sent)")
        return self


class CoverageSettings(_Strict):
    """The coverage strategy's choices (core.ranking.coverage, core.ranking.probe)."""

    # "soft" beat "radius" on real photos (README "Ranking quality"); "radius" is kept to
    # compare.
    objective: Literal["soft", "radius"] = "soft"
    # With at least two labelled classes, weight coverage by a class probe's uncertainty.
    use_classes: bool = True


class Collection(_Strict):
    name: str
    source: Source
    labels: Path | None = None
    # "coverage" beat the study's formula on real images (README, benchmarks/ranking_quality.py).
    strategy: Strategy = "coverage"
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    coverage: CoverageSettings = Field(default_factory=CoverageSettings)
    # Example images the coverage strategy favours; None: no focus, the plain ranking.
    focus: FocusSettings | None = None
    # The annotation tool the next batch goes to; None: labels arrive as files only.
    annotation: AnnotationSettings | None = None
    # A labels change that removes more than half of the labelled images is held until it is
    # confirmed (the same content saved again); true applies such a change at once.
    allow_labels_shrink: bool = False
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

    @model_validator(mode="after")
    def _focus_needs_coverage(self) -> Collection:
        if self.focus is not None and self.strategy != "coverage":
            raise ValueError(
                f"focus: needs strategy coverage (the focus weighs what covering an image is "
                f"worth); this collection uses strategy {self.strategy!r}"
            )
        return self

    @property
    def image_root(self) -> Path:
        """The folder that every image path of this collection is relative to."""
        if isinstance(self.source, FolderSource):
            return self.source.path
        return self.source.images_dir or self.data_dir / "images" / self.name

    @property
    def project_title(self) -> str:
        """The annotation project's title: the collection's name unless it declares one."""
        return (self.annotation.project if self.annotation else None) or self.name


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
    collections, problems = parse_collections_tolerant(document, path)
    if problems:
        raise CollectionConfigError(next(iter(problems.values())))
    return collections


def parse_collections_tolerant(
    document: object, path: Path
) -> tuple[dict[str, Collection], dict[str, str]]:
    """(valid collections, problem of each invalid one): one bad collection never hides the
    others. A document without a 'collections' mapping is an error for all of them."""
    if not isinstance(document, dict) or set(document) != {"collections"}:
        raise CollectionConfigError(f"{path}: expected one top-level key 'collections'")
    entries = document["collections"]
    if not isinstance(entries, dict) or not entries:
        raise CollectionConfigError(f"{path}: 'collections' must map names to collections")
    return _parse_each(entries, path)


def _parse_each(
    entries: dict[Any, Any], path: Path
) -> tuple[dict[str, Collection], dict[str, str]]:
    data_dir = path.parent.resolve()
    collections: dict[str, Collection] = {}
    problems: dict[str, str] = {}
    for name, body in entries.items():
        try:
            collections[name] = _parse_collection(name, body, path, data_dir)
        except CollectionConfigError as error:
            problems[str(name)] = str(error)
    return collections, problems


def _parse_collection(name: Any, body: object, path: Path, data_dir: Path) -> Collection:
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
    return collection


def _with_resolved_paths(collection: Collection, data_dir: Path) -> Collection:
    source = collection.source
    if isinstance(source, FolderSource):
        sidecars = [_resolve(data_dir, sidecar) for sidecar in source.sidecars]
        source = source.model_copy(
            update={"path": _resolve(data_dir, source.path), "sidecars": sidecars}
        )
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
    if isinstance(source, FolderSource):
        for sidecar in source.sidecars:
            if not sidecar.is_file():
                raise CollectionConfigError(
                    f"{path}: collection {collection.name!r}: sidecar {sidecar} does not exist"
                )
    labels = collection.labels
    # A labels path that does not exist yet means "nothing labelled yet" when its parent
    # exists; a missing parent is almost always a typo.
    if labels is not None and not labels.exists() and not labels.parent.is_dir():
        raise CollectionConfigError(
            f"{path}: collection {collection.name!r}: labels folder "
            f"{collection.labels.parent} does not exist"
        )
    # Labels from an annotation tool land in the labels folder, next to the other label files.
    if collection.annotation is not None and (labels is None or labels.is_file()):
        problem = "has no labels path" if labels is None else f"has a labels file ({labels})"
        raise CollectionConfigError(
            f"{path}: collection {collection.name!r} declares annotation but {problem}: "
            "annotations come back into a labels folder, so set labels: to a folder "
            "(and move any label files into it)"
        )


def load_collections(path: Path) -> dict[str, Collection]:
    """Read and validate the collections file."""
    return parse_collections(read_collections_document(path), path)


def load_collections_tolerant(path: Path) -> tuple[dict[str, Collection], dict[str, str]]:
    """The valid collections of the file and the problem of each invalid one (sensors use it:
    a typo in one collection must not stop the others). An unreadable file still raises."""
    return parse_collections_tolerant(read_collections_document(path), Path(path))


def read_collections_document(path: Path) -> object:
    path = Path(path)
    if not path.is_file():
        raise CollectionConfigError(f"{path}: collections file not found")
    try:
        return read_yaml_document(path)
    except YamlFileError as error:
        raise CollectionConfigError(str(error)) from None


COLLECTIONS_FILE_HEADER = (
    "# Collections ranked by imgrank. Relative paths are relative to this file's folder.\n"
)


def add_collection(path: Path, name: str, entry: dict[str, object]) -> Collection:
    """Add one collection to the collections file (created if missing) and return it.

    The entry is appended as text, so the file's comments and layout stay as they were; the
    result is validated as a whole before it replaces the file (atomically). A name already
    in the file, or an entry that does not validate, is an error and changes nothing.
    """
    import yaml

    from imgrank_dagster.core.files import write_atomically

    path = Path(path)
    if not COLLECTION_NAME_PATTERN.match(name):
        raise CollectionConfigError(
            f"collection name {name!r} must be lower-case letters, digits, '-' or '_' "
            "(at most 64, starting with a letter or digit)"
        )
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    if existing.strip():
        current = load_collections(path)
        if name in current:
            raise CollectionConfigError(f"{path}: a collection named {name!r} exists already")
    block = yaml.safe_dump({name: entry}, sort_keys=False, default_flow_style=False)
    indented = "".join(f"  {line}\n" for line in block.splitlines())
    if existing.strip():
        text = existing if existing.endswith("\n") else existing + "\n"
        text += indented
    else:
        text = COLLECTIONS_FILE_HEADER + "collections:\n" + indented
    try:
        document = yaml.safe_load(text)
        if not isinstance(document, dict) or name not in (document.get("collections") or {}):
            raise ValueError("the entry did not land under 'collections'")
    except (yaml.YAMLError, ValueError):
        # A file whose layout text cannot be appended to (flow style): rewrite it whole.
        document = yaml.safe_load(existing) if existing.strip() else {"collections": {}}
        document["collections"] = {**(document.get("collections") or {}), name: entry}
        text = COLLECTIONS_FILE_HEADER + yaml.safe_dump(document, sort_keys=False)
    collections = parse_collections(yaml.safe_load(text), path)
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    return collections[name]
