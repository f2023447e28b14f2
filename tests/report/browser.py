"""Open a page in a real headless Chromium, offline, and report what a reader would see."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND"]

# Per plot container: drawn when plotly made its SVG and put at least one trace, shape or
# annotation in it.
_COUNT_PLOTS = """() => Array.from(document.querySelectorAll('div.plot')).map(d => {
  const svg = d.querySelector('svg.main-svg');
  if (!svg) return 0;
  return d.querySelectorAll('g.trace, .shapelayer path, g.annotation').length;
})"""


@dataclass
class PageVisit:
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    dialogs: list[str] = field(default_factory=list)  # alert()/confirm() the page opened
    drawn: list[int] = field(default_factory=list)  # marks drawn in each plot container
    graph_ops: int = 0
    title: str = ""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs the Debian package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def visit(page_path: Path, screenshot_dir: Path | None = None, name: str = "report") -> PageVisit:
    from playwright.sync_api import sync_playwright

    v = PageVisit()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            page.on("console", lambda m: v.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: v.errors.append(str(e)))
            page.on("request", lambda r: v.requests.append(r.url))

            def on_dialog(d: object) -> None:
                v.dialogs.append(getattr(d, "message", "?"))
                d.dismiss()  # type: ignore[attr-defined]

            page.on("dialog", on_dialog)
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('svg.main-svg').length > 0",
                                   timeout=30_000)
            v.drawn = page.evaluate(_COUNT_PLOTS)
            v.graph_ops = page.evaluate("document.querySelectorAll('svg.graph g.op').length")
            v.title = page.title()
            if screenshot_dir is not None:
                page.screenshot(path=str(screenshot_dir / f"{name}-top.png"))
                page.screenshot(path=str(screenshot_dir / f"{name}-full.png"), full_page=True)
        finally:
            browser.close()
    return v
