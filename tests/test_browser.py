"""The viewer in a real browser: headless Chromium (the system's) driven by Selenium, against `pimmi serve`
on the demo corpus. Screenshots of every page go to $PIMMI_SCREENSHOTS (default: the test's temporary folder)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from conftest import read_csv, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs chromium and chromium-driver (.ci/run installs them)")
    pytest.skip(
        "no system chromium and chromedriver (apt-get install chromium chromium-driver)", allow_module_level=True
    )

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def served(demo_run, tmp_path_factory):
    """`pimmi serve` on a copy of the demo workspace, on a free port."""
    ws = Path(shutil.copytree(demo_run["viewed"], tmp_path_factory.mktemp("served") / "ws"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pimmi", "serve", str(ws), "--port", "0"], stderr=subprocess.PIPE, text=True
    )
    line = proc.stderr.readline()
    m = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
    assert m, line
    yield {"url": m.group(1), "ws": ws}
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("PIMMI_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(driver, condition, timeout: float = 20):
    """Until ``condition`` holds; a page reloading meanwhile (elements gone stale) is waited through."""
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, ignored_exceptions=ignored).until(lambda d: condition(d))


def images_loaded(driver, selector: str) -> list[bool]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(i => i.complete && i.naturalWidth > 0)",
        selector,
    )


def test_clusters_page_then_a_cluster_and_its_graph(served, browser, shots):
    browser.get(served["url"])
    cards = browser.find_elements(By.CSS_SELECTOR, "#clusters .card")
    assert len(cards) == 8
    wait(browser, lambda d: all(images_loaded(d, "#clusters .card img")))
    assert len(images_loaded(browser, "#clusters .card img")) == 8
    browser.save_screenshot(str(shots / "clusters.png"))
    cards[0].find_element(By.TAG_NAME, "a").click()
    wait(browser, lambda d: d.current_url.endswith("/cluster/0"))
    wait(browser, lambda d: d.execute_script("return !!window.pimmiGraph"))
    api = httpx2.get(served["url"] + "api/cluster/0").json()
    nodes = browser.execute_script("return window.pimmiGraph.nodes().length")
    edges = browser.execute_script("return window.pimmiGraph.edges().length")
    assert nodes == len(api["nodes"]) == 10
    assert edges == len(api["edges"]) > 9
    # drawn on the canvas, inside the box: every node within the viewport after the fit
    extent = browser.execute_script("var b = window.pimmiGraph.elements().renderedBoundingBox(); return [b.w, b.h]")
    assert extent[0] > 200 and extent[1] > 200
    browser.save_screenshot(str(shots / "cluster.png"))
    # the derivation tree: one arrow into every image but the likely original
    browser.find_element(By.ID, "show-tree").click()
    wait(browser, lambda d: d.execute_script("return !!window.pimmiTree"), timeout=60)
    arrows = browser.execute_script("return window.pimmiGraph.edges('.derivation').length")
    assert arrows == nodes - 1
    assert browser.execute_script("return window.pimmiGraph.nodes('.root').length") == 1
    time.sleep(0.5)  # thumbnails drawn in the nodes
    browser.save_screenshot(str(shots / "cluster-tree.png"))
    browser.find_element(By.ID, "show-tree").click()
    assert browser.execute_script("return window.pimmiGraph.edges('.derivation').length") == 0
    # a click on a node opens its image
    first = api["nodes"][0]["id"]
    browser.execute_script(f"window.pimmiGraph.getElementById('{first}').emit('tap')")
    wait(browser, lambda d: d.current_url.endswith(f"/image/{first}"))
    wait(browser, lambda d: all(images_loaded(d, "#matches img")))
    browser.save_screenshot(str(shots / "image.png"))


def test_pair_page_draws_regions_lines_and_overlay(served, browser, shots):
    pairs = httpx2.get(served["url"] + "api/image/1").json()["matches"]
    b = pairs[0]["image"]["id"]
    browser.get(f"{served['url']}pair/1/{b}")
    api = httpx2.get(f"{served['url']}api/pair/1/{b}").json()
    for region in ("region-a", "region-b"):
        box = browser.find_element(By.ID, region).rect
        assert box["width"] > 50 and box["height"] > 50, region
    lines = browser.find_elements(By.CSS_SELECTOR, "#pair .lines line")
    assert len(lines) == len(api["lines"]) > 8
    wait(browser, lambda d: all(images_loaded(d, "#overlay img")))
    browser.execute_script("var f = document.getElementById('fade'); f.value = 90; f.dispatchEvent(new Event('input'))")
    assert browser.find_element(By.ID, "overlay-b").value_of_css_property("opacity") == "0.9"
    browser.find_element(By.ID, "show-lines").click()
    assert not browser.find_element(By.CSS_SELECTOR, "#pair .lines").is_displayed()
    browser.find_element(By.ID, "show-lines").click()
    browser.save_screenshot(str(shots / "pair.png"))


def test_review_marks_survive_a_reload_and_change_the_clusters(served, browser, shots, tmp_path):
    ids = {
        i["path"]: i["id"]
        for c in httpx2.get(served["url"] + "api/clusters").json()
        for i in httpx2.get(f"{served['url']}api/cluster/{c['cluster_id']}").json()["members"]
    }
    flip = ids["rocket/rocket_flip.jpg"]
    browser.get(f"{served['url']}image/{flip}")
    nb = len(browser.find_elements(By.CSS_SELECTOR, "#matches .card"))
    assert nb >= 1
    for done in range(1, nb + 1):  # each mark reloads the page
        browser.find_element(By.CSS_SELECTOR, "#matches [data-match-verdict='wrong']").click()
        wait(browser, lambda d, done=done: len(d.find_elements(By.CSS_SELECTOR, "#matches .marked-wrong")) == done)
    browser.refresh()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#matches .marked-wrong")) == nb)
    assert not browser.find_elements(By.CSS_SELECTOR, "#matches [data-match-verdict='wrong']")
    browser.save_screenshot(str(shots / "image-marked.png"))
    out = tmp_path / "clusters.csv"
    assert run(["clusters", str(served["ws"]), "-o", str(out)]) == 0
    paths = {r["path"] for r in read_csv(out)}
    assert "rocket/rocket_flip.jpg" not in paths and "rocket/rocket.jpg" in paths
    # a cluster marked checked, shown so after a reload
    browser.get(served["url"] + "cluster/1")
    browser.find_element(By.CSS_SELECTOR, "[data-cluster-verdict='checked']").click()
    wait(browser, lambda d: "checked" in d.find_element(By.ID, "cluster-review").text)
    browser.refresh()
    assert browser.find_element(By.ID, "cluster-review").text.strip() == "checked"
    browser.get(served["url"] + "?reviewed=checked")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#clusters .card")) == 1
    browser.save_screenshot(str(shots / "clusters-checked.png"))
