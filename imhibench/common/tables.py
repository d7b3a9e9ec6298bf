"""One table model, four renderings: Parquet (with schema metadata), Markdown, HTML and LaTeX.

A `Table` holds the data (`frame`, written to Parquet) and the text of every displayed cell
(`rows`), computed once, so that every format shows the same cells.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from imhibench.common.io import PROVENANCE_KEY, atomic_path

# Schema metadata key of the table's own description (units, labeler, scorer variant, ...).
TABLE_METADATA_KEY = b"imhibench.table"
MISSING = "-"


@dataclass(frozen=True)
class DisplayRow:
    """One displayed row: its label and one text per column; `kind` styles it (e.g. indented
    'published' / 'difference' rows under a reproduced model, or a 'published only' row)."""

    label: str
    cells: tuple[str, ...]
    kind: str = "result"
    bold: tuple[int, ...] = ()  # indices of cells shown in bold (e.g. the best per column)


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[DisplayRow]
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    corner: str = "model"
    # Jobs behind this table's "-" cells that were not run, one message each: listed in full
    # in the HTML page (the report) and the Parquet metadata, not in the Markdown or LaTeX.
    not_run: list[str] = field(default_factory=list)


def number(value: float | None, digits: int = 2, signed: bool = False) -> str:
    """A rounded number, '-' when missing; `signed` shows '+' on positive values. A value that
    rounds to zero is `0.00`, never `-0.00` or `+0.00`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return f"{0:.{digits}f}" if float(text) == 0 else text


def difference_as_shown(ours: float, theirs: float, digits: int = 2) -> float:
    """`ours - theirs` of the two values as `number` shows them (NaN when one is missing), so
    that a displayed difference is the difference of the displayed values."""
    shown = [number(v, digits) for v in (ours, theirs)]
    return math.nan if MISSING in shown else float(shown[0]) - float(shown[1])


def with_interval(
    value: float, low: float, high: float, digits: int = 2, signed: bool = False
) -> str:
    """`83.90 [80.10, 87.20]`; the value alone when the interval is missing."""
    text = number(value, digits, signed)
    bounds = [number(low, digits), number(high, digits)]
    if text == MISSING or MISSING in bounds:
        return text
    return f"{text} [{bounds[0]}, {bounds[1]}]"


# ---- Parquet ---------------------------------------------------------------------------------


def write_parquet(table: Table, path: str | Path, provenance: dict | None = None) -> None:
    """The table's data with its description (and the stage provenance) in the schema metadata."""
    arrow = pa.Table.from_pandas(table.frame, preserve_index=False)
    metadata = dict(arrow.schema.metadata or {})
    description = {"name": table.name, "title": table.title, "columns": table.columns}
    description["notes"] = table.notes
    description["not_run"] = table.not_run
    metadata[TABLE_METADATA_KEY] = json.dumps({**description, **table.metadata}).encode()
    if provenance is not None:
        metadata[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
    tmp = atomic_path(path)
    pq.write_table(arrow.replace_schema_metadata(metadata), tmp)
    os.replace(tmp, path)


def read_table_metadata(path: str | Path) -> dict:
    """The description `write_parquet` stored ({} if none)."""
    raw = (pq.read_schema(path).metadata or {}).get(TABLE_METADATA_KEY)
    return json.loads(raw) if raw else {}


# ---- Markdown --------------------------------------------------------------------------------


def _markdown_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_bold(text: str) -> str:
    """Bold text whose own asterisks (e.g. significance stars) stay literal."""
    return "**" + text.replace("*", "\\*") + "**"


def to_markdown(table: Table) -> str:
    """A GitHub Markdown table under a `##` title, notes as a list."""
    header = [table.corner, *table.columns]
    lines = [
        f"## {table.title}",
        "",
        "| " + " | ".join(_markdown_escape(h) for h in header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|",
    ]
    for row in table.rows:
        label = f"&nbsp;&nbsp;{row.label}" if row.kind in ("published", "difference") else row.label
        cells = [_markdown_escape(c) for c in row.cells]
        cells = [_markdown_bold(c) if i in row.bold else c for i, c in enumerate(cells)]
        lines.append("| " + " | ".join([_markdown_escape(label), *cells]) + " |")
    lines.append("")
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


# ---- HTML ------------------------------------------------------------------------------------

HTML_STYLE = (
    "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
    "td,th{padding:2px 8px;border-bottom:1px solid #ccc;text-align:right;white-space:nowrap}"
    "td:first-child,th:first-child{text-align:left}"
    "tr.published td,tr.difference td{color:#444;font-size:90%}"
    "tr.published td:first-child,tr.difference td:first-child{padding-left:2em}"
    "tr.published-only td,tr.agreement td{font-style:italic}"
)


def to_html_fragment(table: Table) -> str:
    """The `<table>` element (for pages that hold several tables)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in [table.corner, *table.columns])
    body = []
    for row in table.rows:
        texts = [html.escape(c) for c in row.cells]
        texts = [f"<b>{c}</b>" if i in row.bold else c for i, c in enumerate(texts)]
        cells = "".join(f"<td>{c}</td>" for c in (html.escape(row.label), *texts))
        body.append(f'<tr class="{html.escape(row.kind)}">{cells}</tr>')
    return (
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + ("\n</tbody>\n</table>")
    )


def html_page(title: str, body: str, style: str = HTML_STYLE) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def to_html(table: Table) -> str:
    """A standalone HTML page of the table (for `snakemake --report`)."""
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in table.notes)
    body = f"<h2>{html.escape(table.title)}</h2>\n{to_html_fragment(table)}\n"
    body += f"<ul>{notes}</ul>" if notes else ""
    if table.not_run:
        items = "".join(f"<li>{html.escape(m)}</li>" for m in table.not_run)
        summary = f"Not run ({len(table.not_run)})"
        body += f"\n<details><summary>{summary}</summary><ul>{items}</ul></details>"
    return html_page(table.title, body)


# ---- LaTeX -----------------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # Greek letters of the metric-validation tables, as math (pdflatex has no Greek text font).
    "α": r"$\alpha$",
    "ρ": r"$\rho$",
    "τ": r"$\tau$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs `table` float, ready to `\\input` (needs \\usepackage{booktabs,graphicx})."""
    spec = "l" + "r" * len(table.columns)
    header = " & ".join(latex_escape(h) for h in [table.corner, *table.columns])
    lines = [
        f"% {table.name}: generated by imhi-bench; needs \\usepackage{{booktabs,graphicx}}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(table.title)}}}",
        f"\\label{{tab:imhibench-{table.name.replace('_', '-')}}}",
        "\\resizebox{\\linewidth}{!}{%",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        f"{header} \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        label = latex_escape(row.label)
        if row.kind in ("published", "difference"):
            label = f"\\quad {label}"
        elif row.kind == "published-only":
            label = f"\\textit{{{label}}}"
        cells = [latex_escape(c) for c in row.cells]
        cells = [f"\\textbf{{{c}}}" if i in row.bold else c for i, c in enumerate(cells)]
        lines.append(" & ".join([label, *cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}}"]
    if table.notes:
        notes = " ".join(latex_escape(note) for note in table.notes)
        lines += ["\\par\\smallskip", f"{{\\footnotesize {notes}\\par}}"]
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


RENDERERS = {"md": to_markdown, "html": to_html, "tex": to_latex}


def write_table_files(
    table: Table, out_dir: str | Path, provenance: dict | None = None
) -> list[Path]:
    """`<name>.parquet`, `.md`, `.html` and `.tex` under `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{table.name}.parquet"]
    write_parquet(table, written[0], provenance)
    for ext, render in RENDERERS.items():
        path = out_dir / f"{table.name}.{ext}"
        tmp = atomic_path(path)
        tmp.write_text(render(table), encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
