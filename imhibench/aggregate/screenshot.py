"""Render an HTML file (e.g. `snakemake --report report.html`) in headless Chromium and save a
PNG screenshot: proof that the report opens in a real browser, and the README's picture."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from imhibench.common.errors import ImhiBenchError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Enough virtual time for the report's JavaScript to build the page before the capture.
RENDER_BUDGET_MS = 10000
CLICK_INTERVAL_MS = 800

# A page that shows `page` in a full-window frame and then clicks, one after the other, the
# element whose text is each step (or the first link/button of the row holding it): how the
# screenshot opens e.g. Tables > results/tables/weighted_f1.html in the Snakemake report.
CLICKER = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>
html,body,iframe{margin:0;padding:0;border:0;width:100%;height:100%;overflow:hidden}</style>
</head><body><iframe id="page" src="__SRC__"></iframe><script>
const steps = __STEPS__;
function clickText(doc, text) {
  const hits = Array.from(doc.querySelectorAll("a,button,li,span,div,td,p"))
    .filter(e => e.textContent.trim() === text);
  if (!hits.length) return;
  const hit = hits[hits.length - 1];
  const row = hit.closest("li,tr") || hit.parentElement;
  const target = (row && row.querySelector("a,button")) || hit;
  target.dispatchEvent(new MouseEvent("click", {bubbles: true}));
}
document.getElementById("page").addEventListener("load", () => {
  const doc = document.getElementById("page").contentDocument;
  steps.forEach((text, i) => setTimeout(() => clickText(doc, text), __INTERVAL__ * (i + 1)));
});
</script></body></html>
"""


def find_browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    raise ImhiBenchError(
        f"no headless browser found (looked for {', '.join(BROWSERS)} on PATH); on Debian or "
        "Ubuntu: apt-get install -y chromium"
    )


def screenshot_command(browser: str, url: str, out: Path, width: int, height: int) -> list[str]:
    return [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--allow-file-access-from-files",  # the clicker page reaches into the local report
        f"--window-size={width},{height}", f"--virtual-time-budget={RENDER_BUDGET_MS}",
        f"--screenshot={out.resolve()}", url,
    ]  # fmt: skip


def clicker_page(page_url: str, clicks: Sequence[str]) -> str:
    return (
        CLICKER.replace("__SRC__", page_url)
        .replace("__STEPS__", json.dumps(list(clicks)))
        .replace("__INTERVAL__", str(CLICK_INTERVAL_MS))
    )


def screenshot(
    page: str | Path,
    out: str | Path,
    width: int = 1280,
    height: int = 800,
    clicks: Sequence[str] = (),
) -> Path:
    """Render `page` (a local HTML file), click the elements whose texts are `clicks` in turn,
    and write a `width` x `height` PNG to `out`."""
    page, out = Path(page), Path(out)
    if not page.is_file():
        raise ImhiBenchError(f"{page}: no such HTML file (make it with snakemake --report)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    browser = find_browser()
    with tempfile.TemporaryDirectory() as tmp:
        url = page.resolve().as_uri()
        if clicks:
            clicker = Path(tmp) / "clicker.html"
            clicker.write_text(clicker_page(url, clicks), encoding="utf-8")
            url = clicker.as_uri()
        command = screenshot_command(browser, url, out, width, height)
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
    parser.add_argument(
        "--click",
        action="append",
        default=[],
        help="text of an element to click before the capture (repeat for several, in order), "
        "e.g. --click Tables --click results/tables/weighted_f1.html",
    )
    args = parser.parse_args(argv)
    print(screenshot(args.page, args.out, args.width, args.height, args.click))
