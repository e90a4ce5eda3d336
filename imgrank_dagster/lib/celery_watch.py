"""A Celery result backend that notices a worker that died while running a step.

dagster-celery's run process submits each step as a Celery task and waits until its result is
ready. A worker killed mid-step (SIGKILL, out of memory, its host gone) never reports one, so
the run would wait forever. This backend is the Redis backend plus one rule, applied where the
run process reads a task's state: a task that is STARTED on a worker which has not answered a
ping for `IMGRANK_CELERY_WORKER_LOST_AFTER` seconds (default 60) is recorded as failed with a
`WorkerLostError` naming the worker. dagster-celery then fails the step, the run fails loudly,
and the instance's run retries re-execute it from the failure on the workers that are left.

The run process selects it through the backend URL (celery's "<class>+<url>" form), which
imgrank's celery executor builds from IMGRANK_CELERY_BACKEND; workers store results with the
plain Redis backend. Workers must track started tasks (`task_track_started`), which the worker
command sets.
"""

from __future__ import annotations

import os
import time

from celery.backends.redis import RedisBackend
from celery.exceptions import WorkerLostError
from celery.states import STARTED

LOST_AFTER_ENV = "IMGRANK_CELERY_WORKER_LOST_AFTER"
DEFAULT_LOST_AFTER_SECONDS = 60.0
PING_EVERY_SECONDS = 5.0
PING_TIMEOUT_SECONDS = 2.0
BACKEND_CLASS = f"{__name__}:WorkerWatchingRedisBackend"


def watched_backend_url(url: str) -> str:
    """The backend URL that selects this backend for a plain redis:// URL (others unchanged)."""
    if url.startswith(("redis://", "rediss://")):
        return f"{BACKEND_CLASS}+{url}"
    return url


class WorkerWatchingRedisBackend(RedisBackend):
    """Redis results; a started task whose worker stopped answering pings becomes a failure."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lost_after = float(os.environ.get(LOST_AFTER_ENV, DEFAULT_LOST_AFTER_SECONDS))
        self._last_ping: dict[str, float] = {}  # worker -> when it was last pinged
        self._silent_since: dict[str, float] = {}  # worker -> first unanswered ping

    def get_task_meta(self, task_id, cache=True):
        meta = super().get_task_meta(task_id, cache=cache)
        if meta.get("status") != STARTED or not isinstance(meta.get("result"), dict):
            return meta
        worker = meta["result"].get("hostname")
        if not worker:
            return meta
        silent_for = self._silent_for(worker)
        if silent_for < self.lost_after:
            return meta
        error = WorkerLostError(
            f"celery worker {worker} stopped answering for {silent_for:.0f} s while running "
            f"this step (killed, or its host is gone); the step did not finish there"
        )
        self.mark_as_failure(task_id, error)
        return super().get_task_meta(task_id, cache=cache)

    def _silent_for(self, worker: str) -> float:
        """Seconds since the worker first missed a ping (0 while it answers)."""
        now = time.monotonic()
        if now - self._last_ping.get(worker, float("-inf")) >= PING_EVERY_SECONDS:
            self._last_ping[worker] = now
            replies = self.app.control.ping(destination=[worker], timeout=PING_TIMEOUT_SECONDS)
            if any(worker in reply for reply in replies):
                self._silent_since.pop(worker, None)
            else:
                self._silent_since.setdefault(worker, now)
        since = self._silent_since.get(worker)
        return 0.0 if since is None else now - since
