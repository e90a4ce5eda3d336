"""The HTML report in a real browser: Debian's chromium, headless, opened from disk.

CI installs chromium and chromium-driver (.ci/run) and sets IMGRANK_REQUIRE_BROWSER, so there
the test fails rather than skips when they are missing; elsewhere it is skipped without them.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import dagster as dg
import pytest

from imgrank_dagster.lib.resources import build_resources

pytestmark = pytest.mark.slow  # a real headless browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_BROWSER_ENV = "IMGRANK_REQUIRE_BROWSER"
# Headless and quiet: no sandbox (containers), no background traffic of the browser itself.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]
ALL_IMAGES_LOADED = """
return Array.from(document.images).every(img => img.complete);
"""
IMAGE_STATES = """
return Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth}));
"""


@pytest.fixture
def browser(tmp_path: Path):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        message = (
            "Debian's chromium and chromium-driver are not installed (CI installs them: "
            "apt-get install chromium chromium-driver)"
        )
        if os.environ.get(REQUIRE_BROWSER_ENV):
            pytest.fail(f"{REQUIRE_BROWSER_ENV} is set but {message}")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    # The DevTools network log: every request the page makes, whatever its kind.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver path: Selenium Manager never tries to download one.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_report_opens_from_disk_with_every_image_and_no_request_out(
    fresh_pipeline, browser, tmp_path: Path
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    pipeline = fresh_pipeline
    result = dg.materialize(
        list(pipeline.defs.assets),
        selection=["ranking_report"],
        partition_key="city",
        instance=pipeline.instance,
        resources=build_resources(data_dir=pipeline.data_dir, warehouse=str(pipeline.warehouse)),
    )
    assert result.success
    # A copy elsewhere: the report depends on nothing outside its folder.
    report = tmp_path / "copied" / "report"
    shutil.copytree(pipeline.data_dir / "exports" / "city" / "report", report)
    index = report / "index.html"
    browser.get_log("performance")  # drop the start page's entries
    browser.get(index.as_uri())
    WebDriverWait(browser, 60).until(lambda driver: driver.execute_script(ALL_IMAGES_LOADED))

    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    data = screenshot.read_bytes()
    width, height = png_size(data)
    assert width >= 1000 and height >= 600
    assert len(data) > 50_000  # thumbnails and text, not a blank page

    images = browser.execute_script(IMAGE_STATES)
    assert len(images) > 100  # top 100, cluster grids, plots, the map...
    broken = [image["src"] for image in images if not image["complete"] or image["width"] == 0]
    assert not broken, broken[:5]
    assert all(image["src"].startswith(report.as_uri() + "/") for image in images)

    # Resource Timing lists network fetches (Chromium records none for file:// loads), so any
    # entry at all would be a request that left the disk.
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name);"
    )
    assert all(name.startswith("file://") for name in resources), resources[:5]
    # DevTools sees every request, file:// ones included: all stay on the machine.
    urls = requested_urls(browser)
    assert set(urls) >= {index.as_uri()} | {image["src"] for image in images}
    outside = [url for url in urls if not url.startswith(("file://", "data:"))]
    assert not outside, outside[:5]
    assert browser.title == "imgrank report: city"
