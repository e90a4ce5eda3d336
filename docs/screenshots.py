"""The README's screenshots, taken from the demo with Debian's headless chromium.

    make demo && make app      # once: the demo's ranking, report and FiftyOne dataset (Ctrl-C)
    FIFTYONE_DATABASE_DIR=$PWD/data/fiftyone/db .venv/bin/python docs/screenshots.py

Writes docs/report.png (the HTML report, opened from disk) and docs/fiftyone_app.png (the App
on the demo's "label next" view), each reduced to 256 colours to stay small.

    make label-studio          # in another terminal, then `make send`
    .venv/bin/python docs/screenshots.py label-studio

writes docs/label_studio.png: the demo's Label Studio project, the best-ranked task without an
annotation open, with imgrank's rank, cluster and reason above the image.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from imgrank_dagster.core.views import fiftyone_dataset
from imgrank_dagster.lib.names import REPORT_DIR, REPORT_INDEX
from imgrank_dagster.lib.resources import ImgrankConfig, default_data_dir

DOCS = Path(__file__).resolve().parent
COLLECTION = "demo"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def browser(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [*FLAGS, f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='imgrank-chromium-')}")
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def save_small_png(png: bytes, target: Path) -> None:
    with tempfile.NamedTemporaryFile(suffix=".png") as raw:
        Path(raw.name).write_bytes(png)
        with Image.open(raw.name) as image:
            image.convert("RGB").quantize(colors=256).save(target, optimize=True)
    print(f"{target}: {target.stat().st_size // 1024} KB")


def report_screenshot(report: Path) -> None:
    driver = browser(1280, 900)
    try:
        driver.get(report.as_uri())
        time.sleep(2)
        save_small_png(driver.get_screenshot_as_png(), DOCS / "report.png")
    finally:
        driver.quit()


def app_screenshot(port: int) -> None:
    driver = browser(1400, 850)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        time.sleep(20)  # the App loads its bundle, then the grid's images
        for button in driver.find_elements(By.XPATH, "//*[normalize-space(text())='Dismiss']"):
            button.click()  # the Enterprise advertisement
        time.sleep(2)
        save_small_png(driver.get_screenshot_as_png(), DOCS / "fiftyone_app.png")
    finally:
        driver.quit()


def label_studio_screenshot() -> int:
    from imgrank_dagster.core.annotation.client import LabelStudioClient, LabelStudioSettings
    from imgrank_dagster.lib.names import LABEL_STUDIO_DIR

    settings = LabelStudioSettings.from_env(
        {
            "IMGRANK_LABEL_STUDIO_URL": "http://127.0.0.1:8080",
            "IMGRANK_LABEL_STUDIO_TOKEN_FILE": str(default_data_dir() / LABEL_STUDIO_DIR / "token"),
            **os.environ,
        }
    )
    credentials = json.loads(
        (default_data_dir() / LABEL_STUDIO_DIR / "credentials.json").read_text()
    )
    with LabelStudioClient.from_settings(settings) as client:
        (project,) = client.projects_titled(COLLECTION)
        tasks = list(client.tasks(project["id"]))
        waiting = [
            t for t in tasks if not t["total_annotations"] and not t["cancelled_annotations"]
        ]
    if not waiting:
        print("no task without an annotation: run `make send` first", file=sys.stderr)
        return 1
    task = min(waiting, key=lambda task: task["data"]["rank"])
    driver = browser(1400, 820)
    try:
        driver.get(f"{settings.url}/user/login/")
        time.sleep(3)
        driver.find_element(By.NAME, "email").send_keys(credentials["username"])
        driver.find_element(By.NAME, "password").send_keys(credentials["password"])
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        time.sleep(3)
        driver.get(f"{settings.url}/projects/{project['id']}/data?task={task['id']}")
        time.sleep(12)  # the data manager, then the labelling interface and the image
        save_small_png(driver.get_screenshot_as_png(), DOCS / "label_studio.png")
    finally:
        driver.quit()
    return 0


def main() -> int:
    if sys.argv[1:] == ["label-studio"]:
        return label_studio_screenshot()
    imgrank = ImgrankConfig(data_dir=str(default_data_dir()))
    report = imgrank.exports_dir(COLLECTION) / REPORT_DIR / REPORT_INDEX
    if not report.is_file():
        print(f"no report at {report}: run `make demo` and `make app` first", file=sys.stderr)
        return 1
    report_screenshot(report)
    fiftyone_dataset.use_database_dir(imgrank.fiftyone_database_dir)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = fiftyone_dataset.launch_app(
        COLLECTION, fiftyone_dataset.LABEL_NEXT_VIEW, "127.0.0.1", port
    )
    try:
        fiftyone_dataset.wait_until_serving("127.0.0.1", port)
        app_screenshot(port)
    finally:
        fiftyone_dataset.close_app(session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
