"""End to end in a real browser: headless Chromium uploads a photo and the page draws the shaded map.

Needs Debian's ``chromium`` and ``chromium-driver`` (apt) and ``selenium`` (pip, the
dev extra); skips with the reason when one is missing. Screenshots go to the
test's temporary folder.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,860"]


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium = _binary("chromium", "/usr/bin/chromium", "chromium-browser", "google-chrome")
    driver_bin = _binary("chromedriver", "/usr/bin/chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("no headless browser: apt-get install -y chromium chromium-driver")
    opts = Options()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="geospot-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _state(driver) -> str | None:
    return driver.execute_script("return document.body.dataset.state || null")


def locate_in_page(driver, url: str, photos: list[str], screenshot: Path) -> dict:
    """Open the page, upload the photos, wait for the map; return what the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: _state(d) in ("ready", "failed"))
    assert _state(driver) == "ready", driver.find_element(By.ID, "status").text
    driver.find_element(By.ID, "photos").send_keys("\n".join(str(p) for p in photos))
    driver.find_element(By.ID, "go").click()
    WebDriverWait(driver, 120).until(lambda d: _state(d) in ("answered", "failed"))
    # Leaflet draws on the next animation frame: wait until the shaded cells are in the SVG.
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.querySelectorAll('#map path.cell-shaded').length") > 0)
    tooltip = _hover_top_cell(driver)
    driver.save_screenshot(str(screenshot))
    return {
        "tooltip": tooltip,
        "status": driver.find_element(By.ID, "status").text,
        "answers": [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".card .answer")],
        "errors": [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".card .error-text")],
        "shaded": driver.execute_script("return document.querySelectorAll('#map path.cell-shaded').length"),
        "cells": driver.execute_script("return document.querySelectorAll('#map path').length"),
        "fills": driver.execute_script(
            "return Array.from(document.querySelectorAll('#map path.cell-shaded'))"
            ".map(p => p.getAttribute('fill')).filter(f => f && f !== 'none').length"),
    }


def _hover_top_cell(driver) -> str:
    """Hover a shaded cell (the biggest one in plain view) and return its tooltip's text."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # a shaded cell whose centre is on screen and not covered (by the estimate's marker and circles, or
    # another cell): with a calibrated, spread-out answer many cells are shaded, some off the map's view
    target = driver.execute_script("""
        const cells = Array.from(document.querySelectorAll('#map path.cell-shaded'));
        const hit = el => { const r = el.getBoundingClientRect();
                            return document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === el; };
        const ok = cells.filter(hit);
        ok.sort((a, b) => b.getBoundingClientRect().width * b.getBoundingClientRect().height
                          - a.getBoundingClientRect().width * a.getBoundingClientRect().height);
        return ok.length ? ok[0] : null;""")
    assert target is not None, "no shaded cell can be hovered"
    ActionChains(driver).move_to_element(target).perform()
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".leaflet-tooltip"))
    return driver.find_element(By.CSS_SELECTOR, ".leaflet-tooltip").text


def test_page_locates_an_uploaded_photo_and_draws_shaded_cells(browser, live_server, predictor, photos, tmp_path):
    shot = tmp_path / "page.png"
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_bytes(b"plain text")
    seen = locate_in_page(browser, live_server.url + "/", [photos.paths[0], bad], shot)
    expected = predictor.predict([photos.paths[0]])[0]
    assert seen["answers"] and "near" in seen["answers"][0]
    ns = "N" if expected.lat >= 0 else "S"
    assert f"{abs(expected.lat):.4f}°{ns}" in seen["answers"][0]
    assert seen["errors"] and "not-a-photo" not in seen["errors"][0] and seen["errors"][0].startswith("error:")
    assert "1 of 2 answered" in seen["status"]
    assert seen["shaded"] > 0 and seen["fills"] == seen["shaded"]
    assert re.fullmatch(r"cell \S+: [0-9.]+%", seen["tooltip"])  # hovering a cell shows its probability
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.realdata
def test_page_with_the_bundled_model_on_a_croatian_photo(browser, shared_data, live_server_class, tmp_path):
    from geospot.serve.app import create_app

    photo = shared_data / "streetview-croatia" / "images" / "001f5d10-f964-48ed-9850-8ef93a6d257c" / "0.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not found")
    with live_server_class(create_app(None)) as server:
        seen = locate_in_page(browser, server.url + "/", [photo], tmp_path / "croatia.png")
    # The page names the place of the bundled model's estimate, as the library answers it
    # (for this Croatian frame, a place near Croatia: Slovenia, Croatia or Hungary).
    from geospot.predict import Predictor

    (answer,) = Predictor.load(None).predict([photo])
    assert answer.country and answer.country in seen["answers"][0], (answer.country, seen["answers"][0])
    assert answer.country_code in ("HR", "SI", "HU", "BA"), answer.country_code
    assert seen["shaded"] > 0
