import math

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from PIL import Image

from imhibench.aggregate.plots import (
    CHART_SIZE,
    DPI,
    HEATMAP_SIZE,
    MISSING_LABEL,
    MISSING_TEXT,
    labeler_chart,
    labeler_figure,
    metric_chart,
    metric_figure,
    write_confusion_heatmaps,
)
from imhibench.common.io import write_table


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


# The demo's longest title and units (the BART-score table with its variant), which were cut.
LONG_TITLE = (
    "Explanation quality: BART-score (mean log-likelihood, higher is better), "
    "expert-written explanation sets [bart-score + unidentified weights file 3fa2c1d09e1b]"
)
LONG_UNITS = "BARTScore: mean token log-likelihood of the gold answer given the response"


def assert_inside_canvas(figure):
    """Every artist (titles, axis labels, tick labels, legend) within the canvas: the figure's
    tight bounding box, in pixels, inside its (0, 0, width, height) box."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    tight = figure.get_tightbbox(canvas.get_renderer()).transformed(figure.dpi_scale_trans)
    box = figure.bbox
    assert tight.x0 >= box.x0 and tight.y0 >= box.y0, (tight, box)
    assert tight.x1 <= box.x1 and tight.y1 <= box.y1, (tight, box)
    return canvas.get_renderer()


def _bars(axes):
    return [p for p in axes.patches if isinstance(p, Rectangle) and p.get_height() > 0]


def test_metric_figure_keeps_a_long_title_and_label_on_the_canvas():
    frame = pd.DataFrame({
        "model": ["demo-llama", "MentaLLaMA-examples"], "status": ["reproduced"] * 2,
        "random_weights": [True, False], "DR-expert": [-6.5, -3.1],
        "DR-expert_n": [4.0, 35.0], "SAD-expert": [math.nan, -3.3], "SAD-expert_n": [math.nan, 35],
    })  # fmt: skip
    figure = metric_figure(frame, ["DR-expert", "SAD-expert"], LONG_TITLE, LONG_UNITS)
    renderer = assert_inside_canvas(figure)
    axes = figure.axes[0]
    title = axes.title.get_window_extent(renderer)
    assert "3fa2c1d09e1b]" in axes.get_title()  # the whole title is drawn, wrapped
    assert title.x1 <= figure.bbox.x1 and title.y1 <= figure.bbox.y1
    legend = figure.legends[0]
    assert not title.overlaps(legend.get_window_extent(renderer))
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["demo-llama (random weights, n=4)", "MentaLLaMA-examples (n=35)"]


def test_metric_figure_names_the_bootstrap_seed_of_its_whiskers():
    frame = pd.DataFrame({"model": ["m1"], "status": ["reproduced"], "DR": [80.0],
                          "DR_ci_low": [75.0], "DR_ci_high": [84.0]})  # fmt: skip
    figure = metric_figure(frame, ["DR"], "t", "u", "95% bootstrap interval (seed 42)")
    assert_inside_canvas(figure)
    texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert texts == ["m1", "95% bootstrap interval (seed 42)"]


def test_labeler_figure_legend_clear_of_bars_full_bars_below_the_frame_zero_vs_missing():
    rows = [("m1", "DR", "labeler_agreement", 100.0), ("m1", "DR", "ood", 0.0),
            ("m1", "DR", "n", 4.0), ("m2", "DR", "ood", 2.0), ("m2", "DR", "n", 4.0),
            ("m1", "SAD", "labeler_agreement", 50.0), ("m1", "SAD", "ood", 1.0),
            ("m1", "SAD", "n", 4.0), ("m2", "SAD", "labeler_agreement", 75.0),
            ("m2", "SAD", "ood", 1.0), ("m2", "SAD", "n", 4.0)]  # fmt: skip
    summaries = pd.DataFrame(rows, columns=["model", "dataset", "metric", "value"])
    figure = labeler_figure(summaries, ["m1", "m2"], ["DR", "SAD"])
    renderer = assert_inside_canvas(figure)
    legend = figure.legends[0].get_window_extent(renderer)
    agreement, ood = figure.axes
    for axes in (agreement, ood):
        for bar in _bars(axes):
            assert not legend.overlaps(bar.get_window_extent(renderer))
        assert axes.get_ylim()[1] > 100  # a 100% bar does not touch the frame
    # m2 has no agreement on DR (missing): "n/a"; m1's OOD rate on DR is 0%: "0"
    assert [t.get_text() for t in agreement.texts] == [MISSING_TEXT]
    assert [t.get_text() for t in ood.texts] == ["0"]
    assert MISSING_TEXT != "0"
    assert MISSING_LABEL in [t.get_text() for t in figure.legends[0].get_texts()]
