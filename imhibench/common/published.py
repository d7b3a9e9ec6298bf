"""The published numbers a table is set beside: the shipped transcription of the paper's
weighted F1, or the user's file (config key ``published_weighted_f1``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from imhibench.common.errors import ImhiBenchError

# The transcription of the paper's weighted F1 that ships with imhi-bench (the default of the
# config key `published_weighted_f1`), and its caveat, shown under every table that uses it.
SHIPPED_PUBLISHED = Path(__file__).parent / "data" / "published_weighted_f1.csv"
SHIPPED_PUBLISHED_CAVEAT = (
    "Published values: imhi-bench's transcription of the MentaLLaMA paper (Yang et al., WWW 2024) "
    "from two third-party summaries that agree with each other; not yet checked against the "
    "paper's PDF. Point the config key published_weighted_f1 at your own file to replace it."
)


def load_published(path: str | Path) -> pd.DataFrame:
    """Published weighted F1: rows = the paper's models (file order = paper order), columns =
    task names (file order = paper order)."""
    try:
        published = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ImhiBenchError(f"{path}: cannot read published results: {err}") from err
    if "model" not in published.columns:
        raise ImhiBenchError(f"{path}: published results need a 'model' column")
    published["model"] = published["model"].astype(str)
    if dupes := sorted(set(published["model"][published["model"].duplicated()])):
        raise ImhiBenchError(f"{path}: model(s) listed twice: {dupes}")
    values = published.set_index("model")
    for column in values.columns:
        try:
            values[column] = pd.to_numeric(values[column]).astype(float)
        except (ValueError, TypeError) as err:
            raise ImhiBenchError(f"{path}: column {column!r} is not numeric: {err}") from err
    return values
