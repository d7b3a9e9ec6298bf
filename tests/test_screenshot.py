import shutil

import pytest
from PIL import Image

from imhibench.aggregate.screenshot import BROWSERS, screenshot
from imhibench.common.errors import ImhiBenchError


@pytest.mark.skipif(
    not any(shutil.which(b) for b in BROWSERS), reason="no Chromium here (apt-get install chromium)"
)
def test_a_page_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html><body style='background:#fff'><h1>weighted F1</h1>"
                    "<table><tr><td>demo-llama</td><td>80.00 [75.00, 84.00]</td></tr></table>"
                    "</body></html>")  # fmt: skip
    out = screenshot(page, tmp_path / "shot.png", width=400, height=300)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (400, 300)
        low, high = image.convert("L").getextrema()
        assert low < 100 and high > 200  # dark text on a white page


@pytest.mark.skipif(not any(shutil.which(b) for b in BROWSERS), reason="no Chromium here")
def test_clicks_happen_before_the_capture(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html><body style='background:#fff'><ul><li><span>Tables</span>"
                    "<button onclick=\"document.body.style.background='#000'\">open</button>"
                    "</li></ul></body></html>")  # fmt: skip
    dark = screenshot(page, tmp_path / "dark.png", 300, 200, clicks=["Tables"])
    light = screenshot(page, tmp_path / "light.png", 300, 200)
    with Image.open(dark) as image:
        assert image.convert("L").getpixel((250, 150)) < 20  # the row's button was clicked
    with Image.open(light) as image:
        assert image.convert("L").getpixel((250, 150)) > 235


def test_missing_page_and_missing_browser_are_named(tmp_path, monkeypatch):
    with pytest.raises(ImhiBenchError, match=r"nope.html: no such HTML file"):
        screenshot(tmp_path / "nope.html", tmp_path / "x.png")
    page = tmp_path / "page.html"
    page.write_text("<html></html>")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ImhiBenchError, match="apt-get install -y chromium"):
        screenshot(page, tmp_path / "x.png")
