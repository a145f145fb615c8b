"""Open a page in Debian's headless Chromium (driven by Playwright) and report what a reader sees."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

# Without the background-networking flags Chromium keeps trying hosts this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise AssertionError(
            "expected Debian's chromium on PATH (make setup installs it: apt-get install "
            "chromium); found none, so the HTML report cannot be checked in a browser"
        )
    return found


@dataclass
class PageView:
    errors: List[str] = field(default_factory=list)  # uncaught script errors and console errors
    visible: Dict[str, bool] = field(default_factory=dict)
    text: Dict[str, str] = field(default_factory=dict)


def view(
    page_path: Path, selectors: List[str], screenshot: Optional[Path] = None, click: Optional[str] = None
) -> PageView:
    from playwright.sync_api import sync_playwright

    seen = PageView()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.on("pageerror", lambda error: seen.errors.append(f"page error: {error}"))
            page.on(
                "console",
                lambda message: seen.errors.append(f"console: {message.text}") if message.type == "error" else None,
            )
            page.goto(Path(page_path).resolve().as_uri())
            if click:
                page.click(click)
            for selector in selectors:
                locator = page.locator(selector).first
                seen.visible[selector] = locator.count() > 0 and locator.is_visible()
                seen.text[selector] = (locator.text_content() or "") if seen.visible[selector] else ""
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()
    return seen
