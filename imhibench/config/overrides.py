"""Values given with `snakemake --config`, read as YAML would read them, and numbers of the
wrong kind made right, once, at validation.

Snakemake parses a top-level `--config key=value` as int, float, bool or YAML, but YAML with
its BaseLoader: everything nested (`--config 'generation={batch_tokens: 4096}'`) arrives as a
string, and so does `null` (`--config rows_per_dataset=null`, `'imhi={source: null}'`).

- A string leaf is re-read with `yaml.safe_load` only where the schema rejects it for its
  *type*: a genuine string (a revision `main`, a sha `1234567`, a path) is left alone because
  the schema accepts a string there.
- A string that YAML reads as null (`null`, `Null`, `NULL`, `~`) is null, everywhere: where
  the schema accepts null it unsets the value (`path: null`, `gdrive_id: null` unsetting an
  inherited source, `published_weighted_f1=null`) instead of naming a file `null`; where it
  does not, the validator says so, naming the key. (A quoted "null" in a YAML file reads the
  same: nothing in this config is meant to be named `null`.)
- A float with no fractional part (`seed=42.0`) becomes an int where the schema wants an
  integer. JSON Schema itself counts 42.0 as an integer, numpy's `SeedSequence` does not
  (the bootstrap failed on it after every other job), so `strict_validator` refuses any float
  there and 42.5 is reported with its key.
"""

from __future__ import annotations

from collections.abc import Iterator

import jsonschema
import yaml

# The spellings YAML reads as null (besides nothing at all).
YAML_NULLS = ("null", "Null", "NULL", "~")


def strict_validator(schema: dict) -> jsonschema.protocols.Validator:
    """A validator of `schema` whose `integer` is a Python int (not a bool, not 42.0)."""
    base = jsonschema.validators.validator_for(schema)
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def _type_errors(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """`error` and the errors of its oneOf/anyOf branches that are about the value's type."""
    if error.validator == "type":
        yield error
    for sub in error.context or ():
        yield from _type_errors(sub)


def _retyped(value: object) -> object:
    """`value` as the type it was meant to have: a string read as YAML, an integral float as
    an int; `value` itself when there is nothing to read."""
    if isinstance(value, str):
        try:
            read = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return value if isinstance(read, str) else _retyped(read)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _wrong_type_leaves(config: dict, validator) -> dict[tuple, object]:
    """{path: value} of every string leaf the schema rejects for its type, and of every float
    leaf where it wants an integer."""
    found = {}
    for error in validator.iter_errors(config):
        for sub in _type_errors(error):
            wanted = sub.validator_value
            wants_integer = "integer" in (wanted if isinstance(wanted, list) else [wanted])
            float_for_int = isinstance(sub.instance, float) and wants_integer
            if (isinstance(sub.instance, str) or float_for_int) and sub.absolute_path:
                found[tuple(sub.absolute_path)] = sub.instance
    return found


def _set(config: dict, path: tuple, value: object) -> None:
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


def _leaves(value: object, path: tuple = ()) -> Iterator[tuple[tuple, object]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _null_strings_to_none(config: dict) -> None:
    """Each string YAML reads as null becomes None (the validator then refuses it, naming
    the key, where null is not accepted)."""
    for path, value in list(_leaves(config)):
        if isinstance(value, str) and value.strip() in YAML_NULLS and path:
            _set(config, path, None)


def coerce_config(config: dict, validator) -> None:
    """Replace, in place, each value of the wrong type by the value it stands for
    (`'4096'` -> 4096, `'true'` -> True, `42.0` -> 42), and each null string (`'null'`) by
    None. A value that reads as nothing else is left for the validator to report.
    `validator` should be a `strict_validator`."""
    seen: set[tuple[tuple, str]] = set()
    while pending := {
        p: v for p, v in _wrong_type_leaves(config, validator).items() if (p, repr(v)) not in seen
    }:
        for path, value in pending.items():
            seen.add((path, repr(value)))
            retyped = _retyped(value)
            if retyped is not value:
                _set(config, path, retyped)
    _null_strings_to_none(config)
