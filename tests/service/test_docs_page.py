"""The API's documentation page in a real headless Chromium, with every host but this
machine unreachable: it renders the operations from packaged assets alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.service.live import LiveServer, chromium, requested_urls
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    with LiveServer(tmp_path_factory.mktemp("docs") / "models") as live:
        yield live.base_url


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    yield driver
    driver.quit()


def test_docs_render_the_operations_offline(browser, base_url, tmp_path):
    browser.get(f"{base_url}/docs")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 10)
    operations = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/classify", "/sample", "/jobs/train", "/v2/models/{name}/infer"} <= operations
    assert browser.get_log("browser") == []  # no console errors
    urls = requested_urls(browser)
    assert urls and all(u.startswith(base_url) or u.startswith("data:") for u in urls), urls
    browser.set_window_size(1280, 900)
    browser.save_screenshot(str(tmp_path / "docs.png"))
    assert (tmp_path / "docs.png").stat().st_size > 10_000
