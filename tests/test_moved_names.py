"""The module names before the re-layout (issue 20) keep working for one release, with a
DeprecationWarning naming the new place; they are the same objects, never second copies."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

from imhibench.common.moved import MOVED, new_name


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_name_is_its_new_module(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])


def test_a_submodule_of_a_moved_package_is_not_loaded_twice():
    from imhibench.metrics.judge import judge_prompt  # the docs' example of 0.1

    from imhibench.score.metrics import judge

    assert judge_prompt is judge.judge_prompt
    assert new_name("imhibench.metrics.judge") == "imhibench.score.metrics.judge"
    assert new_name("imhibench.metricsx") is None


@pytest.mark.parametrize(
    "package, name, home",
    [
        ("imhibench.fetch", "prepare_test_set", "imhibench.fetch.test_sets"),
        ("imhibench.score", "run_score", "imhibench.score.stage"),
        ("imhibench.aggregate", "write_tables", "imhibench.aggregate.write"),
        ("imhibench.config", "Plan", "imhibench.config.plan"),
        ("imhibench.config", "validate_config", "imhibench.config.validation"),
    ],
)
def test_a_module_that_became_a_package_forwards_its_old_names(package, name, home):
    code = f"import warnings\nwarnings.simplefilter('error')\nfrom {package} import {name}\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert f"{package}.{name} moved to {home}.{name}" in result.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        found = getattr(importlib.import_module(package), name)
    assert found is getattr(importlib.import_module(home), name)


def test_an_unknown_name_is_still_an_error():
    with pytest.raises(ImportError, match="nothing_here"):
        from imhibench.fetch import nothing_here  # noqa: F401


def test_the_new_names_import_without_a_warning():
    code = "import imhibench.common.io, imhibench.score.stage, imhibench.config.plan, imhibench.cli"
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)
