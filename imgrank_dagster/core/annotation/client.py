"""A small client for Label Studio's REST API: what sending a batch and fetching its labels need.

Plain `requests` against the documented endpoints (Label Studio's own SDK pins clash with
FiftyOne's). Every request has a timeout; connection failures, 429 and 5xx answers are retried
with backoff (a POST only when it cannot have reached the server: an import is not idempotent);
every other failure raises `LabelStudioError` naming the method, the URL and the status. The
token never appears in an error, a log line or a repr.

Authentication: a personal access token (a JWT refresh token, Label Studio >= 1.17) is
exchanged at /api/token/refresh/ for short-lived access tokens, renewed on 401; any other token
is sent as a legacy `Token` (organisations must have legacy tokens enabled for that).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger(__name__)

URL_ENV = "IMGRANK_LABEL_STUDIO_URL"
TOKEN_ENV = "IMGRANK_LABEL_STUDIO_TOKEN"
TOKEN_FILE_ENV = "IMGRANK_LABEL_STUDIO_TOKEN_FILE"
# The folder Label Studio serves local files from (its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT).
DOCUMENT_ROOT_ENV = "IMGRANK_LABEL_STUDIO_DOCUMENT_ROOT"

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
PROJECT_PAGE_SIZE = 100  # Label Studio's maximum for /api/projects/
TASK_PAGE_SIZE = 100
EXPORT_BATCH = 100  # task ids per export request (they travel in the query string)
IMPORT_BATCH = 500  # tasks per import request
MAX_RETRY_AFTER_S = 30.0


class LabelStudioConfigError(ValueError):
    """Label Studio is not configured in the environment; the message says what to set."""


class LabelStudioError(RuntimeError):
    """A Label Studio request failed for good; the message names the URL and the status."""

    def __init__(self, method: str, url: str, problem: str, status: int | None = None) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.problem = problem
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"Label Studio {method} {url}: {where}: {problem}")


@dataclass(frozen=True)
class LabelStudioSettings:
    """Where Label Studio is and how to sign in, from the environment only."""

    url: str
    token: str = field(repr=False)
    document_root: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LabelStudioSettings:
        environ = os.environ if environ is None else environ
        url = environ.get(URL_ENV, "").strip().rstrip("/")
        if not url:
            raise LabelStudioConfigError(
                f"{URL_ENV} is not set: point it at Label Studio (e.g. http://127.0.0.1:8080; "
                "`make label-studio` starts one)"
            )
        if not url.startswith(("http://", "https://")):
            raise LabelStudioConfigError(f"{URL_ENV}={url!r} is not an http(s) URL")
        token = environ.get(TOKEN_ENV, "").strip()
        token_file = environ.get(TOKEN_FILE_ENV, "").strip()
        if not token and token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as error:
                raise LabelStudioConfigError(
                    f"{TOKEN_FILE_ENV}={token_file}: cannot read the token: "
                    f"{error.strerror or error}"
                ) from None
        if not token:
            raise LabelStudioConfigError(
                f"no Label Studio token: set {TOKEN_ENV} (Account & Settings > Personal Access "
                f"Token in Label Studio) or {TOKEN_FILE_ENV} to a file holding it"
            )
        root = environ.get(DOCUMENT_ROOT_ENV, "").strip()
        return cls(url=url, token=token, document_root=Path(root).resolve() if root else None)


def parse_time(value: object) -> datetime | None:
    """A Label Studio timestamp ("2026-12-06T02:27:34.346457Z") as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _is_jwt(token: str) -> bool:
    parts = token.split(".")
    return len(parts) == 3 and all(parts) and token.startswith("eyJ")


def _never_sent(error: requests.RequestException) -> bool:
    """True when the request cannot have reached the server (safe to retry any method)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    if isinstance(error, requests.ConnectionError):
        text = repr(error)
        return "NewConnectionError" in text or "Connection refused" in text
    return False


def _problem(response: requests.Response) -> str:
    """The server's own words: its JSON detail or validation errors, else the start of the text."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return text[:300] or response.reason or "empty answer"
    if isinstance(body, dict):
        for key in ("detail", "validation_errors", "message", "error"):
            if body.get(key):
                return str(body[key])[:500]
    return str(body)[:500]


def _retry_after(response: requests.Response | None) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        if parsed is None:
            return None
        return min(max((parsed - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER_S)


class LabelStudioClient:
    """One Label Studio server; not thread-safe (one client per thread)."""

    def __init__(
        self,
        url: str,
        token: str,
        timeout: tuple[float, float] = (5.0, 60.0),
        attempts: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._session = requests.Session()
        self._session.headers["Accept"] = "application/json"
        self._access: str | None = None

    @classmethod
    def from_settings(cls, settings: LabelStudioSettings, **kwargs: Any) -> LabelStudioClient:
        return cls(settings.url, settings.token, **kwargs)

    def __repr__(self) -> str:
        return f"LabelStudioClient({self.url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------
    def _authorization(self, renew: bool = False) -> str:
        if not _is_jwt(self._token):
            return f"Token {self._token}"
        if self._access is None or renew:
            answer = self._send("POST", "/api/token/refresh/", body={"refresh": self._token})
            access = answer.get("access") if isinstance(answer, dict) else None
            if not access:
                raise LabelStudioError(
                    "POST", f"{self.url}/api/token/refresh/", "the answer holds no access token"
                )
            self._access = str(access)
        return f"Bearer {self._access}"

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        body: Any = None,
    ) -> Any:
        """The decoded JSON answer of an authenticated request (None for an empty answer)."""
        try:
            return self._send(method, path, params, body, self._authorization())
        except LabelStudioError as error:
            if error.status != 401 or not _is_jwt(self._token):
                raise
        # The access token expired (they live minutes): renew it once.
        return self._send(method, path, params, body, self._authorization(renew=True))

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        body: Any = None,
        authorization: str | None = None,
    ) -> Any:
        url = f"{self.url}{path}"
        headers = {"Authorization": authorization} if authorization else {}
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            try:
                response = self._session.request(
                    method, url, params=params, json=body, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as error:
                retry = method in IDEMPOTENT_METHODS or _never_sent(error)
                if last or not retry:
                    raise LabelStudioError(method, url, self._describe(error)) from None
                self._pause(attempt, None, f"{method} {url}: {type(error).__name__}")
                continue
            status = response.status_code
            # A 5xx answer to a POST may come after the work was done: never repeat it.
            repeatable = method in IDEMPOTENT_METHODS or status == 429
            if status in RETRYABLE_STATUS and repeatable and not last:
                self._pause(attempt, _retry_after(response), f"{method} {url}: HTTP {status}")
                continue
            if status >= 400:
                raise LabelStudioError(method, url, _problem(response), status)
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise LabelStudioError(
                    method, url, f"not JSON: {response.text[:200]!r}", status
                ) from None
        raise AssertionError("unreachable")

    def _describe(self, error: requests.RequestException) -> str:
        if isinstance(error, requests.ConnectTimeout):
            return f"no connection within {self.timeout[0]:g} s"
        if isinstance(error, requests.ReadTimeout):
            return f"no answer within {self.timeout[1]:g} s"
        if isinstance(error, requests.ConnectionError):
            reason = "connection refused" if "refused" in repr(error) else type(error).__name__
            return f"cannot connect ({reason}): is Label Studio running at {self.url}?"
        return f"{type(error).__name__}: {error}"

    def _pause(self, attempt: int, retry_after: float | None, what: str) -> None:
        delay = retry_after if retry_after is not None else self.backoff_s * 2 ** (attempt - 1)
        log.warning(
            "%s; retrying in %.1f s (attempt %d of %d)", what, delay, attempt + 1, self.attempts
        )
        time.sleep(delay)

    # -- projects ------------------------------------------------------------------------
    def projects_titled(self, title: str) -> list[dict[str, Any]]:
        """The projects whose title is exactly title (the server filters by substring)."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self.request(
                "GET",
                "/api/projects/",
                params={"title": title, "page": page, "page_size": PROJECT_PAGE_SIZE},
            )
            results = answer.get("results", []) if isinstance(answer, dict) else answer
            found.extend(p for p in results if isinstance(p, dict) and p.get("title") == title)
            if not isinstance(answer, dict) or not answer.get("next"):
                return found
            page += 1

    def project(self, project_id: int) -> dict[str, Any]:
        return self.request("GET", f"/api/projects/{project_id}/")

    def create_project(self, title: str, label_config: str, description: str) -> dict[str, Any]:
        return self.request(
            "POST",
            "/api/projects/",
            body={"title": title, "label_config": label_config, "description": description},
        )

    def update_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        return self.request("PATCH", f"/api/projects/{project_id}/", body=fields)

    # -- storage -------------------------------------------------------------------------
    def local_storages(self, project_id: int) -> list[dict[str, Any]]:
        answer = self.request("GET", "/api/storages/localfiles/", params={"project": project_id})
        return [storage for storage in answer or [] if isinstance(storage, dict)]

    def create_local_storage(self, project_id: int, path: Path, title: str) -> dict[str, Any]:
        """A local-files storage over path, never synced: it only lets the server serve the
        images the tasks name (tasks are imported one by one, not by a folder scan)."""
        return self.request(
            "POST",
            "/api/storages/localfiles/",
            body={
                "project": project_id,
                "path": str(path),
                "title": title,
                "use_blob_urls": True,
                "recursive_scan": True,
            },
        )

    # -- tasks ---------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Create tasks; returns their ids in order."""
        ids: list[int] = []
        for start in range(0, len(tasks), IMPORT_BATCH):
            chunk = tasks[start : start + IMPORT_BATCH]
            answer = self.request(
                "POST",
                f"/api/projects/{project_id}/import",
                params={"return_task_ids": "true"},
                body=chunk,
            )
            created = answer.get("task_ids") if isinstance(answer, dict) else None
            if not isinstance(created, list) or len(created) != len(chunk):
                raise LabelStudioError(
                    "POST",
                    f"{self.url}/api/projects/{project_id}/import",
                    f"expected {len(chunk)} task ids, got {created!r}",
                )
            ids.extend(int(task_id) for task_id in created)
        return ids

    def tasks(self, project_id: int, newest_first: bool = False) -> Iterator[dict[str, Any]]:
        """Every task of the project (without annotations), by id or most recently updated
        first. A task is updated whenever one of its annotations is created, changed or
        deleted."""
        ordering = ["-tasks:updated_at"] if newest_first else ["tasks:id"]
        query = {"ordering": ordering}
        page = 1
        seen = 0
        while True:
            try:
                answer = self.request(
                    "GET",
                    "/api/tasks/",
                    params={
                        "project": project_id,
                        "page": page,
                        "page_size": TASK_PAGE_SIZE,
                        "query": json.dumps(query, separators=(",", ":")),
                    },
                )
            except LabelStudioError as error:
                if error.status == 404 and page > 1:
                    return  # a page past the end (tasks deleted while paging)
                raise
            tasks = answer.get("tasks", []) if isinstance(answer, dict) else []
            yield from tasks
            seen += len(tasks)
            total = answer.get("total") if isinstance(answer, dict) else None
            if len(tasks) < TASK_PAGE_SIZE or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def export_tasks(self, project_id: int, task_ids: Sequence[int]) -> list[dict[str, Any]]:
        """These tasks in Label Studio's JSON export format, annotations included (tasks that
        no longer exist are left out)."""
        exported: list[dict[str, Any]] = []
        for start in range(0, len(task_ids), EXPORT_BATCH):
            params: list[tuple[str, Any]] = [("exportType", "JSON"), ("download_all_tasks", "true")]
            params += [("ids[]", task_id) for task_id in task_ids[start : start + EXPORT_BATCH]]
            answer = self.request("GET", f"/api/projects/{project_id}/export", params=params)
            if not isinstance(answer, list):
                raise LabelStudioError(
                    "GET",
                    f"{self.url}/api/projects/{project_id}/export",
                    f"expected a JSON list of tasks, got {type(answer).__name__}",
                )
            exported.extend(task for task in answer if isinstance(task, dict))
        return exported
