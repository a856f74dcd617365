"""Screenshots of the service's pages for the README, in headless Chromium with every host
but this machine unreachable (the pages must work offline).

    python -m scripts.screenshots --model-dir runs/models --model default-published

writes docs/img/docs.png, and with a store holding a model, docs/img/models.png,
docs/img/play.png (a digit drawn and classified, the code walked) and docs/img/jobs.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from service.app import create_app
from service.settings import ServiceSettings

os.environ.setdefault("SE_AVOID_STATS", "true")  # no usage statistics sent anywhere
ROOT = Path(__file__).resolve().parents[1]


def views(driver, base: str, model: str, target: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    driver.get(base + "/")
    WebDriverWait(driver, 30).until(lambda d: model in d.find_element(By.ID, "model-list").text)
    driver.find_element(By.LINK_TEXT, model).click()
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "const i = document.querySelector('#model-detail img');"
        "return i !== null && i.complete && i.naturalWidth > 0"))
    driver.save_screenshot(str(target / "models.png"))
    driver.find_element(By.CSS_SELECTOR, "nav button[data-view='play']").click()
    Select = __import__("selenium.webdriver.support.select", fromlist=["Select"]).Select
    Select(driver.find_element(By.ID, "play-model")).select_by_value(model)
    time.sleep(1.5)
    canvas = driver.find_element(By.ID, "draw")
    ActionChains(driver).move_to_element_with_offset(canvas, -50, -80).click_and_hold() \
        .move_by_offset(100, 0).move_by_offset(-30, 55).move_by_offset(-25, 45) \
        .move_by_offset(-10, 60).release().perform()  # a seven
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "prediction").text.startswith("Prediction"))
    pad = driver.find_element(By.ID, "zpad")
    ActionChains(driver).move_to_element_with_offset(pad, 30, -40).click().perform()
    time.sleep(1.5)
    driver.save_screenshot(str(target / "play.png"))
    driver.find_element(By.CSS_SELECTOR, "nav button[data-view='jobs']").click()
    time.sleep(1)
    driver.save_screenshot(str(target / "jobs.png"))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, help="a store with a trained model")
    parser.add_argument("--model", help="the model to show")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model_dir = args.model_dir or Path(tempfile.mkdtemp()) / "models"
    app = create_app(ServiceSettings(model_dir=model_dir, default_model=args.model or "none"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    # explicit paths: Selenium Manager (which would look online) is never called
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/docs")
        WebDriverWait(driver, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 10)
        target = ROOT / "docs" / "img" / "docs.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(target))
        print(f"wrote {target}")
        if args.model:
            views(driver, f"http://127.0.0.1:{port}", args.model, target.parent)
            print(f"wrote models.png, play.png, jobs.png in {target.parent}")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
