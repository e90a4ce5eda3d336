"""Discovery: which KartaView sequences lie around a collection's places, as an asset.

Discovery is a run, not a sensor tick: a large bounding box means hundreds of rate-limited
queries, minutes of work that belong in a run log, not in a sensor's time budget.
"""

import hashlib
import time
from datetime import UTC, datetime

import dagster as dg

from imgrank_dagster.core.config import KartaViewSource
from imgrank_dagster.core.config.keys import sequence_key
from imgrank_dagster.lib.frames import Frame
from imgrank_dagster.lib.metadata import frame_output, frame_table
from imgrank_dagster.lib.names import KARTAVIEW_GROUP, KARTAVIEW_POOL
from imgrank_dagster.lib.partitions import collection_partitions, sequence_partitions
from imgrank_dagster.lib.resources import ImgrankConfig

DISCOVERY_COLUMNS = ["sequence_id", "partition_key", "discovered_at"]


def _discovery_frame(sequence_ids: list[str], keys: list[str]) -> Frame:
    import pandas as pd

    discovered_at = pd.Timestamp(datetime.now(UTC)).as_unit("us")
    return pd.DataFrame(
        {
            "sequence_id": pd.Series(sequence_ids, dtype="str"),
            "partition_key": pd.Series(keys, dtype="str"),
            "discovered_at": pd.Series([discovered_at] * len(keys), dtype="datetime64[us, UTC]"),
        },
        columns=DISCOVERY_COLUMNS,
    )


def _area(source: KartaViewSource) -> str:
    parts = [f"({p.lat}, {p.lng}) r={p.radius_m:g} m" for p in source.points]
    if source.bbox is not None:
        box = source.bbox
        parts.append(f"bbox ({box.min_lat}, {box.min_lng})-({box.max_lat}, {box.max_lng})")
    return "; ".join(parts)


@dg.asset(
    partitions_def=collection_partitions,
    group_name=KARTAVIEW_GROUP,
    kinds={"python", "parquet"},
    code_version="1",
    pool=KARTAVIEW_POOL,
    description="The KartaView sequences near a collection's points and inside its bounding "
    "box, with their sequence partition keys. kartaview_sequences_sensor registers the new "
    "ones as partitions and requests their ingestion.",
)
def kartaview_sequences(
    context: dg.AssetExecutionContext, imgrank: ImgrankConfig
) -> dg.Output[Frame]:
    import pandas as pd

    from imgrank_dagster.core.sources import discover_sequences
    from imgrank_dagster.core.sources.kartaview import KartaViewClient

    collection = imgrank.collection(context.partition_key)
    if not isinstance(collection.source, KartaViewSource):
        raise dg.Failure(
            f"collection {collection.name!r} has a {collection.source.type!r} source: "
            "kartaview_sequences only discovers collections whose source type is 'kartaview'"
        )
    with KartaViewClient() as client:  # no request: resolves and checks the base URL
        base_url = client.base_url
    context.log.info(f"discovering KartaView sequences at {base_url}: {_area(collection.source)}")
    started = time.perf_counter()
    sequence_ids = discover_sequences(collection)
    seconds = time.perf_counter() - started
    keys = [sequence_key(collection.name, sequence_id) for sequence_id in sequence_ids]
    known = set(context.instance.get_dynamic_partitions(sequence_partitions.name))
    new_keys = [key for key in keys if key not in known]
    context.log.info(
        f"{len(keys)} sequences found in {seconds:.1f} s: {len(new_keys)} new, "
        f"{len(keys) - len(new_keys)} known"
    )
    frame = _discovery_frame(sequence_ids, keys)
    return frame_output(
        frame,
        # The set of sequences, not the discovery time: an unchanged area keeps its version.
        data_version=hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24],
        sequences=len(keys),
        new_sequences=len(new_keys),
        known_sequences=len(keys) - len(new_keys),
        new=frame_table(pd.DataFrame({"partition_key": new_keys}), limit=100),
        area=dg.MetadataValue.text(_area(collection.source)),
        base_url=dg.MetadataValue.url(base_url),
        discovery_seconds=round(seconds, 2),
    )
