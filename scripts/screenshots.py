"""Screenshots of the service's pages for the README, in headless Chromium with every host
but this machine unreachable (the pages must work offline).

    python scripts/screenshots.py            # writes docs/img/docs.png
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

os.environ.setdefault("SE_AVOID_STATS", "true")  # no usage statistics sent anywhere
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.app import create_app  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServiceSettings(model_dir=Path(tempfile.mkdtemp()) / "models"))
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
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
