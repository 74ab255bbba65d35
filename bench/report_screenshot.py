"""docs/report.png: the run report of a pipeline run, as headless Chromium shows it at 1,280 px.

    python bench/report_screenshot.py [RUN_DIR] [--output docs/report.png]

RUN_DIR is a pipeline run's directory (pipeline.local_root/<run name>); without it the script
runs the demo (`ftpipe run --config configs/demo.yaml`, 5 to 7 minutes on 2 cores, everything
under a temporary folder) and uses that run. The browser is the system's Chromium (`make
chromium`), driven by Playwright: nothing is downloaded. The whole page is captured and reduced
to 256 colours, so the file stays small enough for the README (about 250 KB for the demo).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIDTH = 1280
DEMO_DIRS = ("data.output_dir", "recommend.output_dir", "train.output_dir", "train.cache_dir",
             "tune.output_dir", "evaluate.output_dir", "pipeline.local_root")  # fmt: skip
"""The demo config's paths, moved under the temporary folder so the repo stays clean."""


def run_demo(root: Path) -> Path:
    """Run the demo pipeline with every output under `root`; its run directory."""
    overrides = [f"{key}={root / key.replace('.', '_')}" for key in DEMO_DIRS]
    overrides.append(f"registry.tracking_uri=sqlite:///{root / 'mlflow.db'}")
    command = [str(Path(sys.executable).parent / "ftpipe"), "run", "--config",
               str(REPO / "configs" / "demo.yaml"), *overrides]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return max((root / "pipeline_local_root").iterdir(), key=lambda p: p.stat().st_mtime)


def screenshot(report: Path) -> bytes:
    """The whole report, WIDTH CSS pixels wide, as PNG bytes."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("No Chromium installed: run `make chromium` (apt-get install chromium).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
        page.goto(report.as_uri(), wait_until="load")
        png = page.screenshot(full_page=True)
        browser.close()
    return png


def small_png(png: bytes) -> bytes:
    """`png` reduced to a 256-colour palette (text and plots survive; the file shrinks)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="a pipeline run's directory")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "report.png")
    args = parser.parse_args()
    from ftpipe.report import write_run_report

    with tempfile.TemporaryDirectory(prefix="ftpipe-demo-") as work:
        run_dir = args.run_dir or run_demo(Path(work))
        png = small_png(screenshot(write_run_report(run_dir)))
    args.output.write_bytes(png)
    print(f"Wrote {args.output} ({len(png) / 1024:.0f} KB) from {run_dir}")


if __name__ == "__main__":
    main()
