"""Paired bootstrap test of the weighted-F1 difference of two labelings of the same rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imhibench.common.errors import ImhiBenchError
from imhibench.score.metrics.correctness import (
    BOOTSTRAP_RESAMPLES,
    _weighted_f1_of_resamples,
    bootstrap_indices,
    label_order,
)


@dataclass(frozen=True)
class PairedDifference:
    """Weighted F1 (x100) of A minus that of B on the same rows, with its bootstrap interval."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n_rows: int

    @property
    def significant(self) -> bool:
        """The 95% interval excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_weighted_f1_difference(
    gold: Sequence[str],
    predicted_a: Sequence[str],
    predicted_b: Sequence[str],
    seed: int = 0,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 95.0,
) -> PairedDifference:
    """Paired percentile bootstrap: each resample draws rows (with replacement) once and scores
    both models on those same rows, so the interval reflects only the models' difference.

    `p_value` is the two-sided bootstrap share: 2 x the smaller share of resampled differences
    on either side of 0 (capped at 1).
    """
    if not len(gold) == len(predicted_a) == len(predicted_b):
        raise ImhiBenchError(
            f"paired test needs equal rows: {len(gold)} gold, {len(predicted_a)} and "
            f"{len(predicted_b)} predictions"
        )
    if not gold:
        raise ImhiBenchError("paired test: no shared rows")
    order = label_order([], gold, [*predicted_a, *predicted_b])
    code = {label: i for i, label in enumerate(order)}
    gold_codes = np.array([code[x] for x in gold])
    a_codes = np.array([code[x] for x in predicted_a])
    b_codes = np.array([code[x] for x in predicted_b])
    rows = bootstrap_indices(len(gold), n_resamples, seed)
    k = len(order)
    whole = np.arange(len(gold))[None, :]
    observed = (
        100.0
        * (
            _weighted_f1_of_resamples(gold_codes[whole], a_codes[whole], k)
            - _weighted_f1_of_resamples(gold_codes[whole], b_codes[whole], k)
        )[0]
    )
    differences = 100.0 * (
        _weighted_f1_of_resamples(gold_codes[rows], a_codes[rows], k)
        - _weighted_f1_of_resamples(gold_codes[rows], b_codes[rows], k)
    )
    tail = (100.0 - level) / 2
    low, high = np.percentile(differences, [tail, 100.0 - tail])
    p_value = min(1.0, 2 * min(np.mean(differences <= 0), np.mean(differences >= 0)))
    return PairedDifference(float(observed), float(low), float(high), float(p_value), len(gold))
