"""The web page at / in a real headless Chromium, against a real server (uvicorn), a real
Redis and a real training worker, with every host but this machine unresolvable: it loads
without console errors or outside requests, draws and classifies a digit, walks the code,
trains a model from its form with live progress to the end, and shows a sweep."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import torch
from tests.service.live import LiveServer, chromium, requested_urls
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode
from aae.model import AdversarialAutoencoder
from aae.store import CheckpointStore
from cli.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, template_store, make_workers) -> Iterator[str]:
    model_dir = tmp_path_factory.mktemp("web") / "models"
    shutil.copytree(template_store, model_dir)
    torch.manual_seed(0)  # a 4-D code: the playground shows sliders instead of the pad
    publish_model(CheckpointStore(model_dir), "wide", AdversarialAutoencoder(
        AAEConfig(mode=Mode.SUPERVISED, z_dim=4, hidden=32)), {})
    workers = make_workers()
    with EmbeddedRedis() as redis:
        workers.start(redis.url, model_dir)
        try:
            with LiveServer(model_dir, redis_url=redis.url) as live:
                yield live.base_url
        finally:
            workers.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = 30):
    return WebDriverWait(driver, timeout).until(condition)


def view(driver, name: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"nav button[data-view='{name}']").click()


def test_the_page_loads_offline_without_console_errors(browser, base_url):
    browser.get(base_url + "/")
    wait(browser, lambda d: "digits" in d.find_element(By.ID, "model-list").text)
    assert {"digits", "plain", "styles"} <= set(
        browser.find_element(By.ID, "model-list").text.split())
    browser.find_element(By.LINK_TEXT, "digits").click()
    wait(browser, lambda d: "test error" in d.find_element(By.ID, "model-detail").text)
    detail = browser.find_element(By.ID, "model-detail").text
    assert "samples as asked" in detail and "%" in detail.split("samples as asked")[1]
    wait(browser, lambda d: d.execute_script(
        "const i = document.querySelector('#model-detail img');"
        "return i !== null && i.complete && i.naturalWidth > 0"))
    urls = requested_urls(browser)
    assert urls and all(u.startswith(base_url) or u.startswith(("data:", "blob:"))
                        for u in urls), urls
    assert browser.get_log("browser") == []


def test_drawing_a_digit_shows_a_prediction(browser, base_url):
    browser.get(base_url + "/")
    view(browser, "play")
    wait(browser, lambda d: d.find_element(By.ID, "play-model").get_attribute("value"))
    canvas = browser.find_element(By.ID, "draw")
    ActionChains(browser).move_to_element_with_offset(canvas, 0, -70).click_and_hold() \
        .move_by_offset(0, 40).move_by_offset(0, 40).move_by_offset(0, 40).release().perform()
    wait(browser, lambda d: d.find_element(By.ID, "prediction").text.startswith("Prediction: "))
    label = browser.find_element(By.ID, "prediction").text.split()[1]
    assert label.isdigit() and 0 <= int(label) <= 9
    assert browser.get_log("browser") == []


def test_moving_on_the_z_pad_changes_the_decoded_image(browser, base_url):
    browser.get(base_url + "/")
    view(browser, "play")
    pad = browser.find_element(By.ID, "zpad")
    decoded = browser.find_element(By.ID, "decoded")
    wait(browser, lambda d: d.execute_script(
        "const i = document.getElementById('decoded'); return i.complete && i.naturalWidth"))
    pictures = []
    for dx, dy in ((-90, 90), (90, -90)):
        before = decoded.get_attribute("src")
        ActionChains(browser).move_to_element_with_offset(pad, dx, dy).click().perform()
        wait(browser, lambda d: decoded.get_attribute("src") != before and d.execute_script(
            "const i = document.getElementById('decoded'); return i.complete && i.naturalWidth"))
        pictures.append(decoded.screenshot_as_png)
    assert pictures[0] != pictures[1]
    assert "z = (" in browser.find_element(By.ID, "z-text").text
    assert browser.get_log("browser") == []


def test_codes_of_more_than_two_dimensions_get_a_slider_each(browser, base_url):
    browser.get(base_url + "/")
    view(browser, "play")
    wait(browser, lambda d: "wide" in d.find_element(By.ID, "play-model").text)
    Select(browser.find_element(By.ID, "play-model")).select_by_value("wide")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#zsliders input")) == 4)
    decoded = browser.find_element(By.ID, "decoded")
    wait(browser, lambda d: d.execute_script(
        "const i = document.getElementById('decoded'); return i.complete && i.naturalWidth"))
    before_src, before = decoded.get_attribute("src"), decoded.screenshot_as_png
    browser.execute_script(
        "const s = document.querySelector('#zsliders input[data-dimension=\"3\"]');"
        "s.value = s.max; s.dispatchEvent(new Event('input'));")
    wait(browser, lambda d: decoded.get_attribute("src") != before_src and d.execute_script(
        "const i = document.getElementById('decoded'); return i.complete && i.naturalWidth"))
    assert decoded.screenshot_as_png != before
    assert browser.find_element(By.ID, "manifold").get_attribute("hidden")  # 2-D only
    assert browser.get_log("browser") == []


def test_a_job_from_the_form_shows_live_progress_and_finishes(browser, base_url):
    browser.get(base_url + "/")
    view(browser, "jobs")
    form = browser.find_element(By.ID, "job-form")
    # the form is built from the job API's schema: every field of POST /jobs/train
    wait(browser, lambda d: len(form.find_elements(By.CSS_SELECTOR, "[name]")) >= 30)
    assert form.find_element(By.NAME, "preset").get_attribute("value") == "default"
    Select(form.find_element(By.NAME, "preset")).select_by_value("seed")
    form.find_element(By.NAME, "epochs").send_keys("3")
    form.find_element(By.NAME, "name").send_keys("from-the-page")
    form.find_element(By.CSS_SELECTOR, "#job-more summary").click()
    for field, value in (("hidden", "64"), ("validation_size", "300"), ("batch_size", "50")):
        form.find_element(By.NAME, field).send_keys(value)
    Select(form.find_element(By.NAME, "precision")).select_by_value("fp32")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: "epoch" in d.find_element(By.ID, "job-text").text, timeout=60)
    wait(browser, lambda d: d.find_element(By.ID, "job-status").text == "finished",
         timeout=120)
    assert "Published from-the-page version 1" in browser.find_element(By.ID, "job-text").text
    assert float(browser.find_element(By.ID, "job-progress").get_attribute("value")) == 1.0
    wait(browser, lambda d: d.execute_script(  # the latest grid of samples is shown
        "const i = document.getElementById('job-samples');"
        "return !i.hidden && i.complete && i.naturalWidth === 280"))
    wait(browser, lambda d: "from-the-page" in d.find_element(  # hidden view: textContent
        By.ID, "model-list").get_attribute("textContent"))
    assert browser.get_log("browser") == []


def test_the_sweeps_view_lists_sweeps_and_shows_one_ranked_with_its_figure(browser, base_url):
    import httpx

    body = {"base": {"preset": "seed", "mode": "semi_supervised", "n_labels": 100,
                     "epochs": 1, "hidden": 64, "validation_size": 300, "precision": "fp32",
                     "name": "swept-on-the-page"},
            "grid": {"seed": [1, 2]}}
    sweep = httpx.post(base_url + "/sweeps", json=body, timeout=30).json()
    wait(browser, lambda d: httpx.get(f"{base_url}/sweeps/{sweep['id']}").json()["settled"],
         timeout=120)
    browser.get(base_url + "/")
    view(browser, "sweeps")
    wait(browser, lambda d: sweep["id"][:8] in d.find_element(By.ID, "sweep-list").text)
    assert "2 finished" in browser.find_element(By.ID, "sweep-list").text
    browser.find_element(By.LINK_TEXT, sweep["id"][:8]).click()
    wait(browser, lambda d: d.execute_script(
        "const i = document.getElementById('sweep-figure');"
        "return i.complete && i.naturalWidth > 500"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#sweep-points tbody tr")
    assert len(rows) == 2 and all("finished" in r.text for r in rows)
    errors = [float(r.find_elements(By.TAG_NAME, "td")[3].text.rstrip("%")) for r in rows]
    assert errors == sorted(errors)
    seeds = browser.find_element(By.ID, "sweep-seeds").text
    assert "base 1, 2" in seeds and "(n=2)" in seeds  # mean ± spread over both seeds
    assert browser.get_log("browser") == []
