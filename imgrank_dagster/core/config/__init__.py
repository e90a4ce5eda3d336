"""Configuration: the collections file and the names of collections and sequences."""

from imgrank_dagster.core.config.collections import (
    STRATEGIES,
    AnnotationSettings,
    BoundingBox,
    Collection,
    CollectionConfigError,
    FocusSettings,
    FolderSource,
    GeoPoint,
    KartaViewSource,
    ScoringSettings,
    Strategy,
    load_collections,
    load_collections_tolerant,
    parse_collections,
)

__all__ = [
    "STRATEGIES",
    "AnnotationSettings",
    "BoundingBox",
    "Collection",
    "CollectionConfigError",
    "FocusSettings",
    "FolderSource",
    "GeoPoint",
    "KartaViewSource",
    "ScoringSettings",
    "Strategy",
    "load_collections",
    "load_collections_tolerant",
    "parse_collections",
]
