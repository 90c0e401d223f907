"""Debian's chromium for the browser tests, launched through Playwright (never a downloaded
browser): one place for the path, the flags and the "missing" rule (a failure under CI=true,
a skip on a laptop without it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
VENDOR = Path(__file__).resolve().parents[1] / "clipfeed" / "web" / "static" / "vendor"


def require_chromium(*vendor_files: str) -> None:
    """Fail (CI) or skip (laptop) without the browser; fail without the built client files."""
    if not os.access(CHROMIUM, os.X_OK):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing (make chromium installs Debian's package)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    for name in vendor_files:
        if not (VENDOR / name).exists():
            pytest.fail(f"clipfeed/web/static/vendor/{name} is missing: run `make web`")


@contextlib.contextmanager
def chromium(*vendor_files: str) -> Iterator:
    """A launched Chromium. Set up fixtures that call asyncio.run() before entering: Playwright's
    sync API keeps an event loop running on this thread while it is open."""
    require_chromium(*vendor_files)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
