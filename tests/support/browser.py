"""What the browser tests share: Debian's Chromium driven by Playwright, and the studio served on loopback."""

import contextlib
import os
import socket
from pathlib import Path

import pytest

from inpaint import ui

CHROMIUM = Path("/usr/bin/chromium")
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = int(os.environ.get("INPAINT_BROWSER_WAIT_MS", "300000"))  # a ceiling for a shared, slow machine


def require_chromium() -> None:
    """Skips the calling test module without Chromium; fails it in CI, which must install it."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium (see .ci/run)", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests", allow_module_level=True)


@contextlib.contextmanager
def served_studio(engine):
    """The studio around `engine` as `python app.py` serves it (its theme, CSS and first script), on a free port of
    loopback; its URL."""
    from starlette.middleware import Middleware

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = ui.build_demo(engine, default_model="patchmatch")  # the app's default without a GPU
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, theme=ui.THEME,
                css=ui.CSS, app_kwargs={"middleware": [Middleware(ui.FirstScript)]})
    try:
        yield demo.local_url
    finally:
        demo.close()


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-extensions", "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, studio: str, viewport: dict):
    """A new context and page on the studio, once the page's own defaults (random seed, auto size, the model's
    ranges) have arrived with its load event."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(studio, wait_until="load")
    expect(page.locator("#inpaint-samples input[type=number]")).to_have_value(str(ui.DEFAULT_SAMPLES))
    return context, page
