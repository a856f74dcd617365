"""Real servers and a real browser for the service tests: the app under uvicorn on a free
loopback port, and Debian's headless Chromium that can reach no host but this machine."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from service.app import create_app
from service.settings import ServiceSettings

os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium sends no usage statistics


class LiveServer:
    """``with LiveServer(model_dir, **settings) as live``: the app on ``live.url``."""

    def __init__(self, model_dir: Path, **settings: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        settings = {"default_model": "digits", **settings}
        app = create_app(ServiceSettings(model_dir=model_dir, **settings))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.url}"

    def __enter__(self) -> LiveServer:
        self._threads = torch.get_num_threads()  # the lifespan sets the process-wide count
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        torch.set_num_threads(self._threads)


def chromium() -> webdriver.Chrome:
    """Headless Chromium with its console and network logs, every host but 127.0.0.1
    unresolvable; explicit paths, so Selenium Manager (which would look online) never runs."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("needs Debian's chromium and chromium-driver packages "
                    "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """Every URL the page asked for since the log was last read."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls
