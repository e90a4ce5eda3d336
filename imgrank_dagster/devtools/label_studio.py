"""A real Label Studio for the demo and the tests, from its own virtual environment.

Label Studio pins Django, its SDK and more exactly; those pins clash with FiftyOne's, so it
lives in its own venv (`make label-studio-install`: `.label-studio/` in the repository, or
IMGRANK_LABEL_STUDIO_VENV) and imgrank talks to it over HTTP only.

`LabelStudioServer` starts `label-studio start` on 127.0.0.1 with SQLite under a folder of
ours and local-files serving of a document root, creates the account, waits until it answers,
creates a personal access token for the account (signing in like a browser does), and stops
the server and every process it started on exit.

    python -m imgrank_dagster.devtools.label_studio [--port 8080]   # `make label-studio`

serves the demo: data under data/label-studio/, images served from data/, the demo account's
token in data/label-studio/token (read through IMGRANK_LABEL_STUDIO_TOKEN_FILE). Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from imgrank_dagster.core.annotation.client import (
    DOCUMENT_ROOT_ENV,
    TOKEN_FILE_ENV,
    URL_ENV,
)
from imgrank_dagster.core.files import write_atomically
from imgrank_dagster.lib.names import LABEL_STUDIO_DIR
from imgrank_dagster.lib.resources import default_data_dir

VERSION = "1.23.2"  # the release the tests and the README's figures are from
VENV_ENV = "IMGRANK_LABEL_STUDIO_VENV"
REPOSITORY = Path(__file__).resolve().parents[2]
DEMO_USER = "demo@imgrank.local"
HOST = "127.0.0.1"
START_TIMEOUT_S = 300.0  # the first start migrates a new SQLite database: ~30-60 s here


class LabelStudioUnavailable(RuntimeError):
    """Label Studio is not installed in its venv; the message says how to install it."""


def venv_dir() -> Path:
    return Path(os.environ.get(VENV_ENV) or REPOSITORY / ".label-studio").resolve()


def executable(venv: Path | None = None) -> Path:
    """The `label-studio` command of its venv; LabelStudioUnavailable when it is missing."""
    command = (venv or venv_dir()) / "bin" / "label-studio"
    if not os.access(command, os.X_OK):
        raise LabelStudioUnavailable(
            f"Label Studio is not installed in {command.parent.parent} (`make "
            f"label-studio-install` installs label-studio=={VERSION} there, about 100 s)"
        )
    return command


class LabelStudioServer:
    """One Label Studio server on 127.0.0.1; a context manager that always stops it."""

    def __init__(
        self,
        base_dir: Path,
        document_root: Path,
        port: int,
        username: str = DEMO_USER,
        password: str | None = None,
        venv: Path | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.command = executable(venv)
        self.base_dir = Path(base_dir).resolve()
        self.document_root = Path(document_root).resolve()
        self.port = port
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.log_file = Path(log_file) if log_file else self.base_dir / "label-studio.log"
        self.url = f"http://{HOST}:{port}"
        self._process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            # Nothing of imgrank's or another Label Studio's settings leaks into the server.
            if not key.startswith(("LABEL_STUDIO_", "IMGRANK_", "DJANGO_", "VIRTUAL_ENV"))
        }
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.base_dir),
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                # Offline: no version check on PyPI, no analytics.
                "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
                "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
                "PATH": f"{self.command.parent}:{env.get('PATH', '')}",
            }
        )
        return env

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LabelStudioServer:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # --internal-host is the address it binds to (--host only names it in URLs).
        command = [str(self.command), "start", "--no-browser", "--internal-host", HOST]
        command += ["--port", str(self.port), "--data-dir", str(self.base_dir)]
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                command,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        try:
            self._wait_until_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Label Studio exited with code {self._process.returncode} while starting; "
                    f"see {self.log_file}"
                )
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"Label Studio did not answer {self.url}/health within {timeout_s} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers it forked in its group may outlive it: end the group for good.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the account ---------------------------------------------------------------------
    def browser_session(self) -> requests.Session:
        """A session signed in as the account, as a browser is (cookies and CSRF token)."""
        session = requests.Session()
        login = f"{self.url}/user/login/"
        session.get(login, timeout=30).raise_for_status()
        answer = session.post(
            login,
            data={
                "email": self.username,
                "password": self.password,
                "csrfmiddlewaretoken": session.cookies.get("csrftoken", ""),
            },
            headers={"Referer": login},
            allow_redirects=False,
            timeout=30,
        )
        if answer.status_code != 302 or "sessionid" not in session.cookies:
            raise RuntimeError(
                f"signing in to {login} as {self.username} failed ({answer.status_code})"
            )
        session.headers["X-CSRFToken"] = session.cookies.get("csrftoken", "")
        session.headers["Referer"] = self.url
        return session

    def create_access_token(self) -> str:
        """A new personal access token of the account (Account & Settings in the UI)."""
        with self.browser_session() as session:
            answer = session.post(f"{self.url}/api/token/", timeout=30)
            if answer.status_code != 201 or "token" not in answer.json():
                raise RuntimeError(
                    f"POST {self.url}/api/token/: HTTP {answer.status_code}: {answer.text[:200]}"
                )
            return str(answer.json()["token"])

    def token_works(self, token: str) -> bool:
        answer = requests.post(
            f"{self.url}/api/token/refresh/", json={"refresh": token}, timeout=30
        )
        return answer.status_code == 200


# --------------------------------------------------------------------------- make label-studio


def _write_private(path: Path, text: str) -> None:
    """Write a secret atomically, readable by its owner only."""

    def write(temporary: Path) -> None:
        temporary.chmod(0o600)
        temporary.write_text(text)

    write_atomically(path, write)


def _demo_password(folder: Path) -> str:
    """The demo account's password: made once, kept next to its database (mode 600)."""
    path = folder / "credentials.json"
    if path.exists():
        return str(json.loads(path.read_text())["password"])
    password = secrets.token_urlsafe(12)
    text = json.dumps({"username": DEMO_USER, "password": password}, indent=2) + "\n"
    _write_private(path, text)
    return password


def serve_demo(port: int) -> int:
    data_dir = default_data_dir()
    folder = data_dir / LABEL_STUDIO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    try:
        server = LabelStudioServer(folder, data_dir, port, password=_demo_password(folder))
    except LabelStudioUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    print(
        f"starting Label Studio {VERSION} on {server.url} (data in {folder}; the first start "
        "takes a minute) ...",
        flush=True,
    )
    started = time.monotonic()
    with server:
        token_file = folder / "token"
        token = token_file.read_text().strip() if token_file.exists() else ""
        if not token or not server.token_works(token):
            token = server.create_access_token()
            _write_private(token_file, token + "\n")
        credentials = folder / "credentials.json"
        print(
            f"\nLabel Studio: {server.url}  (up in {time.monotonic() - started:.0f} s)\n"
            f"  sign in as {DEMO_USER}, password in {credentials}\n"
            f"  serves local files below {data_dir}\n"
            "imgrank finds it through (the Makefile sets these by default):\n"
            f"  {URL_ENV}={server.url}\n"
            f"  {TOKEN_FILE_ENV}={token_file}\n"
            f"  {DOCUMENT_ROOT_ENV}={data_dir}\n"
            "Send the demo's next batch: `make send` in another terminal. Ctrl-C stops Label "
            "Studio.",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        print("stopping Label Studio ...", flush=True)
    print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    return serve_demo(parser.parse_args(argv).port)


if __name__ == "__main__":
    sys.exit(main())
