"""The conda environment files pin exactly the versions CI tests, and cover pyproject's deps."""

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def env_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {canonicalize_name(n): v for n, v in (p.split("==") for p in pip)}


def test_every_env_pins_ci_versions():
    pins = constraints()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {e.stem for e in envs} == {
        "fetch",
        "generate",
        "label",
        "score",
        "aggregate",
        "validate_metrics",
    }
    for env in envs:
        for name, version in env_pins(env).items():
            assert pins.get(name) == version, (
                f"{env.name}: {name}=={version} vs CI {pins.get(name)}"
            )


def test_pyproject_dependencies_are_pinned_and_satisfied():
    pins = constraints()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    in_envs = set().union(*(env_pins(e) for e in (REPO / "envs").glob("*.yaml")))
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not pinned in .ci/constraints.txt"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} violates {spec}"
        assert name in in_envs, f"{name} is in no envs/*.yaml"


def test_every_rule_names_a_conda_env():
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.M)
        envs = re.findall(r'conda:\n\s+"\.\./envs/(\w+)\.yaml"', text)
        assert len(rules) == len(envs), f"{smk.name}: {rules} vs conda envs {envs}"
        assert all((REPO / "envs" / f"{e}.yaml").is_file() for e in envs)


def extra_requirements(package: str, extra: str) -> list[Requirement]:
    """The requirements an installed `package` adds with `package[extra]`."""
    from importlib.metadata import requires

    found = [Requirement(r) for r in requires(package) or []]
    return [r for r in found if r.marker and r.marker.evaluate({"extra": extra})]


def test_workflow_and_dev_extras_are_pinned_with_the_extras_they_pull():
    pins = constraints()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = extras["optional-dependencies"]
    for spec in extras["workflow"] + extras["dev"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not pinned in .ci/constraints.txt"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} violates {spec}"
        for extra in req.extras:  # e.g. transformers[serving]: FastAPI, Uvicorn, ...
            for sub in extra_requirements(req.name, extra):
                sub_name = canonicalize_name(sub.name)
                assert sub_name in pins, f"{sub_name} ({spec}) is not pinned in the constraints"
                assert sub.specifier.contains(pins[sub_name]), f"{sub_name}: {sub} ({spec})"


def test_the_serving_extra_is_for_tests_only():
    """`transformers serve` runs in tests only: what it alone needs is in no rule's environment."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(s).name) for s in project["dependencies"]}
    serving = {canonicalize_name(r.name) for r in extra_requirements("transformers", "serving")}
    assert {"fastapi", "uvicorn"} <= serving - runtime
    in_envs = set().union(*(env_pins(e) for e in (REPO / "envs").glob("*.yaml")))
    assert (serving - runtime) & in_envs == set()
