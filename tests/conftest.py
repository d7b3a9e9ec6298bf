"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> dict[str, str]:
    """Tiny demo checkpoints (name -> dir), built once per session; a classifier per task."""
    from imhibench.demo_models import build_demo_models
    from imhibench.tasks import all_tasks

    labels = {name: list(task.classifier_labels) for name, task in all_tasks().items()}
    return build_demo_models(tmp_path_factory.mktemp("demo_models"), labels, seed=0)
