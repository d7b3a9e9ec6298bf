"""Import responses generated elsewhere (e.g. upstream IMHI.py's output CSVs)."""

from __future__ import annotations

from pathlib import Path

from imhibench.common.errors import ImhiBenchError
from imhibench.generate.base import GenerationSettings

UPSTREAM_COLUMNS = ("goldens", "generated_text")
ROW_ID_COLUMNS = ("row_id", "response")


def read_answer_table(path: Path):
    import pandas as pd

    from imhibench.common.io import not_utf8_message  # pyarrow: not for `imhibench evaluate --help`

    if not path.is_file():
        raise ImhiBenchError(f"responses file {path}: not found")
    if path.suffix not in (".csv", ".parquet"):
        raise ImhiBenchError(f"responses file {path}: expected a .csv or .parquet file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        # Only empty cells are missing: a response "None" or "NaN" is text.
        options = {"dtype": str, "keep_default_na": False, "na_values": [""]}
        if set(UPSTREAM_COLUMNS) <= set(pd.read_csv(path, nrows=0).columns):
            options["escapechar"] = "\\"  # IMHI.py writes with to_csv(escapechar="\\")
        return pd.read_csv(path, **options)
    except UnicodeDecodeError as err:
        raise ImhiBenchError(f"responses file {not_utf8_message(path, err)}") from err
    except (ValueError, OSError) as err:
        raise ImhiBenchError(f"responses file {path}: unreadable: {err}") from err


def _same_text(a: str, b: str) -> bool:
    """Equal up to line endings and surrounding whitespace (CSV round trips)."""
    return a.replace("\r\n", "\n").strip() == b.replace("\r\n", "\n").strip()


def _is_empty(value: object) -> bool:
    return not isinstance(value, str) or not value.strip()


def _from_upstream(path: Path, table, row_ids: list[str], golds: list[str]) -> list[str]:
    if len(table) != len(row_ids):
        raise ImhiBenchError(
            f"responses file {path}: {len(table)} rows, but the test file has {len(row_ids)}; "
            "upstream output rows must follow the test file's order one to one"
        )
    differing = [
        f"row {n + 1} (row_id {row_id}): {str(found)[:80]!r} vs {gold[:80]!r}"
        for n, (row_id, gold, found) in enumerate(
            zip(row_ids, golds, table["goldens"], strict=True)
        )
        if _is_empty(found) or not _same_text(found, gold)
    ]
    if differing:
        raise ImhiBenchError(
            f"responses file {path}: 'goldens' differs from the test file's gold answer in "
            f"{len(differing)} row(s):\n  " + "\n  ".join(differing)
        )
    return list(table["generated_text"])


def _from_row_ids(path: Path, table, row_ids: list[str]) -> list[str]:
    ids = [str(x) for x in table["row_id"]]
    if len(set(ids)) != len(ids):
        dupes = sorted({x for x in ids if ids.count(x) > 1})[:5]
        raise ImhiBenchError(f"responses file {path}: duplicate row_id values, e.g. {dupes}")
    by_id = dict(zip(ids, table["response"], strict=True))
    if missing := [r for r in row_ids if r not in by_id]:
        raise ImhiBenchError(
            f"responses file {path}: {len(missing)} row_ids missing, e.g. {missing[:5]}"
        )
    return [by_id[r] for r in row_ids]


def empty_rows(row_ids: list[str], responses: list[object]) -> list[str]:
    """`row N (row_id X)` of every empty, whitespace-only or missing (NaN) response."""
    return [
        f"row {n + 1} (row_id {row_id})"
        for n, (row_id, text) in enumerate(zip(row_ids, responses, strict=True))
        if _is_empty(text)
    ]


#: The one rule for empty answers, for the pipeline's ``kind: responses`` import and for
#: ``imhibench evaluate`` alike (README, "Score answers made elsewhere").
EMPTY_TREATMENT = (
    "kept as empty text, as the pipeline does: counted in empty_responses, labelled like any "
    "answer (the rule labeler gives the task's default label and counts it out-of-domain) and "
    "scored against the gold explanation like any answer"
)


def import_responses(path: str, row_ids: list[str], golds: list[str]) -> list[str]:
    """Responses for ``row_ids`` (test-file order) from a CSV/Parquet file.

    Two layouts: upstream's ``goldens,generated_text`` (rows in test-file order; each golden
    must equal that row's gold answer), or ``row_id,response`` (matched by row_id; extra ids
    are ignored). Empty, whitespace-only or missing (NaN) responses become ``""``, as a model's
    empty answer would be (``EMPTY_TREATMENT``; ``empty_rows`` names them).
    """
    if len(row_ids) != len(golds):
        raise ImhiBenchError(
            f"responses file {path}: {len(row_ids)} row_ids but {len(golds)} golds"
        )
    file = Path(path)
    table = read_answer_table(file)
    columns = set(table.columns)
    if set(UPSTREAM_COLUMNS) <= columns:
        responses = _from_upstream(file, table, row_ids, golds)
    elif set(ROW_ID_COLUMNS) <= columns:
        responses = _from_row_ids(file, table, row_ids)
    else:
        raise ImhiBenchError(
            f"responses file {path}: columns {sorted(columns)}; expected "
            f"{','.join(UPSTREAM_COLUMNS)} (upstream output) or {','.join(ROW_ID_COLUMNS)}"
        )
    return ["" if _is_empty(t) else str(t) for t in responses]


def load_responses(
    *,
    model_dir: str,
    base_model_dir: str | None = None,
    settings: GenerationSettings,
    device: str | None = None,
):
    """Kind ``responses`` has no model: it needs row ids and golds, not just queries."""
    raise ImhiBenchError(
        f"generation kind 'responses' ({model_dir}) loads no model; import the answers with "
        "imhibench.generate.import_responses(path, row_ids, golds)"
    )
