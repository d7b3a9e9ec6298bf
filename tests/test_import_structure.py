"""The package's import structure: no import cycle, no stage reaching into another's internals.

The test reads every ``imhibench/**/*.py`` with ``ast`` (nothing is imported) and records each
import of an ``imhibench`` module, at module level and inside functions alike: an import inside a
function only defers the cost, the dependency is the same. Imports under ``if TYPE_CHECKING:``
never run and are left out. ``from imhibench.x import y`` is an edge to ``imhibench.x.y`` when
that is a module, else to ``imhibench.x`` (names ``y``).

Rules:

1. **No cycle among module-level imports**, none at all (an import-time cycle is an import-order
   bug: a module half-initialised when the other one reads it).
2. **No cycle in the whole graph** (module- and function-level imports), except the cycles
   listed in ``KNOWN_CYCLES``, each one exactly (the test fails when one disappears, so that the
   list is emptied as they are fixed).
3. **Stages.** Every module belongs to exactly one place: a stage of ``STAGES``, ``SHARED``
   (what all stages use), or ``TOOLS`` (front ends that drive stages: the CLI and the
   benchmark, which times the generate stage's engines from inside). A new module must be
   placed, or the test fails. A module of one stage imports from another stage only that
   stage's entry modules (``ENTRIES``) and only their public names (no leading underscore);
   any other module or name of a stage is its internals. ``KNOWN_CROSSINGS`` lists today's
   exceptions, each exactly, as ``KNOWN_CYCLES`` does. Shared modules and tools are not
   checked by rule 3.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "imhibench"

# Stage -> its modules (fnmatch patterns on dotted names): one folder (or module) per stage.
STAGES = {
    "fetch": ["imhibench.fetch", "imhibench.fetch.*"],
    "generate": ["imhibench.generate", "imhibench.generate.*"],
    "label": ["imhibench.label"],
    "score": ["imhibench.score", "imhibench.score.*"],
    "aggregate": ["imhibench.aggregate", "imhibench.aggregate.*"],
    "validate_metrics": ["imhibench.validate_metrics", "imhibench.validate_metrics.*"],
}
# What other stages may import of each stage (every module of a one-module stage is its entry).
ENTRIES = {
    "fetch": [
        "imhibench.fetch.test_sets",  # prepare_test_set (`imhibench compare-engines`)
        "imhibench.fetch.scorer_weights",  # the weights' record, read by the score stage
    ],
    "generate": [
        "imhibench.generate",  # load_backend, GenerationSettings
        "imhibench.generate.responses",  # answers made elsewhere (`imhibench evaluate`)
        "imhibench.generate.api",  # the OpenAI-compatible client, reused by API-asked metrics
        "imhibench.generate.journal",  # the resumable row journal of API requests
        "imhibench.generate.lock",  # one writer per output (model-metric jobs, metric journals)
        "imhibench.generate.signals",  # a graceful stop on SIGTERM while API requests are in flight
    ],
    "score": [
        "imhibench.score.stage",  # model-metric files and scorer provenance
        "imhibench.score.metrics",  # the metric registry and explanation metrics
        "imhibench.score.metrics.correctness",
        "imhibench.score.metrics.paired",
        "imhibench.score.metrics.bartscore",  # resolve_dtype (the label stage's classifier)
        "imhibench.score.metrics.bart_variant",  # variant_name (tables name the BART-score weights)
        "imhibench.score.metrics.judge",  # judge_identity (tables name the judge)
    ],
    "aggregate": [
        "imhibench.aggregate.notes",  # bart_score_variant: how a table names the weights
        "imhibench.aggregate.plots",  # correlation_heatmap
    ],
}
# What every stage shares: modules that import no stage's code at module level.
SHARED = [
    "imhibench",
    "imhibench.common",
    "imhibench.common.*",
    "imhibench.config",
    "imhibench.config.*",
]
# Front ends that drive stages: the CLI, `imhibench evaluate`, the demo's models, the benchmark.
TOOLS = [
    "imhibench.cli",
    "imhibench.evaluate",
    "imhibench.demo_models",
    "imhibench.bench",
    "imhibench.bench.*",
]

# Cycles through function-level imports still to remove (sets of modules); none today.
KNOWN_CYCLES: list[set[str]] = []
# (importing module, imported module, name) of stage crossings still to remove; none today.
KNOWN_CROSSINGS: list[tuple[str, str, str]] = []


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    names: tuple[str, ...]
    module_level: bool
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """(import node, module level?) of every import in ``tree``, TYPE_CHECKING blocks left out."""

    def walk(node: ast.AST, module_level: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from walk_list(child.orelse, module_level)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, module_level
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(child, module_level and not inner)

    def walk_list(nodes: list[ast.stmt], module_level: bool):
        for node in nodes:
            yield from walk(ast.Module(body=[node], type_ignores=[]), module_level)

    yield from walk(tree, True)


def import_edges(root: Path = PACKAGE) -> tuple[set[str], list[Edge]]:
    """The package's modules and every import of one of them by another."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges = []
    for source, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node, module_level in _imports(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        edges.append(Edge(source, alias.name, (), module_level, node.lineno))
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base not in modules:
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                target, names = (child, ()) if child in modules else (base, (alias.name,))
                edges.append(Edge(source, target, names, module_level, node.lineno))
    return modules, [e for e in edges if e.source != e.target]


def cycles(modules: set[str], edges: list[Edge]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for edge in edges:
        graph[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def place(module: str) -> list[str]:
    """The places (stage names, 'shared', 'tools') whose patterns match ``module``."""
    places = [s for s, patterns in STAGES.items() if any(fnmatchcase(module, p) for p in patterns)]
    for name, patterns in (("shared", SHARED), ("tools", TOOLS)):
        if any(fnmatchcase(module, p) for p in patterns):
            places.append(name)
    if len(places) > 1 and "shared" in places:  # an explicit shared module inside a stage folder
        places = ["shared"]
    return places


def crossings(edges: list[Edge]) -> list[tuple[str, str, str, int]]:
    """(source, target, name or '', line) of every stage module importing another stage's
    internals: a module outside the target stage's entries, or a name with a leading '_'."""
    found = []
    for edge in edges:
        (source_place,), (target_place,) = place(edge.source), place(edge.target)
        if source_place not in STAGES or target_place not in STAGES:
            continue
        if source_place == target_place:
            continue
        entries = ENTRIES.get(target_place, STAGES[target_place])
        if not any(fnmatchcase(edge.target, p) for p in entries):
            found.append((edge.source, edge.target, "", edge.line))
        found += [(edge.source, edge.target, n, edge.line) for n in edge.names if n[0] == "_"]
    return found


def _describe(component: set[str], edges: list[Edge]) -> str:
    inside = [e for e in edges if e.source in component and e.target in component]
    return "; ".join(
        f"{e.source}:{e.line} -> {e.target} ({'module' if e.module_level else 'function'} level)"
        for e in sorted(inside, key=lambda e: (e.source, e.line))
    )


@pytest.fixture(scope="module")
def graph() -> tuple[set[str], list[Edge]]:
    return import_edges()


def test_every_module_has_one_place(graph):
    modules, _ = graph
    misplaced = {m: place(m) for m in sorted(modules) if len(place(m)) != 1}
    assert not misplaced, (
        "place each module in exactly one of STAGES, SHARED or TOOLS "
        f"(tests/test_import_structure.py): {misplaced}"
    )
    patterns = [*(p for ps in STAGES.values() for p in ps), *SHARED, *TOOLS]
    patterns += [p for ps in ENTRIES.values() for p in ps]
    stale = [p for p in patterns if not any(fnmatchcase(m, p) for m in modules)]
    assert not stale, f"no such module, remove it from the lists: {stale}"


def test_no_import_cycle_at_module_level(graph):
    modules, edges = graph
    module_level = [e for e in edges if e.module_level]
    found = [_describe(c, module_level) for c in cycles(modules, module_level)]
    assert not found, "import cycles at module level:\n" + "\n".join(found)


def test_no_import_cycle(graph):
    modules, edges = graph
    found = cycles(modules, edges)
    new = [_describe(c, edges) for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles (module- and function-level imports):\n" + "\n".join(new)
    fixed = [c for c in KNOWN_CYCLES if c not in found]
    assert not fixed, f"no longer a cycle, remove it from KNOWN_CYCLES: {fixed}"


def test_no_stage_imports_another_stages_internals(graph):
    _, edges = graph
    found = crossings(edges)
    new = [x for x in found if x[:3] not in KNOWN_CROSSINGS]
    assert not new, "stage modules importing another stage's internals (source, target, "
    "name, line): " + repr(new)
    gone = [k for k in KNOWN_CROSSINGS if k not in {x[:3] for x in found}]
    assert not gone, f"no longer imported, remove it from KNOWN_CROSSINGS: {gone}"


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "imhibench" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "imhibench"


def test_the_walker_sees_every_kind_of_import(tmp_path):
    """The rules' own check: a cycle closed inside a function, relative imports, submodules
    imported by name, TYPE_CHECKING blocks, private names of another stage."""
    root = _write(tmp_path, {
        "__init__.py": "",
        "common/__init__.py": "",
        "common/provenance.py": "def f():\n    from imhibench.common.checkpoint_hashes import g\n",
        "common/checkpoint_hashes.py": "from imhibench.common.provenance import sha\n",
        "label.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from imhibench.score import stage\n",
        "score/__init__.py": "",
        "score/stage.py": "from .. import label\n",
        "validate_metrics/__init__.py": "",
        "validate_metrics/run.py": "from imhibench.generate import hf\n"
                                   "from imhibench.label import _x\n",
        "generate/__init__.py": "from .hf import HF\n",
        "generate/hf.py": "import imhibench.generate\n",
    })  # fmt: skip
    modules, edges = import_edges(root)
    assert modules == {
        "imhibench", "imhibench.common", "imhibench.common.provenance",
        "imhibench.common.checkpoint_hashes", "imhibench.label", "imhibench.score",
        "imhibench.score.stage", "imhibench.validate_metrics", "imhibench.validate_metrics.run",
        "imhibench.generate", "imhibench.generate.hf",
    }  # fmt: skip
    pairs = {(e.source, e.target, e.module_level) for e in edges}
    assert ("imhibench.common.provenance", "imhibench.common.checkpoint_hashes", False) in pairs
    assert ("imhibench.score.stage", "imhibench.label", True) in pairs
    assert not any(e.source == "imhibench.label" for e in edges)  # TYPE_CHECKING only
    assert {frozenset(c) for c in cycles(modules, edges)} == {
        frozenset({"imhibench.common.provenance", "imhibench.common.checkpoint_hashes"}),
        frozenset({"imhibench.generate", "imhibench.generate.hf"}),
    }
    assert cycles(modules, [e for e in edges if e.module_level]) == [
        {"imhibench.generate", "imhibench.generate.hf"}
    ]
    assert sorted(x[:3] for x in crossings(edges)) == [
        ("imhibench.validate_metrics.run", "imhibench.generate.hf", ""),
        ("imhibench.validate_metrics.run", "imhibench.label", "_x"),
    ]
