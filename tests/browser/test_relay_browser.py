"""The SSE relay example in a real headless browser: the page shows the streamed text.

Needs selenium (the ``browser`` extra) and Debian's ``chromium`` and
``chromium-driver`` packages; ``.ci/docs.sh`` installs them and runs this file.
Elsewhere it is skipped. The screenshot goes to ``$AIOTONGYI_SCREENSHOT``
(default: ``aiotongyi-browser/relay.png`` in the temp directory), outside git.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiotongyi.testing import DashScopeEmulator, Reply

pytestmark = pytest.mark.browser
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RELAY = ROOT / "examples" / "aiohttp_sse_relay.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
POEM = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        f"no {CHROMIUM} or {CHROMEDRIVER}: apt-get install chromium chromium-driver",
        allow_module_level=True,
    )


def screenshot_path() -> Path:
    default = Path(tempfile.gettempdir()) / "aiotongyi-browser" / "relay.png"
    path = Path(os.environ.get("AIOTONGYI_SCREENSHOT", default))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=900,700",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    # An explicit driver path: selenium must never try to download one.
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def start_relay(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, str(RELAY), "--port", "0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    assert process.stdout is not None
    match = re.search(r"http://127\.0\.0\.1:\d+/", process.stdout.readline())
    assert match, process.stderr.read() if process.stderr else "no URL"
    return process, match.group(0)


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}


def ask(browser: webdriver.Chrome, url: str, prompt: str) -> None:
    browser.get(url)
    field = browser.find_element(By.ID, "prompt")
    field.clear()
    field.send_keys(prompt)
    browser.find_element(By.ID, "send").click()


def text_of(browser: webdriver.Chrome, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def test_page_shows_the_streamed_answer(browser: webdriver.Chrome) -> None:
    process, url = start_relay(base_env(), "--once")  # no key: the relay's own emulator
    try:
        ask(browser, url, "写一首春天的诗")
        WebDriverWait(browser, 20).until(lambda b: text_of(b, "status") != "streaming")
        assert text_of(browser, "status") == "done: stop"
        assert text_of(browser, "answer") == f"(写一首春天的诗)\n{POEM}"
        path = screenshot_path()
        assert browser.save_screenshot(str(path))
        assert path.stat().st_size > 1000
        print(f"\nrelay screenshot: {path}")  # noqa: T201 (the CI log says where it went)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "relay '写一首春天的诗': completed" in out
    finally:
        process.kill()
        process.wait()


def test_stop_button_closes_the_upstream(
    browser: webdriver.Chrome, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["tick "] * 200, frame_delay=0.05))  # ten seconds
    env = base_env()
    env["DASHSCOPE_API_KEY"] = dashscope_emulator.api_key
    env["DASHSCOPE_HTTP_BASE_URL"] = dashscope_emulator.base_url
    process, url = start_relay(env, "--once")
    try:
        ask(browser, url, "long")
        WebDriverWait(browser, 10).until(lambda b: "tick tick" in text_of(b, "answer"))
        browser.find_element(By.ID, "stop").click()
        out, err = process.communicate(timeout=5)  # well before the answer would end
        assert process.returncode == 0, err
        assert "relay 'long': browser disconnected, upstream stream closed" in out
        assert dashscope_emulator.wait_for_open_connections(0, timeout=3)
        assert text_of(browser, "status") == "stopped"
    finally:
        process.kill()
        process.wait()
