"""Figures of the aggregate stage, each saved as PNG and SVG.

matplotlib's object API without pyplot: no GUI backend, no global state (Agg renders PNG).

Readable in greyscale: models differ by marker shape or bar hatch, not by colour alone.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from imhibench.common.io import atomic_path

FORMATS = ("png", "svg")
DPI = 100
CHART_SIZE = (9.0, 4.5)  # inches: 900 x 450 px at DPI
HEATMAP_SIZE = (5.0, 4.5)  # 500 x 450 px
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
HATCHES = ("", "//", "..", "xx", "\\\\", "--", "++", "oo", "**", "||")
GREYS = ("0.0", "0.35", "0.55", "0.2", "0.45", "0.65", "0.1", "0.3", "0.5", "0.6")
# Characters per line of wrapped titles and axis labels: long ones (a table title with its
# scorer variant, the units of a metric) wrap instead of running off the canvas.
TITLE_WIDTH = 90
YLABEL_WIDTH = 45
# Drawn at the foot of a bar whose value is missing (no job, no data), unlike a bar of 0 ("0").
MISSING_TEXT = "×"
MISSING_LABEL = "× no value (job not run)"


def _subplots(*grid: int, figsize: tuple[float, float]):
    figure = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    return figure, figure.subplots(*grid)


def save(figure, out_base: str | Path) -> list[Path]:
    """`<out_base>.png` and `.svg`, each written atomically."""
    out_base = Path(out_base)
    written = []
    for ext in FORMATS:
        path = out_base.with_name(f"{out_base.name}.{ext}")
        tmp = atomic_path(path)
        figure.savefig(tmp, format=ext, dpi=DPI)
        tmp.replace(path)
        written.append(path)
    return written


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def model_label(row: Mapping, datasets: Sequence[str]) -> str:
    """A model's legend entry: its name, `random weights` if so, and its rows per test set."""
    notes = ["random weights"] if bool(row.get("random_weights", False)) else []
    counts = sorted({int(n) for d in datasets if _finite(n := row.get(f"{d}_n"))})
    if counts:
        notes.append(f"n={counts[0]}" if len(counts) == 1 else f"n={counts[0]}-{counts[-1]}")
    return f"{row['model']} ({', '.join(notes)})" if notes else str(row["model"])


def metric_chart(
    frame: pd.DataFrame,
    datasets: Sequence[str],
    title: str,
    ylabel: str,
    out_base: str | Path,
    interval: str = "95% interval",
) -> list[Path]:
    """`metric_figure` saved as `<out_base>.png|svg`."""
    return save(metric_figure(frame, datasets, title, ylabel, interval), out_base)


def metric_figure(
    frame: pd.DataFrame,
    datasets: Sequence[str],
    title: str,
    ylabel: str,
    interval: str = "95% interval",
) -> Figure:
    """Dot chart of a results table (the Parquet frame of `imhibench.aggregate.build.metric_table`):
    one marker per reproduced model and test set, its 95% interval as whiskers where present
    (`interval` names it in the legend), and the published value as a hollow marker of the
    same shape. The legend sits outside the plot, below it."""
    reproduced = frame[frame["status"] == "reproduced"].reset_index(drop=True)
    figure, axes = _subplots(figsize=CHART_SIZE)
    width = 0.8 / max(len(reproduced), 1)
    x = np.arange(len(datasets))
    any_published = any_interval = False
    for i, row in reproduced.iterrows():
        offset = x - 0.4 + width * (i + 0.5)
        marker, grey = MARKERS[i % len(MARKERS)], GREYS[i % len(GREYS)]
        values = np.array([row.get(d, np.nan) for d in datasets], dtype=float)
        low = np.array([row.get(f"{d}_ci_low", np.nan) for d in datasets], dtype=float)
        high = np.array([row.get(f"{d}_ci_high", np.nan) for d in datasets], dtype=float)
        errors = None
        if np.isfinite(low).any():
            any_interval = True
            errors = np.vstack([values - low, high - values])
        axes.errorbar(
            offset,
            values,
            yerr=errors,
            fmt=marker,
            color=grey,
            ecolor=grey,
            capsize=3,
            markersize=7,
            label=model_label(row, datasets),
        )
        published = np.array([row.get(f"{d}_published", np.nan) for d in datasets], dtype=float)
        if np.isfinite(published).any():
            any_published = True
            axes.plot(
                offset,
                published,
                linestyle="none",
                marker=marker,
                markersize=9,
                markerfacecolor="none",
                markeredgecolor="black",
                markeredgewidth=1.2,
            )
    if any_published:
        axes.plot(
            [],
            [],
            linestyle="none",
            marker="o",
            markerfacecolor="none",
            markeredgecolor="black",
            label="published (hollow)",
        )
    if any_interval:
        axes.errorbar([], [], yerr=[], fmt="none", ecolor="black", capsize=3, label=interval)
    axes.set_xticks(x, list(datasets), rotation=30 if len(datasets) > 6 else 0)
    axes.set_xlim(-0.6, len(datasets) - 0.4)
    axes.set_xlabel("test set")
    axes.set_ylabel(_wrap(ylabel, YLABEL_WIDTH))
    axes.set_title(_wrap(title, TITLE_WIDTH), fontsize=10)
    axes.grid(axis="y", color="0.85")
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=3)
    return figure


def confusion_heatmap(
    gold: Sequence[str],
    predicted: Sequence[str],
    labels: Sequence[str],
    title: str,
    out_base: str | Path,
) -> list[Path]:
    """Counts of gold (rows) vs predicted (columns) labels, in greys, each cell annotated."""
    from sklearn.metrics import confusion_matrix  # seconds to import: only when drawn

    matrix = confusion_matrix(gold, predicted, labels=list(labels))
    figure, axes = _subplots(figsize=HEATMAP_SIZE)
    image = axes.imshow(matrix, cmap="Greys", vmin=0, vmax=max(int(matrix.max()), 1))
    threshold = matrix.max() / 2
    for (i, j), count in np.ndenumerate(matrix):
        axes.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if count > threshold else "black",
        )
    ticks = range(len(labels))
    axes.set_xticks(ticks, list(labels), rotation=45, ha="right", fontsize=8)
    axes.set_yticks(ticks, list(labels), fontsize=8)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("gold label")
    figure.suptitle(title, fontsize=9)  # above the colour bar too
    figure.colorbar(image, ax=axes, label="rows")
    return save(figure, out_base)


def labeler_chart(
    summaries: pd.DataFrame,
    models: Sequence[str],
    datasets: Sequence[str],
    out_base: str | Path,
) -> list[Path]:
    """`labeler_figure` saved as `<out_base>.png|svg`."""
    return save(labeler_figure(summaries, models, datasets), out_base)


def labeler_figure(
    summaries: pd.DataFrame, models: Sequence[str], datasets: Sequence[str]
) -> Figure:
    """Two panels of hatched bars per model and test set: MentalBERT-vs-rule agreement (% of
    rows with the same label) and the rule labeler's out-of-domain rate (% of rows). A 0% bar
    is labelled `0`, a missing value `×`; the legend sits below the panels, and the y axis
    runs past 100% so that a full bar stays clear of the frame."""

    def value(model: str, dataset: str, metric: str) -> float:
        found = summaries[
            (summaries["model"] == model)
            & (summaries["dataset"] == dataset)
            & (summaries["metric"] == metric)
        ]
        return float(found["value"].iloc[0]) if len(found) else math.nan

    panels = {
        "MentalBERT vs rule labeler agreement (% of rows)": {
            (m, d): value(m, d, "labeler_agreement") for m in models for d in datasets
        },
        "Rule labeler out-of-domain rate (% of rows)": {
            (m, d): 100.0 * value(m, d, "ood") / value(m, d, "n") for m in models for d in datasets
        },
    }
    figure, all_axes = _subplots(1, 2, figsize=CHART_SIZE)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(datasets))
    for axes, (title, values) in zip(all_axes, panels.items(), strict=True):
        for i, model in enumerate(models):
            heights = [values[model, d] for d in datasets]
            positions = x - 0.4 + width * (i + 0.5)
            for position, height in zip(positions, heights, strict=True):
                if math.isnan(height) or height == 0:
                    text = MISSING_TEXT if math.isnan(height) else "0"
                    axes.text(position, 1, text, ha="center", va="bottom", fontsize=7)
            axes.bar(
                positions,
                np.nan_to_num(heights),
                width,
                color="0.85" if i == 0 else "white",  # the unhatched first model is filled
                edgecolor=GREYS[i % len(GREYS)] if i else "black",
                hatch=HATCHES[i % len(HATCHES)],
                label=model,
            )
        axes.set_xticks(x, list(datasets), rotation=30 if len(datasets) > 4 else 0, fontsize=8)
        axes.set_ylim(0, 112)
        axes.set_yticks(range(0, 101, 20))
        axes.set_xlabel("test set")
        axes.set_ylabel("% of rows")
        axes.set_title(_wrap(title, TITLE_WIDTH // 2), fontsize=9)
    handles, labels = all_axes[0].get_legend_handles_labels()
    if any(math.isnan(v) for values in panels.values() for v in values.values()):
        handles.append(Line2D([], [], linestyle="none", marker="$×$", color="black"))
        labels.append(MISSING_LABEL)
    figure.legend(handles, labels, fontsize=7, loc="outside lower center", ncols=3)
    return figure


def write_confusion_heatmaps(
    label_paths: Mapping[tuple[str, str], str | Path],
    labeler: str,
    task_labels: Mapping[str, Sequence[str]],
    out_dir: str | Path,
) -> list[Path]:
    """`<out_dir>/<model>/<dataset>.png|svg` per job, from its label file."""
    from imhibench.common.io import read_table
    from imhibench.score.metrics.correctness import label_order

    written = []
    for (model, dataset), path in label_paths.items():
        labels = read_table(path, ["gold_label", f"label_{labeler}"])
        gold, predicted = labels["gold_label"].tolist(), labels[f"label_{labeler}"].tolist()
        order = label_order(task_labels[dataset], gold, predicted)
        out_base = Path(out_dir) / model / dataset
        out_base.parent.mkdir(parents=True, exist_ok=True)
        title = f"{model} on {dataset}: gold vs {labeler} labels ({len(gold)} rows)"
        written += confusion_heatmap(gold, predicted, order, title, out_base)
    return written


def write_plots(
    table_paths: Sequence[str | Path],
    all_metrics_path: str | Path,
    label_paths: Mapping[tuple[str, str], str | Path],
    labeler: str,
    task_labels: Mapping[str, Sequence[str]],
    out_dir: str | Path,
    labeler_comparison: bool,
) -> list[Path]:
    """Every figure of the aggregate stage under `out_dir`: `<table>.png|svg` per results table,
    `confusion/<model>/<dataset>.png|svg` per job and, when both labelers ran,
    `labelers.png|svg`."""
    from imhibench.aggregate.notes import seed_text
    from imhibench.common.io import read_table
    from imhibench.common.tables import read_table_metadata

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in map(Path, table_paths):
        frame = read_table(path, ["model", "status"])
        meta = read_table_metadata(path)
        datasets = meta["columns"]
        seeds = meta.get("bootstrap_seeds") or []
        interval = "95% bootstrap interval" + (f" ({seed_text(seeds)})" if seeds else "")
        written += metric_chart(
            frame, datasets, meta["title"], meta["units"], out_dir / path.stem, interval
        )
    written += write_confusion_heatmaps(label_paths, labeler, task_labels, out_dir / "confusion")
    if labeler_comparison:
        summaries = read_table(all_metrics_path, ["model", "dataset", "metric", "value"])
        models = list(dict.fromkeys(model for model, _ in label_paths))
        datasets = list(dict.fromkeys(dataset for _, dataset in label_paths))
        written += labeler_chart(summaries, models, datasets, out_dir / "labelers")
    return written


def correlation_heatmap(
    found: pd.DataFrame,
    agreement: pd.DataFrame,
    metrics: Sequence[str],
    aspects: Sequence[str],
    agreement_label: str,
    title: str,
    out_base: str | Path,
) -> list[Path]:
    """Metric x aspect heat map of one correlation statistic, one panel per scope (columns
    scope, metric, aspect, value, ci_low, ci_high of `found`), each cell annotated with its
    value and 95% interval; the annotators' agreement (`agreement`: scope, aspect, alpha) is
    the top row of each panel. The best metric per aspect is framed."""
    scope_names = list(dict.fromkeys(found["scope"]))
    labels = [agreement_label, *metrics]
    width = 2.2 + 2.6 * len(scope_names)
    height = 1.2 + 0.5 * len(labels)
    figure, axes = _subplots(1, len(scope_names), figsize=(width, height))
    axes = np.atleast_1d(axes)
    image = None
    for index, (panel, scope) in enumerate(zip(axes, scope_names, strict=True)):
        rows = found[found["scope"] == scope].set_index(["metric", "aspect"])
        alpha = agreement[agreement["scope"] == scope].set_index("aspect")["alpha"]
        values = np.array(
            [[alpha[a] for a in aspects]]
            + [[rows.loc[(m, a), "value"] for a in aspects] for m in metrics],
            dtype=float,
        )
        image = panel.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        best = {
            a: max(metrics, key=lambda m, a=a: np.nan_to_num(rows.loc[(m, a), "value"], nan=-2))
            for a in aspects
        }
        for i, label in enumerate(labels):
            for j, aspect in enumerate(aspects):
                value = values[i, j]
                text = "-" if not _finite(value) else f"{value:.2f}"
                if i > 0 and _finite(value):
                    cell = rows.loc[(label, aspect)]
                    if _finite(cell["ci_low"]):
                        text += f"\n[{cell['ci_low']:.2f}, {cell['ci_high']:.2f}]"
                panel.text(
                    j, i, text, ha="center", va="center", fontsize=6,
                    color="white" if _finite(value) and abs(value) > 0.6 else "black",
                )  # fmt: skip
                if i > 0 and best[aspect] == label:
                    panel.add_patch(
                        Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black")
                    )
        panel.axhline(0.5, color="black", lw=1)
        panel.set_xticks(range(len(aspects)), list(aspects), rotation=30, ha="right", fontsize=7)
        panel.set_yticks(range(len(labels)), labels if index == 0 else [""] * len(labels))
        panel.tick_params(axis="y", labelsize=7)
        panel.set_title(scope, fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.colorbar(image, ax=list(axes), label="correlation", shrink=0.8)
    return save(figure, out_base)
