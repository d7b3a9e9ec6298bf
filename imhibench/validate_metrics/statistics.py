"""Agreement of metric scores with the human ratings: Spearman, Pearson, Kendall with
bootstrap intervals, and the annotators' own agreement (Krippendorff's alpha)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics.correctness import BOOTSTRAP_RESAMPLES, bootstrap_indices
from imhibench.validate_metrics.ratings import ASPECTS, RATING_MAX, RATING_MIN

POOLED = "pooled"
STATISTICS = {"spearman": "Spearman ρ", "pearson": "Pearson r", "kendall": "Kendall τb"}


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
