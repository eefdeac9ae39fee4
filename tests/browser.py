"""A real browser for the page tests: Debian's chromium driven headless by Playwright.

Nothing is downloaded: Playwright drives the system's chromium. A missing browser or
Playwright fails the tests that need them, with what to install (``make test`` installs both).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    """Debian's chromium (CHROMIUM=/path overrides), or a test failure saying how to install it."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("the browser tests need Debian's chromium: `apt-get install -y chromium` as root "
                    "(`make install` does it), or CHROMIUM=/path/to/chromium")
    return path


def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -e '.[test]' (make test installs it)")
    return sync_playwright


class Requests:
    """Every URL a page asks for (documents, scripts, images, fonts, fetches)."""

    def __init__(self, page):
        self.urls: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))

    def outside(self, *allowed_prefixes: str) -> list[str]:
        return [u for u in self.urls if not u.startswith(("data:", "blob:", *allowed_prefixes))]


def save_screenshot(page, path: Path, colours: int = 64, **options) -> None:
    """A screenshot as a small PNG (a palette of ``colours``: flat pages stay well under 100 kB)."""
    from PIL import Image

    page.wait_for_timeout(1000)  # Gradio fades new outputs in
    shot = Image.open(io.BytesIO(page.screenshot(**options))).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
