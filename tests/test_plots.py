import math

import pandas as pd
from PIL import Image

from imhibench.io import write_table
from imhibench.plots import (
    CHART_SIZE,
    DPI,
    HEATMAP_SIZE,
    labeler_chart,
    metric_chart,
    write_confusion_heatmaps,
)


def assert_images(paths, size):
    """A PNG of the expected pixel size and an SVG document, both non-trivial."""
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (round(size[0] * DPI), round(size[1] * DPI))
        low, high = image.convert("L").getextrema()
        assert low < high  # something was drawn
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")


def test_metric_chart_marks_intervals_and_published_values(tmp_path):
    frame = pd.DataFrame({
        "model": ["Paper row", "m1", "m2"],
        "status": ["published only", "reproduced", "reproduced"],
        "DR": [math.nan, 80.0, 70.0], "DR_ci_low": [math.nan, 75.0, 60.0],
        "DR_ci_high": [math.nan, 84.0, 78.0], "DR_published": [94.0, 83.9, math.nan],
        "SAD": [math.nan, 50.0, math.nan], "SAD_ci_low": [math.nan, 45.0, math.nan],
        "SAD_ci_high": [math.nan, 55.0, math.nan], "SAD_published": [68.0, 62.2, math.nan],
    })  # fmt: skip
    paths = metric_chart(frame, ["DR", "SAD"], "Weighted F1", "weighted F1 (x100)",
                         tmp_path / "weighted_f1")  # fmt: skip
    assert_images(paths, CHART_SIZE)
    svg = paths[1].read_text()
    # whiskers of both models and the legend's published entry are drawn
    assert "published (hollow)" in svg and "m1" in svg and "m2" in svg


def test_confusion_heatmaps_per_job(tmp_path):
    labels = tmp_path / "labels.parquet"
    write_table(pd.DataFrame({"row_id": ["a", "b", "c"], "gold_label": ["yes", "no", "yes"],
                              "label_rule": ["yes", "yes", "maybe"]}), labels)  # fmt: skip
    paths = write_confusion_heatmaps({("m1", "DR"): labels}, "rule", {"DR": ["no", "yes"]},
                                     tmp_path / "confusion")  # fmt: skip
    assert paths == [tmp_path / "confusion" / "m1" / f"DR.{ext}" for ext in ("png", "svg")]
    assert_images(paths, HEATMAP_SIZE)
    svg = paths[1].read_text()
    assert "maybe" in svg  # an unexpected label gets its own column


def test_labeler_chart(tmp_path):
    rows = [("m1", "DR", "labeler_agreement", 75.0), ("m1", "DR", "ood", 1.0),
            ("m1", "DR", "n", 4.0), ("m2", "DR", "labeler_agreement", 50.0),
            ("m2", "DR", "ood", 0.0), ("m2", "DR", "n", 4.0)]  # fmt: skip
    summaries = pd.DataFrame(rows, columns=["model", "dataset", "metric", "value"])
    paths = labeler_chart(summaries, ["m1", "m2"], ["DR"], tmp_path / "labelers")
    assert_images(paths, CHART_SIZE)
    assert "out-of-domain" in paths[1].read_text()
