"""Screenshot of an HTML report in headless Chromium (the system's `chromium`; nothing is downloaded).

    .venv/bin/python scripts/report_screenshot.py report.html docs/report-screenshot.png [--scroll-to "#rows-table"]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("png")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1800)
    ap.add_argument("--scroll-to", default=None, help="CSS selector to bring to the top before the shot")
    args = ap.parse_args()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(Path(args.report).resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        if args.scroll_to:
            page.evaluate("s => window.scrollTo(0, document.querySelector(s).getBoundingClientRect().top"
                          " + window.scrollY - 80)", args.scroll_to)
        page.screenshot(path=args.png, full_page=False)
        browser.close()
    if errors:
        raise SystemExit(f"console errors: {errors}")


if __name__ == "__main__":
    main()
