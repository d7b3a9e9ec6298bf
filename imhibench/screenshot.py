"""Render an HTML file (e.g. `snakemake --report report.html`) in headless Chromium and save a
PNG screenshot: proof that the report opens in a real browser, and the README's picture."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from imhibench.errors import ImhiBenchError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Enough virtual time for the report's JavaScript to build the page before the capture.
RENDER_BUDGET_MS = 10000


def find_browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    raise ImhiBenchError(
        f"no headless browser found (looked for {', '.join(BROWSERS)} on PATH); on Debian or "
        "Ubuntu: apt-get install -y chromium"
    )


def screenshot_command(
    browser: str, page: Path, out: Path, width: int, height: int, fragment: str = ""
) -> list[str]:
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    return [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        f"--window-size={width},{height}", f"--virtual-time-budget={RENDER_BUDGET_MS}",
        f"--screenshot={out.resolve()}", url,
    ]  # fmt: skip


def screenshot(
    page: str | Path, out: str | Path, width: int = 1280, height: int = 800, fragment: str = ""
) -> Path:
    """Render `page` (a local HTML file) and write a `width` x `height` PNG to `out`."""
    page, out = Path(page), Path(out)
    if not page.is_file():
        raise ImhiBenchError(f"{page}: no such HTML file (make it with snakemake --report)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    command = screenshot_command(find_browser(), page, out, width, height, fragment)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not out.is_file():
        raise ImhiBenchError(
            f"{page}: the browser made no screenshot (exit {result.returncode}): "
            f"{result.stderr[-1500:]}"
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("page", help="HTML file, e.g. report.html")
    parser.add_argument("out", help="PNG to write, e.g. docs/report.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--fragment", default="", help="URL fragment to open (after '#')")
    args = parser.parse_args(argv)
    print(screenshot(args.page, args.out, args.width, args.height, args.fragment))
