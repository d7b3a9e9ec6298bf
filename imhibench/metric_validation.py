"""Metric validation: the explanation metrics against upstream's human ratings of explanations.

Upstream released three CSV files of DR explanations rated by three annotators on four aspects
(`human_evaluation/DR_annotation/`): `text` (the Reddit post), `label` (DR label 0/1), the
explanation in a column named after the system that wrote it (`gpt-3.5-turbo` = ChatGPT,
`curie-instruct-beta` = InstructGPT-3) and one cell per aspect holding the three ratings as a
string such as ``"[3, 3, 2]"`` (0-3). The paper chose BARTScore for its explanation table
because it correlated moderately with these ratings; this module regenerates that evidence for
every configured explanation metric.

Every explanation is scored with `imhibench.metrics.compute_explanation_metrics`, the code of
the score stage, with the **post as the reference text** (the files hold no other text to
compare with). Each metric is then correlated with the annotators' mean rating per aspect, per
file and pooled over the files (Pearson, Spearman, Kendall tau-b: scipy's value and p-value,
and a seeded percentile bootstrap 95% interval resampling rows), beside the annotators'
agreement with each other (Krippendorff's alpha, ordinal, from the `krippendorff` package).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imhibench.errors import ImhiBenchError
from imhibench.io import read_csv_text
from imhibench.metrics.correctness import BOOTSTRAP_RESAMPLES, bootstrap_indices
from imhibench.tables import MISSING, DisplayRow, Table, number

log = logging.getLogger(__name__)

ASPECTS = ("fluency", "completeness", "reliability", "overall")
ANNOTATORS = 3
RATING_MIN, RATING_MAX = 0, 3
POST_COLUMN, LABEL_COLUMN = "text", "label"
DR_LABELS = ("0", "1")
# The explanation's column names the system that wrote it.
SYSTEMS = {"gpt-3.5-turbo": "ChatGPT", "curie-instruct-beta": "InstructGPT-3"}
# The tidy ratings table: one row per (file, data row, aspect, annotator).
RATING_COLUMNS = [
    "file", "row", "system", "dr_label", "post", "explanation", "aspect", "annotator", "rating",
]  # fmt: skip
POOLED = "pooled"
STATISTICS = {"spearman": "Spearman ρ", "pearson": "Pearson r", "kendall": "Kendall τb"}
TABLE_PREFIX = "metric_validation"
# Parquet files beside the tables: per-row metric scores with mean ratings; the tidy ratings.
DATA_TABLES = (f"{TABLE_PREFIX}_scores", f"{TABLE_PREFIX}_ratings")
PLOT_NAME = TABLE_PREFIX  # results/plots/<PLOT_NAME>.png/.svg: the Spearman heat map
RATINGS_DIR = "resources/imhi/human_ratings"  # where the pipeline fetches the rating files
ALPHA_LABEL = "annotators: Krippendorff α (ceiling)"
REFERENCE_NOTE = (
    "Every metric scores the rated explanation against the Reddit post as its reference text: "
    "the rating files hold no gold explanation to compare with, so these numbers say how well "
    "post-explanation overlap or likelihood tracks the ratings, not how the metrics behave "
    "against IMHI's gold answers."
)
PUBLISHED_NOTE = (
    "Published correlations are not shown: the correlation table of Yang et al. (2023) / "
    "MentaLLaMA was not found in a citable source (docs/metrics.md)."
)


def table_names() -> list[str]:
    """The stage's display tables, one per correlation statistic."""
    return [f"{TABLE_PREFIX}_{statistic}" for statistic in STATISTICS]


# ---- reading the ratings -------------------------------------------------------------------


def parse_rating_cell(text: str, where: str) -> list[int]:
    """The annotators' ratings of one cell such as ``"[3, 3, 2]"``; errors name `where`."""
    try:
        values = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        values = None
    if not isinstance(values, list):
        raise ImhiBenchError(f"{where}: {text!r} is not a list of ratings such as '[3, 3, 2]'")
    if len(values) != ANNOTATORS:
        raise ImhiBenchError(
            f"{where}: {text!r} holds {len(values)} rating(s); expected one per annotator "
            f"({ANNOTATORS})"
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ImhiBenchError(f"{where}: {value!r} in {text!r} is not an integer rating")
        if not RATING_MIN <= value <= RATING_MAX:
            raise ImhiBenchError(
                f"{where}: rating {value} in {text!r} is outside {RATING_MIN}-{RATING_MAX}"
            )
    return values


def read_ratings(path: str | Path, name: str | None = None) -> pd.DataFrame:
    """One rating file (upstream's layout) as the tidy table of `RATING_COLUMNS`; `file` is
    `name` (default: the file's stem), `row` the 1-based data row. Every problem names the
    file, and for a bad cell its data row and column."""
    path = Path(path)
    name = name or path.stem
    df = read_csv_text(path, "rating file")
    systems = [column for column in SYSTEMS if column in df.columns]
    missing = [c for c in (POST_COLUMN, LABEL_COLUMN, *ASPECTS) if c not in df.columns]
    if missing or len(systems) != 1:
        raise ImhiBenchError(
            f"{path}: a rating file has the columns {POST_COLUMN!r}, {LABEL_COLUMN!r}, one "
            f"explanation column ({' or '.join(map(repr, SYSTEMS))}) and {list(ASPECTS)}; "
            f"found {list(df.columns)}"
        )
    if df.empty:
        raise ImhiBenchError(f"{path}: the file has a header but no rows")
    system_column = systems[0]
    records = []
    for index, row in enumerate(df.itertuples(index=False)):
        values = dict(zip(df.columns, row, strict=True))
        number_ = index + 1
        if values[LABEL_COLUMN].strip() not in DR_LABELS:
            raise ImhiBenchError(
                f"{path}: data row {number_}, column {LABEL_COLUMN!r}: "
                f"{values[LABEL_COLUMN]!r} is not a DR label {list(DR_LABELS)}"
            )
        for aspect in ASPECTS:
            where = f"{path}: data row {number_}, column {aspect!r}"
            for annotator, rating in enumerate(parse_rating_cell(values[aspect], where), 1):
                records.append(
                    (
                        name, number_, SYSTEMS[system_column], int(values[LABEL_COLUMN]),
                        values[POST_COLUMN], values[system_column], aspect, annotator, rating,
                    )
                )  # fmt: skip
    return pd.DataFrame.from_records(records, columns=RATING_COLUMNS)


def read_rating_files(paths: Mapping[str, str | Path]) -> pd.DataFrame:
    """Every file (name -> path) in one tidy table, files in the given order."""
    if not paths:
        raise ImhiBenchError("metric validation: no rating files given")
    return pd.concat([read_ratings(p, name) for name, p in paths.items()], ignore_index=True)


def rated_explanations(ratings: pd.DataFrame) -> pd.DataFrame:
    """One row per rated explanation: row_id (``<file>:<row>``), file, row, system, dr_label,
    post, explanation and the annotators' mean rating per aspect (`mean_<aspect>`), in file
    order."""
    keys = ["file", "row", "system", "dr_label", "post", "explanation"]
    explained = ratings.drop_duplicates(["file", "row"])[keys]
    means = ratings.groupby(["file", "row", "aspect"])["rating"].mean().unstack("aspect")
    means = means[list(ASPECTS)].add_prefix("mean_")
    explained = explained.join(means, on=["file", "row"]).reset_index(drop=True)
    explained.insert(0, "row_id", explained["file"] + ":" + explained["row"].astype(str))
    return explained


def write_rated_explanations(
    rating_paths: Mapping[str, str | Path], responses_out: str | Path, test_set_out: str | Path
) -> pd.DataFrame:
    """The rated explanations as the inputs of a model metric's job (`run_model_metric`): the
    explanations as responses (row_id, response) and the posts as a test set (row_id, query =
    the post, which the judge is shown; gold_answer = the post, the reference every metric of
    the stage uses), with the rating files' sha256 as provenance."""
    from imhibench.io import write_table
    from imhibench.provenance import build_provenance, sha256_file

    explained = rated_explanations(read_rating_files(rating_paths))
    provenance = build_provenance(
        "rated_explanations",
        ratings={
            name: {"path": str(p), "sha256": sha256_file(p)} for name, p in rating_paths.items()
        },
        reference="post",
    )
    responses = pd.DataFrame({"row_id": explained["row_id"], "response": explained["explanation"]})
    posts = pd.DataFrame(
        {
            "row_id": explained["row_id"],
            "query": explained["post"],
            "gold_answer": explained["post"],
        }
    )
    write_table(responses, responses_out, provenance)
    write_table(posts, test_set_out, provenance)
    return explained


# ---- scoring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRun:
    """One way of running a registered metric: its registry name, options and a suffix that
    tells variants of one metric apart in the column names (e.g. the BARTScore variants)."""

    metric: str
    options: dict[str, Any]
    variant: str | None = None


def metric_runs(
    settings: Mapping[str, dict], bart_variant_names: Mapping[bool, str]
) -> list[MetricRun]:
    """The metrics to correlate: every configured metric as configured, and BARTScore also
    without the ParaBank2 weights when the config loads them (the variants a user compares).
    `bart_variant_names` maps "weights loaded" to the variant's name."""
    runs = []
    for name, options in settings.items():
        if name != "bart_score":
            runs.append(MetricRun(name, dict(options or {})))
            continue
        if options.get("weights_file"):
            runs.append(MetricRun(name, dict(options), bart_variant_names[True]))
        runs.append(MetricRun(name, {**options, "weights_file": None}, bart_variant_names[False]))
    return runs


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No per-call progress lines while a metric scores one row at a time."""
    progress = logging.getLogger("imhibench.generate.progress")
    level = progress.level
    progress.setLevel(logging.WARNING)
    try:
        yield
    finally:
        progress.setLevel(level)


def score_rows(
    explanations: Sequence[str], posts: Sequence[str], run: MetricRun, device: str
) -> dict[str, list[float]]:
    """Per-row scores of one metric run through the score stage's code, the post as the
    reference. A metric without per-row columns (BLEU is a corpus metric) is scored one row at
    a time: its corpus value on a one-row corpus (for BLEU: unsmoothed sentence BLEU)."""
    from imhibench.metrics import compute_explanation_metrics

    predictions, references = list(explanations), list(posts)
    columns, summary = compute_explanation_metrics(
        predictions, references, {run.metric: run.options}, device=device
    )
    if not columns:
        columns = {key: [] for key in summary}
        with _quiet_progress():
            for prediction, reference in zip(predictions, references, strict=True):
                _, one = compute_explanation_metrics(
                    [prediction], [reference], {run.metric: run.options}, device=device
                )
                for key in columns:
                    columns[key].append(float(one[key]))
    if run.variant is None:
        return columns
    return {f"{key} [{run.variant}]": values for key, values in columns.items()}


def score_explanations(
    explained: pd.DataFrame, runs: Sequence[MetricRun], device: str
) -> tuple[pd.DataFrame, list[str]]:
    """`explained` with one column per metric score; and the metric column names."""
    scored = explained.copy()
    metrics: list[str] = []
    for run in runs:
        log.info("scoring %d explanations with %s", len(scored), run.variant or run.metric)
        for column, values in score_rows(
            scored["explanation"], scored["post"], run, device
        ).items():
            if column in scored.columns:
                raise ImhiBenchError(f"metric validation: two metric runs write column {column!r}")
            scored[column] = values
            metrics.append(column)
    return scored, metrics


def merge_model_metrics(
    scored: pd.DataFrame, paths: Mapping[str, str | Path]
) -> tuple[pd.DataFrame, list[str], dict[str, dict]]:
    """`scored` with the per-row columns of each model metric's job over the rated
    explanations (metric -> file written by `run_model_metric`), the added column names and
    each job's provenance record (`imhibench.score.model_metric_record`)."""
    from imhibench.score import model_metric_record, read_model_metric

    metrics: list[str] = []
    records = {}
    for metric, path in paths.items():
        columns, _, provenance = read_model_metric(str(path), scored["row_id"].tolist())
        added = [c for c in columns.columns if c != "row_id"]
        clash = [c for c in added if c in scored.columns]
        if clash:
            raise ImhiBenchError(f"metric validation: {path} writes existing column(s) {clash}")
        scored = scored.merge(columns, on="row_id", how="left", validate="one_to_one")
        metrics += added
        records[metric] = model_metric_record(str(path), provenance)
    return scored, metrics, records


# ---- correlations --------------------------------------------------------------------------


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of two (resamples, rows) arrays; NaN where one is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denominator
    r[denominator == 0] = np.nan
    return np.clip(r, -1.0, 1.0)


def _kendall_tau_b_of_resamples(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each bootstrap resample, given as (resamples, rows) draw counts.

    For a resample drawing row i w_i times: concordant minus discordant pairs = w S w / 2 with
    S_ij = sign(x_i - x_j) sign(y_i - y_j); pairs tied in x = (w T w - m) / 2 with T_ij =
    [x_i == x_j] (copies of one row are tied with each other); tau-b = (C - D) /
    sqrt((n0 - ties_x)(n0 - ties_y)), n0 = m(m - 1)/2, as scipy's `kendalltau`.
    """
    m = counts.sum(axis=1)
    concordance = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    ties_x = (x[:, None] == x[None, :]).astype(float)
    ties_y = (y[:, None] == y[None, :]).astype(float)

    def quadratic(matrix: np.ndarray) -> np.ndarray:
        return ((counts @ matrix) * counts).sum(axis=1)

    n0 = m * (m - 1) / 2
    numerator = quadratic(concordance) / 2
    untied_x = n0 - (quadratic(ties_x) - m) / 2
    untied_y = n0 - (quadratic(ties_y) - m) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = numerator / np.sqrt(untied_x * untied_y)
    tau[(untied_x == 0) | (untied_y == 0)] = np.nan
    return np.clip(tau, -1.0, 1.0)


def resampled_statistics(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Each statistic on every bootstrap resample (`rows`: (resamples, n) row indices)."""
    from scipy.stats import rankdata

    xs, ys = x[rows], y[rows]
    counts = np.stack([np.bincount(r, minlength=len(x)) for r in rows]).astype(float)
    return {
        "spearman": _rowwise_pearson(rankdata(xs, axis=1), rankdata(ys, axis=1)),
        "pearson": _rowwise_pearson(xs, ys),
        "kendall": _kendall_tau_b_of_resamples(x, y, counts),
    }


def _undefined() -> dict[str, tuple[float, float]]:
    return {name: (math.nan, math.nan) for name in STATISTICS}


def point_statistics(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[float, float]]:
    """(value, two-sided p-value) of each statistic from scipy.stats; NaN when x or y is
    constant (a correlation is then undefined)."""
    from scipy import stats

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return _undefined()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = {
            "spearman": stats.spearmanr(x, y),
            "pearson": stats.pearsonr(x, y),
            "kendall": stats.kendalltau(x, y, variant="b"),
        }
    return {name: (float(r.statistic), float(r.pvalue)) for name, r in found.items()}


def scopes(explained: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(name, rows) per file in file order, then all files pooled (when there are several)."""
    files = list(dict.fromkeys(explained["file"]))
    found = [(name, explained[explained["file"] == name]) for name in files]
    return ([(POOLED, explained)] if len(files) > 1 else []) + found


def correlations(
    scored: pd.DataFrame,
    metrics: Sequence[str],
    seed: int = 0,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 95.0,
) -> pd.DataFrame:
    """Per scope, metric, aspect and statistic: value, p-value, percentile bootstrap interval
    (the same resampled rows for every metric and aspect of a scope), the number of resamples
    where the statistic is undefined (left out of the interval), and the metric's rank (1 =
    highest value) among the metrics of that scope, aspect and statistic.

    A metric may leave rows unscored (NaN: an empty explanation for GPTScore, an answer the
    judge never gave in the format); its statistics use its scored rows only (`scored_rows`),
    resampled with the same seed. Fewer than two scored rows: every statistic is undefined."""
    if n_resamples < 1 or not 0 < level < 100:
        raise ImhiBenchError(
            f"bootstrap needs n_resamples >= 1 and 0 < level < 100, got {n_resamples}, {level}"
        )
    tail = (100.0 - level) / 2
    records = []
    for scope, rows in scopes(scored):
        all_rows = bootstrap_indices(len(rows), n_resamples, seed)
        for metric in metrics:
            x = rows[metric].to_numpy(dtype=float)
            if np.isinf(x).any():
                raise ImhiBenchError(f"metric validation: {metric} gave an infinite score")
            scored = ~np.isnan(x)
            x = x[scored]
            if scored.all():
                resampled_rows = all_rows
            elif len(x) >= 2:
                resampled_rows = bootstrap_indices(len(x), n_resamples, seed)
            for aspect in ASPECTS:
                y = rows[f"mean_{aspect}"].to_numpy(dtype=float)[scored]
                points = _undefined() if len(x) < 2 else point_statistics(x, y)
                resampled = (
                    {name: np.full(n_resamples, math.nan) for name in STATISTICS}
                    if len(x) < 2
                    else resampled_statistics(x, y, resampled_rows)
                )
                for statistic, values in resampled.items():
                    defined = values[np.isfinite(values)]
                    low, high = (
                        np.percentile(defined, [tail, 100.0 - tail])
                        if len(defined)
                        else (math.nan,) * 2
                    )
                    value, p_value = points[statistic]
                    records.append(
                        (
                            scope, len(rows), len(x), metric, aspect, statistic, value, float(low),
                            float(high), p_value, n_resamples - len(defined),
                        )
                    )  # fmt: skip
    columns = [
        "scope", "rows", "scored_rows", "metric", "aspect", "statistic", "value", "ci_low",
        "ci_high", "p_value", "undefined_resamples",
    ]  # fmt: skip
    table = pd.DataFrame.from_records(records, columns=columns)
    group = table.groupby(["scope", "aspect", "statistic"], sort=False)["value"]
    table["rank"] = group.rank(ascending=False, method="min").astype("Int64")
    return table


def annotator_agreement(ratings: pd.DataFrame) -> pd.DataFrame:
    """Krippendorff's alpha (ordinal, `krippendorff` package) of the annotators per scope and
    aspect: scope, aspect, alpha."""
    import krippendorff

    records = []
    explained_scopes = scopes(ratings.drop_duplicates(["file", "row"])[["file", "row"]])
    for scope, units in explained_scopes:
        keys = units.set_index(["file", "row"]).index
        for aspect in ASPECTS:
            chosen = ratings[ratings["aspect"] == aspect]
            matrix = chosen.pivot_table(
                index="annotator", columns=["file", "row"], values="rating", aggfunc="first"
            ).reindex(columns=keys)
            alpha = krippendorff.alpha(
                reliability_data=matrix.to_numpy(dtype=float),
                level_of_measurement="ordinal",
                value_domain=list(range(RATING_MIN, RATING_MAX + 1)),
            )
            records.append((scope, aspect, float(alpha)))
    return pd.DataFrame.from_records(records, columns=["scope", "aspect", "alpha"])


# ---- tables --------------------------------------------------------------------------------


def _stars(p_value: float) -> str:
    if not math.isfinite(p_value):
        return ""
    return "**" if p_value < 0.01 else "*" if p_value < 0.05 else ""


def _cell(row: pd.Series) -> str:
    text = number(row["value"])
    if text == MISSING:
        return text
    interval = f" [{number(row['ci_low'])}, {number(row['ci_high'])}]"
    scored = f" (n={row['scored_rows']})" if row["scored_rows"] < row["rows"] else ""
    text += (interval if math.isfinite(row["ci_low"]) else "") + _stars(row["p_value"])
    return text + scored


def validation_table(
    statistic: str,
    found: pd.DataFrame,
    agreement: pd.DataFrame,
    metrics: Sequence[str],
    systems: Mapping[str, str],
    n_resamples: int,
    seed: int,
    notes: Sequence[str] = (),
) -> Table:
    """One statistic's table: per scope an agreement row (Krippendorff's alpha) and one row per
    metric; columns are the aspects; the best metric per scope and aspect is bold."""
    label = STATISTICS[statistic]
    chosen = found[found["statistic"] == statistic]
    frame = chosen.merge(agreement, on=["scope", "aspect"], how="left", validate="many_to_one")
    frame = frame.rename(columns={"alpha": "annotator_alpha"})
    rows = []
    for scope in dict.fromkeys(chosen["scope"]):
        in_scope = chosen[chosen["scope"] == scope]
        size = int(in_scope["rows"].iloc[0])
        heading = f"{scope} ({size} rows" + (f", {systems[scope]})" if scope in systems else ")")
        alphas = agreement[agreement["scope"] == scope].set_index("aspect")["alpha"]
        rows.append(
            DisplayRow(
                f"{heading}: {ALPHA_LABEL}", tuple(number(alphas[a]) for a in ASPECTS), "agreement"
            )
        )
        for metric in metrics:
            by_aspect = in_scope[in_scope["metric"] == metric].set_index("aspect")
            cells = tuple(_cell(by_aspect.loc[a]) for a in ASPECTS)
            ranks = [by_aspect.loc[a, "rank"] for a in ASPECTS]
            bold = tuple(i for i, rank in enumerate(ranks) if pd.notna(rank) and rank == 1)
            rows.append(DisplayRow(f"{heading}: {metric}", cells, bold=bold))
    notes = [
        f"{label} of each metric with the annotators' mean rating (3 annotators, 0-3) per "
        f"aspect; [95% percentile bootstrap interval, {n_resamples} resamples of the rows, seed "
        f"{seed}]; * p < 0.05, ** p < 0.01 (scipy.stats, two-sided, not corrected for the "
        "number of comparisons). Bold: the highest value per scope and aspect.",
        "Krippendorff's α (ordinal, krippendorff package): agreement of the annotators with "
        "each other, the ceiling a metric can be expected to reach.",
        REFERENCE_NOTE,
        *notes,
        PUBLISHED_NOTE,
    ]
    return Table(
        name=f"{TABLE_PREFIX}_{statistic}",
        title=f"Explanation metrics vs human ratings ({label}; reference = the post)",
        columns=list(ASPECTS),
        rows=rows,
        frame=frame,
        notes=notes,
        metadata={
            "statistic": statistic,
            "reference": "post",
            "resamples": n_resamples,
            "seed": seed,
        },
        corner="scope: metric",
    )


# ---- the stage -----------------------------------------------------------------------------


@dataclass
class Validation:
    """Everything the stage computed."""

    ratings: pd.DataFrame
    scored: pd.DataFrame
    metrics: list[str]
    correlations: pd.DataFrame
    agreement: pd.DataFrame
    tables: list[Table]
    model_metrics: dict[str, dict]


def bart_variant_names(
    settings: Mapping[str, dict], parabank2_sha256: str | None = None
) -> dict[bool, str]:
    """The names of the BARTScore variants (with / without the configured weights file), made
    from what is loaded as the aggregate names the BART-score table's variant
    (`imhibench.aggregate.bart_score_variant`: checkpoint + the weights file's sha256, called
    ParaBank2 only when it is `parabank2_sha256`)."""
    from imhibench.aggregate import bart_score_variant
    from imhibench.score import scorer_provenance

    options = settings.get("bart_score")
    if options is None:
        return {}
    return {
        loaded: bart_score_variant(
            {"validation": scorer_provenance({"bart_score": {**options, "weights_file": weights}})},
            parabank2_sha256,
        )
        for loaded, weights in ((True, options.get("weights_file")), (False, None))
    }


def validate_metrics(
    rating_paths: Mapping[str, str | Path],
    settings: Mapping[str, dict],
    device: str = "cpu",
    seed: int = 0,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    notes: Sequence[str] = (),
    parabank2_sha256: str | None = None,
    model_metric_paths: Mapping[str, str | Path] | None = None,
) -> Validation:
    """Read, score, correlate and tabulate (nothing is written). `device`: auto, cuda or cpu.
    `model_metric_paths`: metric -> the per-row file of that model metric's job over the rated
    explanations (`write_rated_explanations`, then `imhibench.score.run_model_metric`); every
    column of it is correlated like a metric scored here."""
    from imhibench.devices import resolve_device

    device = resolve_device(device)
    ratings = read_rating_files(rating_paths)
    explained = rated_explanations(ratings)
    runs = metric_runs(settings, bart_variant_names(settings, parabank2_sha256))
    if not runs and not model_metric_paths:
        raise ImhiBenchError("metric validation: no explanation metric is configured (scorers)")
    scored, metrics = score_explanations(explained, runs, device)
    scored, added, records = merge_model_metrics(scored, model_metric_paths or {})
    metrics += added
    found = correlations(scored, metrics, seed=seed, n_resamples=n_resamples)
    agreement = annotator_agreement(ratings)
    systems = dict(zip(explained["file"], explained["system"], strict=False))
    tables = [
        validation_table(s, found, agreement, metrics, systems, n_resamples, seed, notes)
        for s in STATISTICS
    ]
    return Validation(ratings, scored, metrics, found, agreement, tables, records)


def write_validation(
    result: Validation, tables_dir: str | Path, plot_base: str | Path, provenance: dict
) -> list[Path]:
    """The tables (.parquet/.md/.html/.tex), the per-row scores and the tidy ratings
    (Parquet), and the Spearman heat map (PNG + SVG), all with `provenance`."""
    from imhibench.io import write_table
    from imhibench.plots import correlation_heatmap
    from imhibench.tables import write_table_files

    tables_dir = Path(tables_dir)
    written = []
    for table in result.tables:
        written += write_table_files(table, tables_dir, provenance)
    for name, frame in zip(DATA_TABLES, (result.scored, result.ratings), strict=True):
        path = tables_dir / f"{name}.parquet"
        write_table(frame, path, provenance)
        written.append(path)
    spearman = result.correlations[result.correlations["statistic"] == "spearman"]
    written += correlation_heatmap(
        spearman, result.agreement, result.metrics, ASPECTS, ALPHA_LABEL,
        "Spearman ρ with the mean human rating (reference = the post)", plot_base,
    )  # fmt: skip
    return written


def run_validate_metrics(
    rating_paths: Mapping[str, str | Path],
    settings: Mapping[str, dict],
    tables_dir: str | Path,
    plot_base: str | Path,
    device: str = "cpu",
    seed: int = 0,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    sources: Mapping[str, str] | None = None,
    parabank2_sha256: str | None = None,
    model_metric_paths: Mapping[str, str | Path] | None = None,
    **provenance_fields: object,
) -> Validation:
    """The stage: validate, then write everything with provenance (the rating files' sha256
    and sources, the scorers' settings and checkpoints as the score stage records them, and
    each model metric's job as the score stage records it: settings, judge and rubric)."""
    from imhibench.provenance import build_provenance, sha256_file
    from imhibench.score import scorer_provenance

    result = validate_metrics(
        rating_paths, settings, device, seed, n_resamples, parabank2_sha256=parabank2_sha256,
        model_metric_paths=model_metric_paths,
    )  # fmt: skip
    provenance = build_provenance(
        "validate_metrics",
        ratings={
            name: {
                "path": str(path),
                "sha256": sha256_file(path),
                "source": (sources or {}).get(name),
            }
            for name, path in rating_paths.items()
        },
        reference="post",
        metrics=result.metrics,
        seed=seed,
        bootstrap_resamples=n_resamples,
        device=device,
        scorers=dict(settings),
        parabank2_sha256=parabank2_sha256,
        **scorer_provenance(settings),
        model_metrics=result.model_metrics,
        **provenance_fields,
    )
    write_validation(result, tables_dir, plot_base, provenance)
    return result
