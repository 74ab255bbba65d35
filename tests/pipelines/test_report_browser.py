"""The run report of a real pipeline run, opened in headless Chromium at 1,280 px.

Chromium is the system's (Debian's `chromium`, `make chromium`), driven by Playwright through
its `executable_path`: no browser is downloaded. Without one the test skips and says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ftpipe.report import REPORT, write_run_report

WIDTH = 1280
SECTIONS = ("data", "recommendation", "sweep", "training", "evaluation", "register", "lineage")
"""The sections a complete run's report has (their anchors)."""


def chromium_path() -> str | None:
    """The system's Chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_report(path: Path) -> dict:
    """Load `path` at WIDTH px; what the page measured, and every console or page error."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra)")
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=chromium_path(),
                                             args=["--no-sandbox"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri(), wait_until="load")
            measured = page.evaluate(
                """() => ({
                    scrollWidth: document.documentElement.scrollWidth,
                    images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth]),
                    sections: [...document.querySelectorAll('section')].map(s => s.id),
                    external: [...document.querySelectorAll('[src],[href]')]
                        .map(e => e.getAttribute('src') || e.getAttribute('href'))
                        .filter(u => /^(https?:)?\\/\\//.test(u)),
                })"""
            )
        finally:
            browser.close()
    return measured | {"errors": errors}


NO_CHROMIUM = "no Chromium installed: `make chromium` installs it (apt-get install chromium)"


@pytest.mark.skipif(chromium_path() is None, reason=NO_CHROMIUM)
def test_the_run_report_renders_in_chromium_without_errors_at_1280_px(tiny_pipeline_run):
    path = tiny_pipeline_run.run_dir / REPORT
    if not path.is_file():  # the run wrote none: ftpipe run does not call the report yet
        write_run_report(tiny_pipeline_run.run_dir)
    page = open_report(path)
    assert page["errors"] == []
    assert page["images"], "the report has no figures"
    broken = [alt for alt, complete, width in page["images"] if not complete or width == 0]
    assert broken == [], f"images that did not load: {broken}"
    assert page["scrollWidth"] <= WIDTH, "the page is wider than a 1,280 px window"
    assert page["external"] == [], "the report must be self-contained"
    # register: the register component keeps registered.json and decision.json in the run.
    assert [s for s in SECTIONS if s not in page["sections"]] == []
