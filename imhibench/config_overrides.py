"""Values given with `snakemake --config`, read as YAML would read them.

Snakemake parses a top-level `--config key=value` as int, float, bool or YAML, but YAML with
its BaseLoader: everything nested (`--config 'generation={batch_tokens: 4096}'`) arrives as a
string, and so does `null` (`--config rows_per_dataset=null`). A string leaf is re-read with
`yaml.safe_load` only where the schema rejects it for its *type*: a genuine string (a revision
`main`, a sha `1234567`, a path) is left alone because the schema accepts a string there.
"""

from __future__ import annotations

from collections.abc import Iterator

import jsonschema
import yaml


def _type_errors(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """`error` and the errors of its oneOf/anyOf branches that are about the value's type."""
    if error.validator == "type":
        yield error
    for sub in error.context or ():
        yield from _type_errors(sub)


def _wrong_type_strings(config: dict, validator) -> dict[tuple, str]:
    """{path: string} of every string leaf the schema rejects because a string is the wrong type."""
    found = {}
    for error in validator.iter_errors(config):
        for sub in _type_errors(error):
            if isinstance(sub.instance, str):
                found[tuple(sub.absolute_path)] = sub.instance
    return found


def _set(config: dict, path: tuple, value: object) -> None:
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


def read_strings_as_yaml(config: dict, validator) -> None:
    """Replace, in place, each string the schema wants as another type by its YAML value
    (`'4096'` -> 4096, `'true'` -> True, `'null'` -> None). A string that is not valid YAML,
    or reads as a string again, is left for the validator to report."""
    seen: set[tuple] = set()
    while pending := {
        p: v for p, v in _wrong_type_strings(config, validator).items() if p not in seen
    }:
        for path, text in pending.items():
            seen.add(path)
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if not isinstance(value, str) and path:
                _set(config, path, value)
