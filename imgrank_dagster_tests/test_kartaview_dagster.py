"""KartaView in Dagster against the fake server: discovery, partitions, schedule, ranking."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.test_utils import create_run_for_test
from sensor_ticks import evaluate_sensor

from imgrank_dagster.core.sources import kartaview
from imgrank_dagster.core.sources.kartaview import (
    ATTRIBUTION,
    KARTAVIEW_COLUMNS,
    LICENCE,
    KartaViewClient,
)
from imgrank_dagster.definitions import build_definitions
from imgrank_dagster.defs.features.assets import collection_images, feature_matrix
from imgrank_dagster.defs.ingestion.assets import image_features, raw_image_sequences
from imgrank_dagster.defs.kartaview.assets import DISCOVERY_COLUMNS, kartaview_sequences
from imgrank_dagster.defs.kartaview.schedules import daily_refresh_schedule
from imgrank_dagster.defs.kartaview.sensors import kartaview_sequences_sensor
from imgrank_dagster.defs.ranking.sensors import rank_after_ingestion_sensor
from imgrank_dagster.devtools.kartaview_stand_in import FakeKartaView
from imgrank_dagster.lib.io_manager import ParquetIOManager
from imgrank_dagster.lib.partitions import collection_partitions, sequence_partitions
from imgrank_dagster.lib.resources import ImgrankConfig

pytestmark = pytest.mark.slow  # real fastdup ingestion and rankings against the stand-in server

ORIGIN = (52.5200, 13.4050)  # the fake server's default origin


@dataclass
class World:
    """A data directory, a fake KartaView, a real (ephemeral) instance and the resources."""

    fake: FakeKartaView
    data_dir: Path
    instance: dg.DagsterInstance

    @property
    def resources(self) -> dict[str, object]:
        return {
            "imgrank": ImgrankConfig(data_dir=str(self.data_dir)),
            "io_manager": ParquetIOManager(base_path=str(self.data_dir / "warehouse")),
        }

    def materialize(self, assets: list, partition_key: str, selection=None, **kwargs):
        return dg.materialize(
            assets,
            instance=self.instance,
            partition_key=partition_key,
            selection=selection,
            resources=self.resources,
            **kwargs,
        )

    def discover(self, collection: str = "city") -> dg.ExecuteInProcessResult:
        return self.materialize([kartaview_sequences], collection)

    def sense(self, sensor, cursor: str | None = None):
        return evaluate_sensor(
            sensor, instance=self.instance, resources=self.resources, cursor=cursor
        )

    def read(self, asset: str, partition_key: str) -> pd.DataFrame:
        return pd.read_parquet(self.data_dir / "warehouse" / asset / f"{partition_key}.parquet")


def _write_collections(data_dir: Path) -> None:
    lat, lng = ORIGIN
    (data_dir / "street").mkdir(parents=True)
    (data_dir / "collections.yaml").write_text(
        f"""
collections:
  city:
    source: {{type: kartaview, points: [{{lat: {lat}, lng: {lng}, radius_m: 500}}]}}
  town:
    source:
      type: kartaview
      bbox: {{min_lat: 52.519, min_lng: 13.404, max_lat: 52.523, max_lng: 13.407}}
  village:
    source: {{type: kartaview, points: [{{lat: 48.1, lng: 11.5}}]}}
  street:
    source: {{type: folder, path: street}}
"""
    )


@pytest.fixture
def fast_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real client, without the polite 2 requests/s that only the public API needs.
    # Sources import the client from its package when they run: patch it there.
    monkeypatch.setattr(
        kartaview, "KartaViewClient", functools.partial(KartaViewClient, requests_per_second=1e6)
    )


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_client: None) -> Iterator[World]:
    with (
        FakeKartaView(sequences=2, photos=5, origin=ORIGIN) as fake,
        dg.instance_for_test() as instance,
    ):
        monkeypatch.setenv("IMGRANK_KARTAVIEW_URL", fake.base_url)
        _write_collections(tmp_path)
        instance.add_dynamic_partitions(collection_partitions.name, ["city", "street"])
        yield World(fake, tmp_path, instance)


def _keys(requests: list[dg.RunRequest]) -> list[str | None]:
    return [request.partition_key for request in requests]


def test_discovery_output_and_metadata(world: World) -> None:
    result = world.discover()
    frame = world.read("kartaview_sequences", "city")
    assert list(frame.columns) == DISCOVERY_COLUMNS
    assert frame["sequence_id"].tolist() == world.fake.sequence_ids() == ["7000001", "7000002"]
    assert frame["partition_key"].tolist() == ["city.7000001", "city.7000002"]
    assert str(frame["discovered_at"].dtype) == "datetime64[us, UTC]"
    metadata = result.asset_materializations_for_node("kartaview_sequences")[0].metadata
    assert metadata["sequences"].value == 2
    assert metadata["new_sequences"].value == 2
    assert metadata["known_sequences"].value == 0
    assert metadata["base_url"].value == world.fake.base_url


def test_discovery_of_a_folder_collection_fails_clearly(world: World) -> None:
    with pytest.raises(dg.Failure, match="'street' has a 'folder' source"):
        world.discover("street")


def test_new_sequences_become_partitions_and_are_ingested_once(world: World) -> None:
    world.discover()
    result, cursor = world.sense(kartaview_sequences_sensor)
    assert isinstance(result, dg.SensorResult)
    [added] = result.dynamic_partitions_requests
    assert isinstance(added, dg.AddDynamicPartitionsRequest)
    assert added.partitions_def_name == sequence_partitions.name
    assert list(added.partition_keys) == ["city.7000001", "city.7000002"]
    assert _keys(result.run_requests) == ["city.7000001", "city.7000002"]
    assert [r.run_key for r in result.run_requests] == ["city.7000001", "city.7000002"]
    assert {r.job_name for r in result.run_requests} == {"ingest_sequences"}
    world.instance.add_dynamic_partitions(sequence_partitions.name, list(added.partition_keys))

    # Nothing was discovered since: nothing to do.
    again, cursor = world.sense(kartaview_sequences_sensor, result.cursor)
    assert isinstance(again, dg.SkipReason)
    # A fresh discovery of the same area finds only known sequences: no request either.
    assert (
        world.discover()
        .asset_materializations_for_node("kartaview_sequences")[0]
        .metadata["new_sequences"]
        .value
        == 0
    )
    known, cursor = world.sense(kartaview_sequences_sensor, cursor)
    assert isinstance(known, dg.SkipReason)
    assert "no new sequence" in (known.skip_message or "")

    # One more sequence in the area: exactly one new partition and one run request.
    new_id = world.fake.add_sequence(ORIGIN[0] + 0.001, ORIGIN[1], photos=3)
    world.discover()
    one_more, _ = world.sense(kartaview_sequences_sensor, cursor)
    assert isinstance(one_more, dg.SensorResult)
    assert list(one_more.dynamic_partitions_requests[0].partition_keys) == [f"city.{new_id}"]
    assert _keys(one_more.run_requests) == [f"city.{new_id}"]
    assert json.loads(one_more.cursor)["city"] > json.loads(cursor)["city"]


def test_a_new_kartaview_collection_is_discovered_without_waiting(world: World) -> None:
    world.instance.add_dynamic_partitions(collection_partitions.name, ["town"])
    result, _ = world.sense(kartaview_sequences_sensor)
    assert isinstance(result, dg.SensorResult)
    assert not result.dynamic_partitions_requests
    # village is configured but not registered yet: collections_sensor registers it first.
    assert _keys(result.run_requests) == ["city", "town"]
    assert {r.job_name for r in result.run_requests} == {"discover_kartaview"}
    run_keys = [r.run_key for r in result.run_requests]
    assert run_keys == ["city:first-discovery", "town:first-discovery"]
    world.discover("city")
    world.discover("town")
    assert world.read("kartaview_sequences", "town")["sequence_id"].tolist() == [
        "7000001",
        "7000002",
    ]
    after, _ = world.sense(kartaview_sequences_sensor)
    assert isinstance(after, dg.SensorResult)
    assert {r.job_name for r in after.run_requests} == {"ingest_sequences"}


def test_daily_schedule_discovers_every_registered_kartaview_collection(world: World) -> None:
    world.instance.add_dynamic_partitions(collection_partitions.name, ["town"])
    with dg.build_schedule_context(
        instance=world.instance,
        scheduled_execution_time=datetime(2025, 6, 2, 3, 0, tzinfo=UTC),
        resources=world.resources,
    ) as context:
        requests = daily_refresh_schedule(context)
    assert isinstance(requests, list)
    assert _keys(requests) == ["city", "town"]  # not the folder one, not unregistered village
    assert [r.run_key for r in requests] == ["city:2025-06-02", "town:2025-06-02"]
    assert daily_refresh_schedule.job_name == "discover_kartaview"
    assert daily_refresh_schedule.cron_schedule == "0 3 * * *"
    assert daily_refresh_schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_requests_resolve_as_the_daemon_resolves_them(world: World) -> None:
    # evaluate_tick checks each request against its job and the instance's partitions,
    # including the partitions added by the same sensor result.
    definitions = build_definitions(world.resources)
    ref = world.instance.get_ref()
    with dg.build_schedule_context(
        instance=world.instance,
        instance_ref=ref,
        scheduled_execution_time=datetime(2025, 6, 2, 3, 0, tzinfo=UTC),
        repository_def=definitions.get_repository_def(),
        resources=world.resources,
    ) as context:
        scheduled = daily_refresh_schedule.evaluate_tick(context)
    assert [r.tags["dagster/partition"] for r in scheduled.run_requests] == ["city"]
    world.discover()
    with dg.build_sensor_context(
        instance=world.instance,
        instance_ref=ref,
        definitions=definitions,
        resources=world.resources,
    ) as context:
        sensed = kartaview_sequences_sensor.evaluate_tick(context)
    assert [(r.job_name, r.tags["dagster/partition"]) for r in sensed.run_requests] == [
        ("ingest_sequences", "city.7000001"),
        ("ingest_sequences", "city.7000002"),
    ]


def _ingest(world: World, key: str) -> dg.ExecuteInProcessResult:
    return world.materialize([raw_image_sequences, image_features], key)


def test_ingestion_through_dagster_keeps_attribution_and_never_refetches(world: World) -> None:
    sequence_id = world.fake.sequence_ids()[0]
    photos = world.fake.photos(sequence_id)
    broken = photos[1].photo_id
    world.fake.add_fault(photo_id=broken, status=404)
    key = f"city.{sequence_id}"
    world.instance.add_dynamic_partitions(sequence_partitions.name, [key])

    result = _ingest(world, key)
    raw = world.read("raw_image_sequences", key)
    assert list(raw.columns) == KARTAVIEW_COLUMNS
    assert raw["image_id"].tolist() == [f"{sequence_id}/{p.photo_id}" for p in photos]
    assert set(raw["licence"]) == {LICENCE} and set(raw["attribution"]) == {ATTRIBUTION}
    assert raw.loc[0, "details_url"] == f"https://kartaview.org/details/{sequence_id}/0"
    by_photo = raw.set_index("photo_id")
    assert by_photo.loc[broken, "status"] == "rejected"
    assert "HTTP 404" in by_photo.loc[broken, "reason"]
    ok = raw[raw["status"] == "ok"]
    for path in ok["path"]:
        assert (world.data_dir / "images" / "city" / path).is_file()
    # The rejected download is not embedded; every file on disk is.
    features = world.read("image_features", key)
    assert sorted(features["image_id"]) == sorted(ok["image_id"])
    assert (features["status"] == "ok").all()
    # Progress lines go to the run log.
    messages = [entry.user_message for entry in world.instance.all_logs(result.run_id)]
    assert any(f"kartaview sequence {sequence_id}: 5/5 images" in m for m in messages)

    world.fake.reset_counts()
    world.materialize([raw_image_sequences], key)
    assert all(world.fake.image_hits(p.photo_id) == 0 for p in photos if p.photo_id != broken)
    assert world.fake.image_hits(broken) == 2  # a failed photo is tried again: lth, then proc
    assert world.read("raw_image_sequences", key)["sha256"].tolist() == raw["sha256"].tolist()


def test_rank_sensor_ranks_once_after_ingestion(world: World) -> None:
    keys = [f"city.{sequence_id}" for sequence_id in world.fake.sequence_ids()]
    world.instance.add_dynamic_partitions(sequence_partitions.name, keys)
    result, _ = world.sense(rank_after_ingestion_sensor)
    assert isinstance(result, dg.SkipReason)  # nothing embedded yet
    for key in keys:
        _ingest(world, key)

    # An ingestion of the collection still in progress: wait for it.
    running = create_run_for_test(
        world.instance,
        job_name="ingest_sequences",
        status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": keys[0]},
    )
    waiting, _ = world.sense(rank_after_ingestion_sensor)
    assert isinstance(waiting, dg.SkipReason)
    assert "waiting" in (waiting.skip_message or "")
    world.instance.report_run_failed(running)

    result, _ = world.sense(rank_after_ingestion_sensor)
    assert isinstance(result, dg.SensorResult)
    [request] = result.run_requests
    assert request.partition_key == "city"  # the folder collection has nothing embedded
    newest = world.instance.fetch_materializations(dg.AssetKey("image_features"), limit=1)
    assert request.run_key == f"city:features:{newest.records[0].storage_id}"

    world.materialize(
        [raw_image_sequences, image_features, collection_images, feature_matrix],
        "city",
        selection=[collection_images, feature_matrix],
    )
    # Only the feature matrix was built, as by a ranking run that died there: asked once more.
    unfinished, _ = world.sense(rank_after_ingestion_sensor)
    assert isinstance(unfinished, dg.SensorResult)
    [finish] = unfinished.run_requests
    assert finish.run_key.startswith("city:unfinished:")
    # The ranking finished (its last asset recorded after the matrix): nothing more to do.
    world.instance.report_runless_asset_event(
        dg.AssetMaterialization("labeling_priority", partition="city")
    )
    ranked, _ = world.sense(rank_after_ingestion_sensor)
    assert isinstance(ranked, dg.SkipReason)

    # A sequence embedded again afterwards makes the ranking stale again.
    _ingest(world, keys[1])
    stale, _ = world.sense(rank_after_ingestion_sensor)
    assert isinstance(stale, dg.SensorResult)
    assert stale.run_requests[0].run_key != request.run_key
