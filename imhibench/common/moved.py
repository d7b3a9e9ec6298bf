"""Old module names (before the package was laid out by stage, issue 20), kept working
for one release: ``import imhibench.io`` or ``from imhibench.fetch import prepare_test_set``
still work, with a ``DeprecationWarning`` naming the new place. Remove in the next release.

An old module name is an alias of its new module (the same module object, so nothing is
imported twice); an old module that became a package (``fetch``, ``score``, ``aggregate``,
``config``) forwards its old names through ``forward_old_names``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: Old module -> new module (an old package's submodules follow it: imhibench.metrics.judge).
MOVED = {
    "imhibench.errors": "imhibench.common.errors",
    "imhibench.io": "imhibench.common.io",
    "imhibench.logs": "imhibench.common.logs",
    "imhibench.provenance": "imhibench.common.provenance",
    "imhibench.hashing": "imhibench.common.hashing",
    "imhibench.checkpoint_hashes": "imhibench.common.checkpoint_hashes",
    "imhibench.execution": "imhibench.common.execution",
    "imhibench.devices": "imhibench.common.devices",
    "imhibench.tasks": "imhibench.common.tasks",
    "imhibench.tables": "imhibench.common.tables",
    "imhibench.generate.progress": "imhibench.common.progress",
    "imhibench.config_overrides": "imhibench.config.overrides",
    "imhibench.config_fingerprint": "imhibench.config.fingerprint",
    "imhibench.checkpoints": "imhibench.fetch.checkpoints",
    "imhibench.scorer_weights": "imhibench.fetch.scorer_weights",
    "imhibench.metrics": "imhibench.score.metrics",
    "imhibench.plots": "imhibench.aggregate.plots",
    "imhibench.samples": "imhibench.aggregate.samples",
    "imhibench.screenshot": "imhibench.aggregate.screenshot",
    "imhibench.metric_validation": "imhibench.validate_metrics.run",
}


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old name will be removed in the next release",
        DeprecationWarning,
        stacklevel=3,
    )


def new_name(old: str) -> str | None:
    """The new module of an old module name, or None."""
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix) :]
    return None


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as its new module (first on ``sys.meta_path``, so a moved
    file is never loaded a second time under its old name)."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if new_name(fullname) else None

    def create_module(self, spec):
        new = new_name(spec.name)
        _warn(spec.name, new)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module is already executed


def install() -> None:
    if not any(isinstance(finder, _OldNames) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldNames())


def forward_old_names(package: str, modules: tuple[str, ...]):
    """A module ``__getattr__`` for a package that was a module: an old name is looked up in
    ``modules`` (the package's submodules, in order) with a ``DeprecationWarning``."""

    def __getattr__(name: str):
        if not name.startswith("__") and name not in modules:
            for module in modules:
                found = importlib.import_module(f"{package}.{module}")
                if name in vars(found):
                    value = vars(found)[name]
                    defined = isinstance(value, type | types.FunctionType)
                    home = value.__module__ if defined else found.__name__
                    _warn(f"{package}.{name}", f"{home}.{name}")
                    setattr(sys.modules[package], name, value)  # one warning per name
                    return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
