"""Hostile names and image kinds: every name a filesystem allows works or is rejected by name,
one bad image never fails its sequence, one bad sequence never hides the others.

Real folders, real fastdup, a real Dagster instance; the ingestion runs over a range of
sequences as a backfill (and the CLI) run them.
"""

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw

import imgrank_dagster.core.sources.images as images_module
from imgrank_dagster.core.config.keys import SEQUENCE_ID_MAX_CHARS, sanitize_sequence_id
from imgrank_dagster.definitions import build_definitions
from imgrank_dagster.defs.ingestion.retries import RETRY_BASE_DELAY_ENV, ingestion_retry_sensor
from imgrank_dagster.lib.names import FAILED_SEQUENCES_TAG, IMAGE_FEATURES
from imgrank_dagster.lib.resources import ImgrankConfig, build_resources
from imgrank_dagster.lib.runs import ingest_collection, register_partitions

pytestmark = pytest.mark.slow  # real fastdup ingestion and ranking

LONG_FOLDER = "x" * 220
NON_UTF8_FOLDER = os.fsdecode(b"caf\xe9 latin-1")  # a byte that is not UTF-8
NON_UTF8_FILE = os.fsdecode(b"frame \xff.jpg")
LONG_FILE = "f" * 220 + ".jpg"
FOLDERS = ["seq x", "seq-x", "日本", LONG_FOLDER, "café", NON_UTF8_FOLDER]


def _scene(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (160, 120), tuple(int(c) for c in rng.integers(30, 220, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, 150), rng.integers(0, 110)
        draw.rectangle((x, y, x + 20, y + 15), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    image.save(path, quality=90)


def _animated(path: Path, file_format: str) -> None:
    frames = [Image.new("RGB", (96, 64), (40 * i, 90, 200 - 40 * i)) for i in range(3)]
    frames[0].save(path, format=file_format, save_all=True, append_images=frames[1:], duration=80)


def _odd_images(sequence: Path) -> dict[str, str]:
    """The image kinds that once failed a whole sequence, after a good image; name -> kind."""
    kinds = {
        "01_tiny.png": "1x1",
        "02_strip.png": "12000x4 strip",
        "03_animated.gif": "animated GIF",
        "04_animated.webp": "animated WebP",
        "05_locked.jpg": "unreadable",
        LONG_FILE: "220-character name",
        NON_UTF8_FILE: "name not UTF-8",
    }
    Image.new("RGB", (1, 1), (128, 128, 128)).save(sequence / "01_tiny.png")
    Image.new("RGB", (12000, 4), (200, 10, 10)).save(sequence / "02_strip.png")
    _animated(sequence / "03_animated.gif", "GIF")
    _animated(sequence / "04_animated.webp", "WEBP")
    _scene(sequence / "05_locked.jpg", 99)
    _scene(sequence / LONG_FILE, 98)
    _scene(sequence / NON_UTF8_FILE, 97)
    return kinds


@dataclass
class OddCollection:
    data_dir: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    ingestion_failures: list[str]
    kinds: dict[str, str]

    def read(self, asset: str, partition: str) -> pd.DataFrame:
        return pd.read_parquet(self.data_dir / "warehouse" / asset / f"{partition}.parquet")


def _write_collections(data_dir: Path, names: list[str]) -> None:
    collections = {
        name: {
            "source": {"type": "folder", "path": f"{name}/images"},
            "labels": f"{name}/labels.csv",
        }
        for name in names
    }
    (data_dir / "collections.yaml").write_text(yaml.safe_dump({"collections": collections}))


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OddCollection]:
    root = tmp_path_factory.mktemp("odd")
    data_dir = root / "data"
    images = data_dir / "odd" / "images"
    for index, folder in enumerate(FOLDERS):
        (images / folder).mkdir(parents=True)
        for frame in range(2):
            _scene(images / folder / f"00_good_{frame}.jpg", 10 * index + frame)
    kinds = _odd_images(images / "seq x")
    locked = images / "seq x" / "05_locked.jpg"
    locked.chmod(0)
    _write_collections(data_dir, ["odd"])
    defs = build_definitions(build_resources(data_dir=data_dir))
    (root / "dagster_home").mkdir()
    with (
        dg.instance_for_test(temp_dir=str(root / "dagster_home")) as instance,
        pytest.MonkeyPatch.context() as patch,
    ):
        if os.geteuid() == 0:
            # root reads any file whatever its mode: the read fails as it does for anyone else.
            real = images_module.file_sha256

            def refuse_locked(path: Path, *args: object) -> str:
                if Path(path).name == locked.name:
                    raise PermissionError(13, "Permission denied", str(path))
                return real(path, *args)

            patch.setattr(images_module, "file_sha256", refuse_locked)
        problems = register_partitions(
            instance, ImgrankConfig(data_dir=str(data_dir)).collections().values()
        )
        assert problems == []
        failures = ingest_collection(defs, instance, "odd", report=lambda line: None)
        ranked = defs.resolve_job_def("rank_collection").execute_in_process(
            instance=instance, partition_key="odd", raise_on_error=False
        )
        assert ranked.success
        yield OddCollection(data_dir, instance, defs, failures, kinds)
    locked.chmod(0o644)


def test_every_folder_name_gets_a_stable_unique_id() -> None:
    ids = [sanitize_sequence_id(name) for name in FOLDERS]
    assert len(set(ids)) == len(FOLDERS)
    assert ids[1] == "seq-x"  # a name that is already an id keeps it
    assert ids[0].startswith("seq-x-") and ids[2].startswith("seq-")  # "seq x", "日本"
    assert ids[4].startswith("cafe-")  # accents dropped, then the hash
    assert all(len(i) <= SEQUENCE_ID_MAX_CHARS for i in ids)
    assert ids == [sanitize_sequence_id(name) for name in FOLDERS]  # the name alone decides
    assert all(i.isascii() and "." not in i and "/" not in i for i in ids)


def test_one_run_ingests_every_sequence_whatever_its_name(odd: OddCollection) -> None:
    assert odd.ingestion_failures == []
    keys = [f"odd.{sanitize_sequence_id(name)}" for name in FOLDERS]
    assert set(keys) <= odd.instance.get_materialized_partitions(IMAGE_FEATURES)
    runs = odd.instance.get_run_records(dg.RunsFilter(job_name="ingest_sequences"))
    assert len(runs) == 1 and runs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS


def test_each_odd_image_is_its_own_row_with_a_reason(odd: OddCollection) -> None:
    catalog = odd.read("collection_images", "odd")
    assert catalog["image_id"].is_unique
    seq_x = catalog[catalog["sequence_id"] == sanitize_sequence_id("seq x")]
    assert len(seq_x) == 2 + len(odd.kinds)  # every file is accounted for
    by_kind = {
        odd.kinds[name]: row
        for name, row in zip(
            [Path(p).name if isinstance(p, str) else None for p in seq_x["path"]],
            seq_x.itertuples(),
            strict=True,
        )
        if name in odd.kinds
    }
    assert by_kind["unreadable"].status == "rejected"
    assert "Permission denied" in by_kind["unreadable"].reason
    assert by_kind["220-character name"].status == "ok"
    unnamed = seq_x[seq_x["path"].isna()]
    assert len(unnamed) == 1 and unnamed["status"].iloc[0] == "rejected"
    assert "not valid UTF-8" in unnamed["reason"].iloc[0] and "\\xff" in unnamed["reason"].iloc[0]
    for kind in ("1x1", "12000x4 strip"):
        assert by_kind[kind].status == "not embedded"
        assert "ERROR_IMAGE_TOO_SMALL" in by_kind[kind].reason
    for kind in ("animated GIF", "animated WebP"):
        row = by_kind[kind]
        # fastdup 2.54 refuses them; either way never an error of the sequence.
        assert row.status == "ok" or (row.status == "not embedded" and row.reason)
    assert (catalog.loc[catalog["status"] != "ok", "reason"].str.len() > 0).all()
    # A folder whose name is not UTF-8 works; its images' paths cannot be stored, so they are
    # rejected by name.
    bad_folder = catalog[catalog["sequence_id"] == sanitize_sequence_id(NON_UTF8_FOLDER)]
    assert len(bad_folder) == 2 and (bad_folder["status"] == "rejected").all()
    assert bad_folder["reason"].str.contains("not valid UTF-8").all()


def test_the_ranking_holds_exactly_the_embedded_images(odd: OddCollection) -> None:
    ranking = odd.read("labeling_priority", "odd")
    catalog = odd.read("collection_images", "odd")
    assert set(ranking["image_id"]) == set(catalog.loc[catalog["status"] == "ok", "image_id"])


def test_a_one_sequence_run_writes_its_preview_whatever_fastdup_could_not_embed(
    odd: OddCollection,
) -> None:
    """The preview once failed the step (after the file was written) on an image fastdup could
    not embed that follows one it could."""
    key = f"odd.{sanitize_sequence_id('seq x')}"
    result = odd.defs.resolve_job_def("ingest_sequences").execute_in_process(
        instance=odd.instance, partition_key=key
    )
    assert result.success
    (materialization,) = [
        m for m in result.asset_materializations_for_node("image_features") if m.partition == key
    ]
    preview = materialization.metadata["preview"].value
    assert "[576 values]" in preview
    features = odd.read("image_features", key)
    assert features["status"].iloc[0] == "ok" and (features["status"] != "ok").sum() >= 2


# --- one sequence that cannot be ingested, in a run over several ------------------------------


def _sensor_requests(instance: dg.DagsterInstance, defs: dg.Definitions) -> object:
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        return ingestion_retry_sensor(context)


def test_a_vanished_sequence_fails_alone_and_is_retried_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    images = data_dir / "iso" / "images"
    for index, folder in enumerate(["s1", "s2", "s3", "s4"]):
        (images / folder).mkdir(parents=True)
        _scene(images / folder / "a.jpg", index)
    _write_collections(data_dir, ["iso"])
    defs = build_definitions(build_resources(data_dir=data_dir))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        register_partitions(instance, ImgrankConfig(data_dir=str(data_dir)).collections().values())
        shutil.rmtree(images / "s2")  # gone after registration (moved, unmounted)
        failed = ingest_collection(defs, instance, "iso", report=lambda line: None)
        assert failed == ["iso.s1", "iso.s2", "iso.s3", "iso.s4"]  # one run, as Dagster records it
        run = instance.get_run_records(dg.RunsFilter(job_name="ingest_sequences"))[0].dagster_run
        assert json.loads(run.tags[FAILED_SEQUENCES_TAG]) == ["iso.s2"]
        failure = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
        ).records[0]
        message = (
            failure.event_log_entry.dagster_event.step_failure_data.user_failure_data.description
        )
        assert "iso.s2" in message and "no folder for sequence 's2'" in message
        assert "iso.s1" not in message and "other 3 sequence(s)" in message

        # The others at once, as one run; the failed one alone, after its backoff.
        result = _sensor_requests(instance, defs)
        assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 2
        together = [r for r in result.run_requests if r.partition_key is None]
        assert len(together) == 1
        assert together[0].tags["dagster/asset_partition_range_start"] == "iso.s3"
        assert [r.partition_key for r in result.run_requests if r.partition_key] == ["iso.s1"]
        for request in result.run_requests:
            job = defs.resolve_job_def("ingest_sequences")
            kwargs = {"partition_key": request.partition_key} if request.partition_key else {}
            assert job.execute_in_process(instance=instance, tags=request.tags, **kwargs).success
        done = instance.get_materialized_partitions(IMAGE_FEATURES)
        assert {"iso.s1", "iso.s3", "iso.s4"} <= done and "iso.s2" not in done
        waiting = _sensor_requests(instance, defs)
        assert (
            isinstance(waiting, dg.SkipReason)
            and "waiting to retry: iso.s2 in" in waiting.skip_message
        )

        # Without the delay: retried alone, a bounded number of times, then named as given up.
        monkeypatch.setenv(RETRY_BASE_DELAY_ENV, "0")
        attempts = 0
        while isinstance(result := _sensor_requests(instance, defs), dg.SensorResult):
            (request,) = result.run_requests
            assert request.partition_key == "iso.s2"
            job = defs.resolve_job_def("ingest_sequences")
            job.execute_in_process(
                instance=instance, partition_key="iso.s2", tags=request.tags, raise_on_error=False
            )
            attempts += 1
            assert attempts <= 5
        assert attempts == 3
        assert "gave up after 3 retries" in result.skip_message and "iso.s2" in result.skip_message
