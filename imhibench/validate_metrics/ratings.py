"""Upstream's human ratings of DR explanations: reading the rating files, one row per rated
explanation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from imhibench.common.errors import ImhiBenchError
from imhibench.common.io import read_csv_text

RATING_MIN, RATING_MAX = 0, 3
POST_COLUMN, LABEL_COLUMN = "text", "label"
ASPECTS = ("fluency", "completeness", "reliability", "overall")
ANNOTATORS = 3
DR_LABELS = ("0", "1")
# The explanation's column names the system that wrote it.
SYSTEMS = {"gpt-3.5-turbo": "ChatGPT", "curie-instruct-beta": "InstructGPT-3"}
# The tidy ratings table: one row per (file, data row, aspect, annotator).
RATING_COLUMNS = [
    "file", "row", "system", "dr_label", "post", "explanation", "aspect", "annotator", "rating",
]  # fmt: skip


RATINGS_DIR = "resources/imhi/human_ratings"  # where the pipeline fetches the rating files


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
    from imhibench.common.io import write_table
    from imhibench.common.provenance import build_provenance, sha256_file

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
