"""The Label Studio client's failure handling, against real HTTP servers on 127.0.0.1 that
answer the way a troubled Label Studio does (errors, slowness, expired tokens, nothing at all).
The real Label Studio is exercised in test_label_studio_loop.py."""

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import pytest
import yaml

from imgrank_dagster.core.annotation.client import (
    DOCUMENT_ROOT_ENV,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    URL_ENV,
    LabelStudioClient,
    LabelStudioConfigError,
    LabelStudioError,
    LabelStudioSettings,
)
from imgrank_dagster.defs.annotation.sensors import label_studio_sensor
from imgrank_dagster.lib.resources import ImgrankConfig

# A personal access token looks like a JWT; this one is made up.
PAT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJlLW5vdC1yZWFs"
LEGACY = "0123456789abcdef0123456789abcdef01234567"

Reply = tuple[int, object, dict[str, str]]


class Scripted:
    """A server whose answers a test scripts: handler(method, path, query, body) -> reply."""

    def __init__(self, handler: Callable[[str, str, dict, object, dict], Reply]) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str, dict]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                query = parse_qs(parts.query)
                headers = dict(self.headers.items())
                scripted.requests.append((self.command, parts.path, headers))
                status, payload, extra = scripted.handler(
                    self.command, parts.path, query, body, headers
                )
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> "Scripted":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def closed_port() -> Iterator[str]:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


def client(url: str, token: str = LEGACY, **kwargs: object) -> LabelStudioClient:
    return LabelStudioClient(url, token, backoff_s=0.01, **kwargs)


def test_no_server_is_an_error_naming_the_url(closed_port: str) -> None:
    started = time.monotonic()
    with pytest.raises(LabelStudioError) as caught:
        client(closed_port).project(1)
    error = caught.value
    assert error.status is None and error.url == f"{closed_port}/api/projects/1/"
    assert "cannot connect (connection refused)" in str(error) and closed_port in str(error)
    assert LEGACY not in str(error)
    assert time.monotonic() - started < 10


def test_gets_are_retried_on_5xx_and_429_and_honour_retry_after() -> None:
    answers = iter([(503, {"detail": "busy"}, {}), (429, None, {"Retry-After": "0"})])

    def handler(method, path, query, body, headers) -> Reply:
        return next(answers, (200, {"id": 1, "title": "city"}, {}))

    with Scripted(handler) as server:
        assert client(server.url).project(1) == {"id": 1, "title": "city"}
        assert len(server.requests) == 3


def test_a_failed_post_is_not_repeated_and_names_url_status_and_reason() -> None:
    def handler(method, path, query, body, headers) -> Reply:
        return 500, {"detail": "database is locked"}, {}

    with Scripted(handler) as server:
        with pytest.raises(LabelStudioError) as caught:
            client(server.url).import_tasks(3, [{"data": {"image": "x"}}])
        assert len(server.requests) == 1  # an import may have happened: never sent twice
        message = str(caught.value)
        assert f"POST {server.url}/api/projects/3/import" in message
        assert "HTTP 500" in message and "database is locked" in message


def test_a_rejected_token_is_reported_without_the_token() -> None:
    def handler(method, path, query, body, headers) -> Reply:
        return 401, {"detail": "legacy token authentication has been disabled"}, {}

    with Scripted(handler) as server:
        with pytest.raises(LabelStudioError) as caught:
            client(server.url).projects_titled("city")
        assert caught.value.status == 401 and "legacy token" in str(caught.value)
        assert LEGACY not in str(caught.value) and LEGACY not in repr(client(server.url))
        assert server.requests[0][2]["Authorization"] == f"Token {LEGACY}"


def test_a_personal_access_token_is_exchanged_and_renewed_when_it_expires() -> None:
    issued = []

    def handler(method, path, query, body, headers) -> Reply:
        if path == "/api/token/refresh/":
            assert body == {"refresh": PAT}
            issued.append(f"access-{len(issued)}")
            return 200, {"access": issued[-1]}, {}
        if headers.get("Authorization") != f"Bearer {issued[-1]}" or len(issued) < 2:
            return 401, {"detail": "Token is expired"}, {}  # the first access token expired
        return 200, {"id": 5}, {}

    with Scripted(handler) as server:
        assert client(server.url, PAT).project(5) == {"id": 5}
        assert issued == ["access-0", "access-1"]


def test_a_slow_server_times_out_with_a_clear_error() -> None:
    def handler(method, path, query, body, headers) -> Reply:
        time.sleep(1.0)
        return 200, {}, {}

    with Scripted(handler) as server:
        with pytest.raises(LabelStudioError, match=r"no answer within 0.2 s"):
            client(server.url, timeout=(1.0, 0.2), attempts=2).project(1)
        assert len(server.requests) == 2


def test_tasks_are_read_page_by_page_newest_first() -> None:
    tasks = [{"id": i, "updated_at": f"2026-01-01T00:00:{i:02d}Z"} for i in range(1, 251)]

    def handler(method, path, query, body, headers) -> Reply:
        assert json.loads(query["query"][0]) == {"ordering": ["-tasks:updated_at"]}
        page, size = int(query["page"][0]), int(query["page_size"][0])
        newest = tasks[::-1][(page - 1) * size : page * size]
        return 200, {"tasks": newest, "total": len(tasks)}, {}

    with Scripted(handler) as server:
        listed = [task["id"] for task in client(server.url).tasks(1, newest_first=True)]
        assert listed == list(range(250, 0, -1))
        assert len(server.requests) == 3


def test_settings_come_from_the_environment_only(tmp_path: Path) -> None:
    with pytest.raises(LabelStudioConfigError, match=URL_ENV):
        LabelStudioSettings.from_env({})
    with pytest.raises(LabelStudioConfigError, match="not an http"):
        LabelStudioSettings.from_env({URL_ENV: "127.0.0.1:8080"})
    with pytest.raises(LabelStudioConfigError, match=TOKEN_ENV):
        LabelStudioSettings.from_env({URL_ENV: "http://127.0.0.1:8080/"})
    with pytest.raises(LabelStudioConfigError, match="cannot read the token"):
        LabelStudioSettings.from_env({URL_ENV: "http://x", TOKEN_FILE_ENV: str(tmp_path / "nope")})
    (tmp_path / "token").write_text(f"{PAT}\n")
    settings = LabelStudioSettings.from_env(
        {
            URL_ENV: "http://127.0.0.1:8080/",
            TOKEN_FILE_ENV: str(tmp_path / "token"),
            DOCUMENT_ROOT_ENV: str(tmp_path),
        }
    )
    assert settings.url == "http://127.0.0.1:8080" and settings.token == PAT
    assert settings.document_root == tmp_path.resolve() and PAT not in repr(settings)


def test_the_sensor_skips_and_keeps_everything_when_label_studio_is_down(
    tmp_path: Path, closed_port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "images" / "seq-1").mkdir(parents=True)
    export = tmp_path / "labels" / "label-studio" / "city-project-4.json"
    export.parent.mkdir(parents=True)
    export.write_text('[{"id": 1, "data": {"image": "seq-1/a.jpg"}, "annotations": [{}]}]\n')
    before = export.read_bytes()
    collections = {
        "city": {
            "source": {"type": "folder", "path": "images"},
            "labels": "labels",
            "annotation": {"classes": ["car"]},
        }
    }
    (tmp_path / "collections.yaml").write_text(yaml.safe_dump({"collections": collections}))
    imgrank = ImgrankConfig(data_dir=str(tmp_path))
    cursor = json.dumps({"city": {"project_id": 4, "since": "2026-01-01T00:00:00+00:00"}})
    with dg.instance_for_test() as instance:
        for name in (URL_ENV, TOKEN_ENV, TOKEN_FILE_ENV):
            monkeypatch.delenv(name, raising=False)
        context = dg.build_sensor_context(
            instance=instance, resources={"imgrank": imgrank}, cursor=cursor
        )
        result = label_studio_sensor(context)
        assert URL_ENV in result.skip_message and "city" in result.skip_message
        monkeypatch.setenv(URL_ENV, closed_port)
        monkeypatch.setenv(TOKEN_ENV, LEGACY)
        context = dg.build_sensor_context(
            instance=instance, resources={"imgrank": imgrank}, cursor=cursor
        )
        result = label_studio_sensor(context)
        assert closed_port in result.skip_message
        assert "cannot connect" in result.skip_message and "retrying" in result.skip_message
        assert LEGACY not in result.skip_message
        assert json.loads(context.cursor) == json.loads(cursor)  # nothing advanced
        assert export.read_bytes() == before  # nothing fetched before is lost
