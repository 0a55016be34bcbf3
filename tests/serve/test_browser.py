"""The search page in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium):
type a query, see the result images load, click a result, upload an image, go back.

Skipped with the reason when Chromium is not installed; under CI (``CI`` set) that is a failure instead,
since ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from mcip.serve import create_app, start_in_thread
from mcip.serve.hosts import default_allowed_hosts
from tests.data.image_samples import blank_png, saved_as
from tests.serve.conftest import COLOURS, png_bytes, synthetic_image

pytestmark = pytest.mark.browser
INSTALL = "apt-get install chromium chromium-driver"
ALL_IMAGES_LOADED = """
const imgs = [...document.querySelectorAll('#results img')];
return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
"""


def missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason} (CI is set, so the browser tests must run)")
    pytest.skip(reason)


def find_chromium() -> tuple[str, str]:
    binary = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        missing(f"Chromium or chromedriver is not installed ({INSTALL})")
    return binary, driver


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = find_chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1024"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(search_index):
    """The app as ``mcip serve`` builds it: Host check on (the page is at http://127.0.0.1:PORT/)."""
    app = create_app(search_index, allowed_hosts=default_allowed_hosts("127.0.0.1"))
    with start_in_thread(app) as server:
        yield server


def wait(driver, condition, what: str, timeout_s: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(lambda d: condition(d), message=f"waiting for {what}")


def shown_results(driver) -> list[str]:
    """Ids of the result tiles once a search has finished (and every image has loaded)."""
    from selenium.webdriver.common.by import By

    wait(driver, lambda d: d.find_element(By.ID, "results").get_attribute("data-state") == "done", "results")
    wait(driver, lambda d: d.execute_script(ALL_IMAGES_LOADED), "the result images to load")
    tiles = driver.find_elements(By.CSS_SELECTOR, "#results .result")
    return [t.get_attribute("data-id") for t in tiles]


def api_ids(server, **kwargs) -> list[str]:
    method = "post" if "files" in kwargs else "get"
    response = getattr(httpx, method)(server.url + "/search", timeout=60, **kwargs)
    return [r["id"] for r in response.json()["results"]]


def test_search_page_text_click_upload_back(browser, server, search_index, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url + "/")
    wait(browser, lambda d: f"{len(search_index)} images" in d.find_element(By.ID, "status").text, "health")

    browser.find_element(By.ID, "text").send_keys("a red emoji", Keys.ENTER)
    first = shown_results(browser)
    assert first == api_ids(server, params={"text": "a red emoji", "k": 24})
    assert len(first) == len(search_index)  # k = 24 on the page, 21 images in the index
    scores = [float(s.text) for s in browser.find_elements(By.CSS_SELECTOR, "#results .score")]
    assert scores == sorted(scores, reverse=True)

    clicked = first[3]
    browser.find_elements(By.CSS_SELECTOR, "#results .result")[3].click()
    wait(
        browser,
        lambda d: clicked in (d.find_element(By.ID, "results").get_attribute("data-query") or ""),
        "click",
    )
    second = shown_results(browser)
    assert second == api_ids(server, params={"id": clicked, "k": 24}) != first
    assert "id=" in browser.current_url

    query = tmp_path / "query.png"
    query.write_bytes(png_bytes(synthetic_image(COLOURS["blue"], seed=123)))
    browser.find_element(By.ID, "image").send_keys(str(query))
    wait(
        browser,
        lambda d: "query.png" in (d.find_element(By.ID, "results").get_attribute("data-query") or ""),
        "upload",
    )
    third = shown_results(browser)
    assert third == api_ids(server, files={"image": ("query.png", query.read_bytes())}, data={"k": "24"})

    browser.back()  # the address bar holds the text query before the click
    wait(
        browser,
        lambda d: "a red emoji" in (d.find_element(By.ID, "results").get_attribute("data-query") or ""),
        "back",
    )
    assert shown_results(browser) == first

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_search_page_filters_by_metadata(browser, server, search_index):
    """The filter box: text + "label=red" shows what GET /search?...&where=label=red answers (red images
    only), keeps the filter in the address bar, and a malformed filter shows the server's reason."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url + "/")
    wait(browser, lambda d: f"{len(search_index)} images" in d.find_element(By.ID, "status").text, "health")
    browser.find_element(By.ID, "where").send_keys("label=red")
    browser.find_element(By.ID, "text").send_keys("a square", Keys.ENTER)
    wait(
        browser,
        lambda d: "where" in (d.find_element(By.ID, "results").get_attribute("data-query") or ""),
        "filter",
    )
    shown = shown_results(browser)
    expected = api_ids(server, params={"text": "a square", "k": 24, "where": "label=red"})
    assert shown == expected and len(shown) == 5  # the five red images
    assert all(search_index.record(i).metadata["label"] == "red" for i in shown)
    assert "where=label%3Dred" in browser.current_url
    where = browser.find_element(By.ID, "where")
    where.clear()
    where.send_keys("price<<1")
    browser.find_element(By.ID, "text").send_keys(Keys.ENTER)
    wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed(), "the error")
    assert "needs a number" in browser.find_element(By.ID, "error").text


def test_search_page_shows_the_reason_of_a_refused_query(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server.url + "/")
    box = browser.find_element(By.ID, "text")
    box.send_keys(Keys.ENTER)
    wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed(), "the error message")
    assert "type a query" in browser.find_element(By.ID, "error").text
    browser.get(server.url + "/?text=" + "x" * 1001)
    wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed(), "the server's refusal")
    assert "1000" in browser.find_element(By.ID, "error").text

    for name, data, words in [
        ("thin.png", blank_png(1, 20_000), "aspect ratio"),
        ("drawing.png", saved_as("EPS"), "JPEG, PNG, WEBP, GIF, BMP or TIFF"),
    ]:
        browser.get(server.url + "/")
        (tmp_path / name).write_bytes(data)
        browser.find_element(By.ID, "image").send_keys(str(tmp_path / name))
        wait(browser, lambda d, w=words: w in d.find_element(By.ID, "error").text, f"refusal of {name}")


def test_search_page_asks_for_the_api_key_once(browser, search_index):
    """With --api-key-file the page gets 401, asks for the key (a prompt), then searches and shows the
    result images (fetched with the key); a reload in the same session does not ask again."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    key = "page-key-0123456789abcdef"
    app = create_app(search_index, allowed_hosts=default_allowed_hosts("127.0.0.1"), api_keys=[key])
    with start_in_thread(app) as server:
        browser.get(server.url + "/")
        alert = WebDriverWait(browser, 30).until(expected_conditions.alert_is_present())
        assert "API key" in alert.text
        alert.send_keys(key)
        alert.accept()
        wait(
            browser, lambda d: f"{len(search_index)} images" in d.find_element(By.ID, "status").text, "health"
        )
        browser.find_element(By.ID, "text").send_keys("a red emoji", Keys.ENTER)
        shown = shown_results(browser)  # waits for every result image to load
        headers = {"Authorization": f"Bearer {key}"}
        assert shown == api_ids(server, params={"text": "a red emoji", "k": 24}, headers=headers)
        browser.refresh()
        wait(
            browser, lambda d: f"{len(search_index)} images" in d.find_element(By.ID, "status").text, "reload"
        )
        browser.execute_script("sessionStorage.clear()")
