"""The web page at / in a real headless Chromium, against a real server (uvicorn), a real
Redis and a real training worker, with every host but this machine unresolvable: it loads
without console errors or outside requests, reads digits drawn on its canvas with the
mouse (centred and large, or small in a corner), walks the code, trains a model from its
form with live progress to the end, and shows a sweep."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from tests.service.live import LiveServer, chromium, requested_urls
from scipy import ndimage
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode
from aae.data import splits_for
from aae.model import AdversarialAutoencoder
from aae.presets import build_config
from aae.store import CheckpointStore
from aae.training import Trainer
from cli.embedded_redis import EmbeddedRedis


# One stroke per digit, as a hand draws it on the 224 x 224 canvas (x, y from its top left)
STROKES = {
    0: [(112, 40), (80, 55), (68, 112), (80, 170), (112, 185), (144, 170), (156, 112),
        (144, 55), (112, 40)],
    1: [(100, 60), (118, 40), (118, 185)],
    2: [(72, 72), (88, 46), (115, 38), (142, 48), (152, 75), (143, 102), (72, 180),
        (158, 180)],
    3: [(72, 52), (112, 38), (148, 58), (142, 94), (106, 108), (146, 122), (154, 152),
        (132, 180), (90, 184), (66, 166)],
    4: [(128, 185), (128, 40), (66, 132), (162, 132)],
    5: [(150, 40), (84, 40), (78, 102), (116, 94), (150, 114), (156, 150), (132, 180),
        (88, 182), (66, 166)],
    6: [(140, 40), (102, 60), (78, 108), (74, 150), (96, 180), (130, 178), (150, 150),
        (140, 120), (106, 112), (80, 130)],
    7: [(66, 44), (156, 44), (100, 186)],
    8: [(112, 110), (82, 86), (86, 52), (112, 38), (140, 52), (144, 86), (112, 110),
        (76, 136), (80, 172), (112, 186), (146, 172), (150, 136), (112, 110)],
    9: [(146, 76), (126, 46), (96, 42), (76, 66), (82, 96), (110, 106), (140, 92),
        (146, 76), (142, 132), (128, 186)],
}


def reader(data_dir) -> AdversarialAutoencoder:
    """A classifier good enough to read drawings: the default recipe's semi-supervised
    model on the 10,000-digit fixture with 8,000 labels, 8 epochs (about 20 s here;
    4.8% test error on the fixture's test digits, measured)."""
    cfg = build_config("default", mode="semi_supervised", n_labels=8000, epochs=8,
                       hidden=512, validation_size=500, vat_weight=0.0)
    return Trainer(cfg, splits_for(cfg, data_dir, download=False), device="cpu").fit().model


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, template_store, make_workers, fixture_10k_data_dir
             ) -> Iterator[str]:
    model_dir = tmp_path_factory.mktemp("web") / "models"
    shutil.copytree(template_store, model_dir)
    torch.manual_seed(0)  # a 4-D code: the playground shows sliders instead of the pad
    publish_model(CheckpointStore(model_dir), "wide", AdversarialAutoencoder(
        AAEConfig(mode=Mode.SUPERVISED, z_dim=4, hidden=32)), {})
    publish_model(CheckpointStore(model_dir), "reader", reader(fixture_10k_data_dir), {})
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


def draw_digit(browser, points, scale: float = 1.0, left: float = 0, top: float = 0) -> str:
    """Clear the canvas, draw one stroke through ``points`` (canvas pixels, scaled and moved)
    with the mouse, and wait for the page's prediction; returns its label."""
    browser.find_element(By.ID, "draw-clear").click()
    canvas = browser.find_element(By.ID, "draw")
    at = [(round(x * scale + left), round(y * scale + top)) for x, y in points]
    actions = ActionChains(browser).move_to_element_with_offset(
        canvas, at[0][0] - 112, at[0][1] - 112).click_and_hold()
    for (x0, y0), (x1, y1) in zip(at, at[1:]):
        actions.move_by_offset(x1 - x0, y1 - y0)
    actions.release().perform()
    wait(browser, lambda d: d.find_element(By.ID, "prediction").text.startswith("Prediction: "))
    return browser.find_element(By.ID, "prediction").text.split()[1]


# a quarter of the canvas: smaller still, the 20-pixel brush fills the loops of 8 and 9
@pytest.mark.parametrize("where, scale, left, top", [("centred and large", 1.0, 0, 0),
                                                     ("small, lower left", 0.5, 4, 108),
                                                     ("small, upper right", 0.5, 110, 4)])
def test_digits_drawn_on_the_canvas_are_read(browser, base_url, where, scale, left, top):
    browser.get(base_url + "/")
    view(browser, "play")
    wait(browser, lambda d: d.find_element(By.ID, "play-model").get_attribute("value"))
    Select(browser.find_element(By.ID, "play-model")).select_by_value("reader")
    read = {digit: draw_digit(browser, points, scale, left, top)
            for digit, points in STROKES.items()}
    right = sum(read[d] == str(d) for d in STROKES)
    assert right >= 9, f"{where}: read {read}"
    # the page shows what the model saw (28x28 at 4x): the last digit, 20 pixels tall,
    # its centre of mass at the centre
    seen = np.array(browser.execute_script(
        "const g = document.getElementById('seen').getContext('2d');"
        "return Array.from(g.getImageData(0, 0, 112, 112).data.filter((_, i) => i % 4 == 0));"
    ), float).reshape(112, 112)
    rows = np.flatnonzero((seen > 128).any(axis=1))
    assert 72 <= rows[-1] - rows[0] + 1 <= 84
    assert np.allclose(ndimage.center_of_mass(seen), (56, 56), atol=4)
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
