"""The path people use: dagster-webserver on 127.0.0.1, driven through its GraphQL API."""

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from imgrank_dagster.definitions import defs

pytestmark = pytest.mark.slow  # a real Dagster webserver process

ASSET_PARTITIONS_QUERY = """
query {
  assetNodes {
    assetKey { path }
    partitionDefinition { type dimensionTypes { dynamicPartitionsDefinitionName } }
    partitionKeys
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webserver(pipeline_root: Path, tmp_path: Path) -> Iterator[DagsterGraphQLClient]:
    root = tmp_path / "served"
    shutil.copytree(pipeline_root, root)
    # No daemon here: launch submitted runs at once instead of queueing them.
    (root / "dagster_home" / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    port = _free_port()
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(root / "dagster_home"),
        "IMGRANK_DATA_DIR": str(root / "data"),
    }
    log = open(tmp_path / "webserver.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "imgrank_dagster.definitions",
        ],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("webserver did not start:\n" + (tmp_path / "webserver.log").read_text())
            time.sleep(0.5)
        yield DagsterGraphQLClient("127.0.0.1", port_number=port)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_asset_graph_and_a_materialization_through_graphql(webserver) -> None:
    nodes = webserver._execute(ASSET_PARTITIONS_QUERY)["assetNodes"]
    by_key = {"/".join(node["assetKey"]["path"]): node for node in nodes}
    expected = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(by_key) == expected
    for key, node in by_key.items():
        dynamic = node["partitionDefinition"]["dimensionTypes"][0][
            "dynamicPartitionsDefinitionName"
        ]
        assert dynamic in {"collections", "sequences"}, key
        if dynamic == "collections":
            assert {"city", "town"} <= set(node["partitionKeys"]), key
        else:
            assert "city.seq-000" in node["partitionKeys"], key

    run_id = webserver.submit_job_execution("rank_collection", tags={"dagster/partition": "town"})
    deadline = time.monotonic() + 240
    status = None
    while time.monotonic() < deadline:
        try:
            status = webserver.get_run_status(run_id)
        except DagsterGraphQLClientError:
            status = None
        if status is not None and status.value in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        time.sleep(1)
    assert status is not None and status.value == "SUCCESS", status
