"""Fixtures of the display's tests: a display server on a fake engine, and Debian's Chromium driven
by Playwright (never a browser Playwright downloads)."""
from __future__ import annotations

import os

import pytest

from display_fakes import CHROMIUM, FakeDisplay, Presses, ServerThread


@pytest.fixture
def served():
    """(display, presses, server thread) with a fresh fake engine; closed after the test."""
    display, presses = FakeDisplay(), Presses()
    thread = ServerThread(display, presses)
    yield display, presses, thread
    thread.close()


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Not longer: Playwright's sync API runs an event loop in the
    main thread while it is open, and any later test's asyncio.run() would find it running."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: scripts/install_browser.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser page that fails the test on a JavaScript error or a request that leaves the
    machine's loopback (the pages must fetch nothing from elsewhere)."""
    context = browser.new_context(viewport={"width": 820, "height": 560})
    page = context.new_page()
    errors, foreign = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: None if request.url.startswith(("http://127.0.0.1:", "data:"))
            else foreign.append(request.url))
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"
    assert not foreign, f"requests away from the meter: {foreign}"
